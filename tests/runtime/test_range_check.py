"""Inputs outside the model's intensity range: reported, warned about, refused (issue 10.10)."""
from __future__ import annotations

import dataclasses
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner

import hdn_deploy
from hdn_deploy import Denoiser
from hdn_deploy.cli.main import main
from hdn_deploy.errors import InputError
from hdn_deploy.io import read_hdn_metadata
from hdn_deploy.manifest import DataRange, IntensityRange, SignalRange
from hdn_deploy.package import MANIFEST_FILE, load_package
from hdn_deploy.range_check import (
    OutOfRangeError,
    OutOfRangeWarning,
    check_intensity_range,
    model_range,
)

DEFAULT = Path(hdn_deploy.__file__).parent / "models" / "default"
SAMPLE = Path(hdn_deploy.__file__).parent / "sample_data" / "nuclei_noisy.tif"
FAST = dict(n_samples=1, sampling="mc")


@pytest.fixture(scope="module")
def bundled():
    return Denoiser(DEFAULT, backend="cpu", threads=1)


def _uint16_1200_5900(shape=(64, 64)) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(1200, 5901, size=shape).astype(np.uint16)


def test_bundled_range_is_the_hull_of_training_data_and_noise_model(bundled):
    stored = bundled.package.manifest.intensity_range
    data, noise = stored.training_data, stored.noise_model
    # bundled model: training data 0.1-99.9 % about -8.6..234.6, noise model about -2.0..270.7
    assert -20 < data.p0_1 < 0 and 225 < data.p99_9 < 245
    assert -5 < noise.min < 0 and 260 < noise.max < 280
    rng = model_range(bundled.package.manifest)
    widen = lambda lo, hi: (lo - 0.25 * (hi - lo), hi + 0.25 * (hi - lo))  # noqa: E731
    (a, b), (c, d) = widen(data.p0_1, data.p99_9), widen(noise.min, noise.max)
    assert rng.low == pytest.approx(min(a, c)) and rng.high == pytest.approx(max(b, d))
    assert "training data" in rng.source and "noise-model signal range" in rng.source


def test_hull_of_training_data_and_noise_model(bundled):
    manifest = dataclasses.replace(bundled.package.manifest, intensity_range=IntensityRange(
        training_data=DataRange(min=-50.0, max=900.0, p0_1=0.0, p99_9=400.0),
        noise_model=SignalRange(min=100.0, max=500.0)))
    rng = model_range(manifest)
    assert (rng.low, rng.high) == (-100.0, 600.0)  # [0-100, 400+100] and [100-100, 500+100]


@pytest.mark.parametrize("image", [
    _uint16_1200_5900(),
    np.full((64, 64), 65535, np.uint16),
], ids=["uint16-1200-5900", "constant-65535"])
def test_issue_examples_are_refused(bundled, image):
    with pytest.raises(OutOfRangeError) as err:
        bundled.denoise(image, **FAST)
    assert isinstance(err.value, InputError)
    message = str(err.value)
    assert "100.0 % of the input's pixels" in message
    rng = model_range(bundled.package.manifest)
    assert f"{rng.low:.4g} to {rng.high:.4g}" in message and "allow_out_of_range=True" in message


@pytest.mark.parametrize("image", [_uint16_1200_5900(), np.full((64, 64), 65535, np.uint16)])
def test_override_runs_and_records_the_share(bundled, image):
    with pytest.warns(OutOfRangeWarning, match="100.0 % of the input's pixels"):
        res = bundled.denoise(image, allow_out_of_range=True, **FAST)
    assert res.mmse.shape == image.shape and np.isfinite(res.mmse).all()
    report = res.metadata["input_range"]
    assert report["checked"] and report["allow_out_of_range"]
    assert report["share_outside"] == report["share_above"] == 1.0 and report["share_below"] == 0
    assert report["input_min"] == float(image.min()) and report["input_max"] == float(image.max())
    json.dumps(report)


def test_in_range_sample_is_quiet(bundled):
    image = tifffile.imread(SAMPLE)[:64, :64]
    with warnings.catch_warnings():
        warnings.simplefilter("error", OutOfRangeWarning)
        res = bundled.denoise(image, **FAST)
    report = res.metadata["input_range"]
    assert report["checked"] and report["share_outside"] < 0.01


@pytest.mark.parametrize("outside, refused", [(0.005, False), (0.05, False), (0.2, True)])
def test_thresholds(bundled, outside, refused):
    image = np.full((100, 100), 100.0, np.float32)
    image.flat[: int(outside * image.size)] = 5000.0
    manifest = bundled.package.manifest
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if refused:
            with pytest.raises(OutOfRangeError, match="20.0 %"):
                check_intensity_range(image, manifest, package="m")
            return
        report = check_intensity_range(image, manifest, package="m")
    assert report["share_outside"] == pytest.approx(outside)
    warned = [w for w in caught if issubclass(w.category, OutOfRangeWarning)]
    assert len(warned) == (1 if outside > 0.01 else 0)


def test_package_without_a_range_warns_once_and_is_not_checked(tiny_package, tmp_path):
    folder = shutil.copytree(tiny_package, tmp_path / "norange")
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    manifest["intensity_range"] = {"training_data": None, "noise_model": None}
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest))
    den = Denoiser(load_package(folder), backend="cpu", threads=1)
    image = np.full((32, 32), 1e6, np.float32)
    with pytest.warns(OutOfRangeWarning, match="stores no intensity range.*not checked"):
        res = den.denoise(image, **FAST)
    assert res.metadata["input_range"] == {
        "checked": False, "reason": "the model package stores no intensity range"}
    with warnings.catch_warnings():
        warnings.simplefilter("error", OutOfRangeWarning)
        den.denoise(image, **FAST)  # once per package


def _cli(model, tif, out, *extra):
    return CliRunner().invoke(main, ["denoise", str(tif), "-m", str(model), "-o", str(out),
                                     "--samples", "1", "--sampling", "mc", "--backend", "cpu",
                                     "--threads", "1", "--quiet", *extra])


def test_cli_refuses_naming_the_file_and_writes_nothing(tmp_path):
    tif = tmp_path / "in" / "bright.tif"
    tif.parent.mkdir()
    tifffile.imwrite(tif, _uint16_1200_5900())
    out = tmp_path / "out"
    res = _cli(DEFAULT, tif, out)
    assert res.exit_code == 2, res.output
    assert f"Error: {tif}: 100.0 % of the input's pixels" in res.output
    assert "--allow-out-of-range" in res.output
    assert not out.exists() or not list(out.iterdir())


def test_cli_override_records_the_share_in_the_outputs(tmp_path):
    tif = tmp_path / "in" / "flat.tif"
    tif.parent.mkdir()
    tifffile.imwrite(tif, np.full((64, 64), 65535, np.uint16))
    out = tmp_path / "out"
    res = _cli(DEFAULT, tif, out, "--allow-out-of-range")
    assert res.exit_code == 0, res.output
    assert f"Warning: {tif}: 100.0 % of the input's pixels" in res.output
    for kind in ("mmse", "std"):
        meta = read_hdn_metadata(out / f"flat_{kind}.tif")
        assert meta["input_range"]["share_outside"] == 1.0
        assert meta["input_range"]["allow_out_of_range"] is True
