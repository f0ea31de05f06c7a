"""int8 quantisation of a model package with onnxruntime.quantization, for the benchmark.

Two methods:

- ``dynamic``: weights int8, activations quantised on the fly per call
  (``quantize_dynamic``; Conv -> ConvInteger). onnxruntime has no dynamic kernel for
  ConvTranspose, so the six upsampling layers stay float.
- ``static``: QDQ format with activation ranges calibrated on a few tiles of a real image
  and latents drawn as at prediction (``quantize_static``; Conv and ConvTranspose).

Only the decoder (top-down graph, run once per sample) is quantised by default; the
encoder runs once per tile. The result is a valid model package (manifest hashes
updated) that ``Denoiser`` loads like any other.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Iterator

import numpy as np

from hdn_deploy._optional import require
from hdn_deploy.errors import ConfigError
from hdn_deploy.atomic import staged_folder
from hdn_deploy.latents import LatentSampler
from hdn_deploy.manifest import Int8Info, manifest_to_json
from hdn_deploy.package import MANIFEST_FILE, load_package, sha256_file

__all__ = ["METHODS", "quantized_package"]

METHODS = ("dynamic", "static")


def _calibration_feeds(package, image: np.ndarray, n_feeds: int, seed: int) -> Iterator[dict]:
    """Decoder inputs as at prediction: encoder features of aligned crops + seeded eps."""
    ort = require("onnxruntime", purpose="int8 calibration")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    encoder = ort.InferenceSession(str(package.encoder_path), options,
                                   providers=["CPUExecutionProvider"])
    bu_names = [o.name for o in encoder.get_outputs()]
    levels = [(lv.index, lv.channels) for lv in package.sampled_levels]
    m = package.spatial_multiple
    tile = min(package.recommended_tile, image.shape[0] // m * m, image.shape[1] // m * m)
    if tile < m:
        raise ConfigError(f"the calibration image {image.shape} is smaller than {m} pixels")
    rng = np.random.default_rng(seed)
    sampler = LatentSampler(seed)
    normalised = ((image - package.mean) / package.std).astype(np.float32)
    for i in range(n_feeds):
        y0 = int(rng.integers(0, image.shape[0] - tile + 1))
        x0 = int(rng.integers(0, image.shape[1] - tile + 1))
        patch = np.ascontiguousarray(normalised[y0:y0 + tile, x0:x0 + tile])[None, None]
        features = encoder.run(None, {"image": patch})
        eps = sampler.tile_eps([i], levels, 0, 0, tile, tile)
        feed = dict(zip(bu_names, features))
        feed.update({f"eps_{lv}": e for (lv, _), e in zip(levels, eps)})
        yield feed


def _quantize_decoder(src: Path, dst: Path, method: str, package, image, n_feeds, seed) -> None:
    quant = require("onnxruntime.quantization", purpose="int8 quantisation")
    if method == "dynamic":
        quant.quantize_dynamic(str(src), str(dst), weight_type=quant.QuantType.QUInt8,
                               op_types_to_quantize=["Conv"])
        return
    if image is None:
        raise ConfigError("static quantisation needs a calibration image")
    feeds = list(_calibration_feeds(package, np.asarray(image, np.float32), n_feeds, seed))

    class Reader(quant.CalibrationDataReader):
        def __init__(self) -> None:
            self._iter = iter(feeds)

        def get_next(self):
            return next(self._iter, None)

    quant.quantize_static(str(src), str(dst), Reader(), quant_format=quant.QuantFormat.QDQ,
                          activation_type=quant.QuantType.QUInt8,
                          weight_type=quant.QuantType.QInt8, per_channel=True,
                          op_types_to_quantize=["Conv", "ConvTranspose"])


def quantized_package(model: str | Path, output: str | Path, *, method: str = "dynamic",
                      calibration_image: np.ndarray | None = None, n_calibration: int = 8,
                      seed: int = 0) -> Path:
    """Copy the package at ``model`` to ``output`` with an int8 decoder graph.

    Parameters
    ----------
    model, output
        Source package and the new package folder (replaced if it exists).
    method
        ``"dynamic"`` or ``"static"`` (see the module docstring).
    calibration_image
        2D raw image for static calibration.
    n_calibration
        Calibration feeds (tiles x latent draws) for static quantisation.

    Raises
    ------
    ConfigError
        Unknown method or missing calibration image.
    """
    if method not in METHODS:
        raise ConfigError(f"unknown quantisation method {method!r}; expected one of {METHODS}")
    package = load_package(model)
    output = Path(output)
    with staged_folder(output) as staging:
        for item in package.path.iterdir():
            if item.is_file():
                shutil.copy2(item, staging / item.name)
        decoder = staging / package.manifest.graphs.decoder.file
        float_copy = staging / "decoder.float.onnx"
        decoder.rename(float_copy)
        _quantize_decoder(float_copy, decoder, method, package, calibration_image,
                          n_calibration, seed)
        float_copy.unlink()
        m = package.manifest
        manifest = dataclasses.replace(
            m, graphs=dataclasses.replace(m.graphs, decoder=dataclasses.replace(
                m.graphs.decoder, sha256=sha256_file(decoder))),
            export=dataclasses.replace(m.export, int8=Int8Info(method=method, graphs=("decoder",))))
        (staging / MANIFEST_FILE).write_text(json.dumps(manifest_to_json(manifest), indent=2))
    return output
