"""int8 quantisation of a model package with onnxruntime.quantization, for the benchmark.

Two methods:

- ``dynamic``: weights int8, activations quantised on the fly per call
  (``quantize_dynamic``; Conv -> ConvInteger). onnxruntime has no dynamic kernel for
  ConvTranspose, so the six upsampling layers stay float.
- ``static``: QDQ format with activation ranges calibrated on a few tiles of a real image
  and latents drawn as at prediction (``quantize_static``; Conv and ConvTranspose).

The calibration and static quantisation are ``hdn_deploy.export.int8``'s (``hdn-deploy
export --int8`` adds training-data calibration and a held-out check); this probe
calibrates on one image. Only the decoder (top-down graph, run once per sample) is
quantised; the encoder runs once per tile. The result is a valid model package (manifest hashes
updated) that ``Denoiser`` loads like any other.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np

from hdn_deploy._optional import require
from hdn_deploy.errors import ConfigError
from hdn_deploy.atomic import staged_folder
from hdn_deploy.manifest import Int8Info, manifest_to_json
from hdn_deploy.package import MANIFEST_FILE, load_package, sha256_file
from hdn_deploy.export.int8 import calibration_feeds, quantize_decoder_static

__all__ = ["METHODS", "quantized_package"]

METHODS = ("dynamic", "static")


def _quantize_decoder(src: Path, dst: Path, method: str, package, image, n_feeds, seed) -> None:
    quant = require("onnxruntime.quantization", purpose="int8 quantisation")
    if method == "dynamic":
        quant.quantize_dynamic(str(src), str(dst), weight_type=quant.QuantType.QUInt8,
                               op_types_to_quantize=["Conv"])
        return
    if image is None:
        raise ConfigError("static quantisation needs a calibration image")
    image = np.asarray(image, np.float32)
    feeds = list(calibration_feeds(package, [image], n_feeds, package.recommended_tile, seed))
    quantize_decoder_static(src, dst, feeds)


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
