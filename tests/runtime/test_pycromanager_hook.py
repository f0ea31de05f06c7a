"""The pycro-manager image processor hook as a plain function, with frames and metadata
dicts shaped like pycro-manager's (Micro-Manager itself is not installable here)."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import tifffile

from hdn_deploy.denoiser import Denoiser
from hdn_deploy.errors import InputError
from hdn_deploy.integrations.pycromanager import DenoiseHook
from hdn_deploy.io import cast_to_dtype


@pytest.fixture(scope="module")
def den(tiny_package):
    return Denoiser(tiny_package, backend="cpu", threads=1)


@pytest.fixture(scope="module")
def frame(data_dir):
    image = tifffile.imread(data_dir / "noisy.tif")[:48, :64]
    return np.clip(np.rint(image), 0, None).astype(np.uint16)  # a GRAY16 camera frame


def _metadata(channel="DAPI", time_index=3):
    return {"Axes": {"time": time_index, "channel": channel}, "Channel": channel,
            "PixelType": "GRAY16", "Width": 64, "Height": 48, "Exposure-ms": 10.0,
            "Camera": "Camera", "ElapsedTime-ms": 123.0}


def test_hook_replaces_the_frame_with_its_denoised_version(den, frame):
    hook = DenoiseHook(den, n_samples=2, seed=4)
    meta = _metadata()
    before = copy.deepcopy(meta)
    image, out_meta = hook(frame, meta)
    expected = den.denoise(frame, n_samples=2, seed=4).mmse
    assert image.dtype == np.uint16 and image.shape == frame.shape
    assert np.array_equal(image, cast_to_dtype(expected, np.uint16))
    assert meta == before  # the caller's dict is not touched
    assert out_meta["Axes"] == before["Axes"] and out_meta["Channel"] == "DAPI"
    ours = json.loads(out_meta["hdn_deploy"])
    assert ours["model_sha256"] == den.package.model_hash and ours["n_samples"] == 2
    assert ours["seed"] == 4


def test_hook_can_return_raw_and_denoised_as_two_channels(den, frame):
    hook = DenoiseHook(den, keep_raw=True, output_dtype="float32", n_samples=4, tolerance=1e6)
    pairs = hook(frame, _metadata("GFP", 0))
    assert isinstance(pairs, list) and len(pairs) == 2
    (raw, raw_meta), (mmse, meta) = pairs
    assert raw is frame or np.array_equal(raw, frame)
    assert raw_meta["Axes"]["channel"] == "GFP" and raw_meta["Channel"] == "GFP"
    assert meta["Axes"] == {"time": 0, "channel": "GFP_hdn"} and meta["Channel"] == "GFP_hdn"
    assert mmse.dtype == np.float32
    assert set(json.loads(meta["hdn_deploy"])["samples_per_tile"][0]) == {4}


def test_hook_loads_the_model_once_and_refuses_bad_frames(tiny_package, frame):
    hook = DenoiseHook(tiny_package, backend="cpu", threads=1, n_samples=1)
    first = hook.denoiser
    hook(frame, _metadata())
    hook(frame, _metadata(time_index=4))
    assert hook.denoiser is first
    with pytest.raises(InputError, match="expected a 2D frame"):
        hook(np.stack([frame, frame]), _metadata())
    with pytest.raises(InputError, match="output_dtype"):
        DenoiseHook(first, output_dtype="uint8")
