"""int8 decoder graphs (onnxruntime.quantization), calibrated on training patches and
checked on patches held out from calibration.

Static quantisation, QDQ format, 7-bit (``reduce_range``) per-channel int8 weights and
uint8 activations of every Conv and ConvTranspose of the decoder (the top-down graph, run once per sample: where
the sampler's time goes; the encoder runs once per tile and stays float). Activation
ranges (MinMax) come from decoder inputs as at prediction: encoder features of crops of
the *training* images and seeded latents.

The check: on patches held out from calibration (the bottom rows of every frame, or the
last frames, as :func:`hdn_deploy.training.data.split_frames` splits them), the int8 and
float packages denoise with the same latents; with d the mean squared difference of
their MMSE and v the float model's mean posterior variance (its expected squared error
to the truth, for a calibrated posterior), the estimated PSNR loss is 10 log10(1 + d / v)
(assumes the int8 deviation is uncorrelated with the float error). Above ``max_loss_db``
the export is refused. The benchmark (benchmarks/direct_int8.py) measures the real loss
against clean images.

Why 7-bit weights: without VNNI, x86's u8 x s8 multiply-add (``vpmaddubsw``) saturates its
int16 sums, as onnxruntime's quantisation guide warns. On the bundled model (AVX2, no VNNI)
full 8-bit weights lost 0.90 dB of real PSNR and 7-bit weights 0.005 dB; neither ran
faster than fp32 (1.0x: the float ELUs between the convolutions keep every conv wrapped in
quantise/dequantise steps). benchmarks/results/direct_int8/int8_variants.md has the 22
variants measured.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from hdn_deploy._optional import require
from hdn_deploy.atomic import staged_folder
from hdn_deploy.errors import ConfigError, PackageError
from hdn_deploy.latents import LatentSampler
from hdn_deploy.manifest import DIRECT_FORMAT_VERSION, Int8Check, Int8Info, manifest_to_json
from hdn_deploy.package import MANIFEST_FILE, ModelPackage, load_package, sha256_file
from hdn_deploy.schema import freeze

from ..training.data import load_frames, split_frames

DEFAULT_MAX_LOSS_DB = 0.1
CHECK_FRACTION = 0.25


class Int8CheckError(PackageError):
    """The int8 graph loses more than the allowed PSNR on held-out patches."""


def calibration_feeds(package: ModelPackage, images: Sequence[np.ndarray], n_feeds: int,
                      tile: int, seed: int) -> Iterator[dict]:
    """Decoder inputs as at prediction: encoder features of random ``tile``-sided crops of
    ``images`` (raw intensities, 2D) and latents drawn as the runtime draws them."""
    ort = require("onnxruntime", purpose="int8 calibration")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    encoder = ort.InferenceSession(str(package.encoder_path), options,
                                   providers=["CPUExecutionProvider"])
    bu_names = [o.name for o in encoder.get_outputs()]
    levels = [(lv.index, lv.channels) for lv in package.sampled_levels]
    m = package.spatial_multiple
    rng = np.random.default_rng(seed)
    sampler = LatentSampler(seed)
    for i in range(n_feeds):
        image = images[int(rng.integers(len(images)))]
        side = min(tile, image.shape[0] // m * m, image.shape[1] // m * m)
        if side < m:
            raise ConfigError(f"a calibration image {image.shape} is smaller than {m} pixels")
        y0 = int(rng.integers(0, image.shape[0] - side + 1))
        x0 = int(rng.integers(0, image.shape[1] - side + 1))
        crop = image[y0:y0 + side, x0:x0 + side]
        patch = ((crop - package.mean) / package.std).astype(np.float32)[None, None]
        features = encoder.run(None, {"image": np.ascontiguousarray(patch)})
        eps = sampler.tile_eps([i], levels, 0, 0, side, side)
        feed = dict(zip(bu_names, features))
        feed.update({f"eps_{lv}": e for (lv, _), e in zip(levels, eps)})
        yield feed


def quantize_decoder_static(src: Path, dst: Path, feeds: list[dict]) -> None:
    """QDQ static quantisation of the Conv/ConvTranspose of graph ``src`` into ``dst``."""
    quant = require("onnxruntime.quantization", purpose="int8 quantisation")

    class Reader(quant.CalibrationDataReader):
        def __init__(self) -> None:
            self._iter = iter(feeds)

        def get_next(self):
            return next(self._iter, None)

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # onnxruntime logs a pre-processing hint on the root logger
    try:
        quant.quantize_static(str(src), str(dst), Reader(), quant_format=quant.QuantFormat.QDQ,
                              activation_type=quant.QuantType.QUInt8,
                              weight_type=quant.QuantType.QInt8, per_channel=True,
                              reduce_range=True,
                              op_types_to_quantize=["Conv", "ConvTranspose"])
    finally:
        root.setLevel(level)


def _check_patches(frames: Sequence[np.ndarray], size: int, count: int, multiple: int,
                   seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        frame = frames[i % len(frames)]
        side = min(size, frame.shape[0] // multiple * multiple, frame.shape[1] // multiple * multiple)
        if side < multiple:
            continue
        y0 = int(rng.integers(0, frame.shape[0] - side + 1))
        x0 = int(rng.integers(0, frame.shape[1] - side + 1))
        out.append(np.ascontiguousarray(frame[y0:y0 + side, x0:x0 + side]))
    if not out:
        raise ConfigError(f"the held-out part of the calibration data has no patch of at least "
                          f"{multiple} x {multiple} pixels; give larger images")
    return out


def check_int8(float_dir: Path, int8_dir: Path, patches: Sequence[np.ndarray], *,
               n_samples: int, max_loss_db: float, seed: int = 0) -> Int8Check:
    """Compare the two packages on ``patches`` (raw 2D images) with the same latents; see
    the module docstring. Returns the check record (whether or not it passes)."""
    from hdn_deploy.denoiser import Denoiser

    dens = [Denoiser(float_dir, backend="cpu", threads=1), Denoiser(int8_dir, backend="cpu", threads=1)]
    diff = var = 0.0
    for patch in patches:
        side = patch.shape[0]
        opts = dict(n_samples=n_samples, seed=seed, tile=max(patch.shape), overlap=0, margin=0,
                    allow_out_of_range=True)  # one tile per patch: no seams, same latents
        ref, quant = (d.denoise(patch, **opts) for d in dens)
        diff += float(np.mean((quant.mmse.astype(np.float64) - ref.mmse) ** 2))
        var += float(np.mean(ref.std.astype(np.float64) ** 2))
    diff, var = diff / len(patches), var / len(patches)
    loss = 10 * math.log10(1 + diff / max(var, 1e-30))
    return Int8Check(patches=len(patches), patch_size=int(side), n_samples=n_samples,
                     mean_sq_diff=diff, posterior_variance=var,
                     estimated_psnr_loss_db=loss, max_loss_db=max_loss_db)


def int8_package(model: str | Path, output: str | Path, calibration_data: Sequence[str | Path], *,
                 max_loss_db: float = DEFAULT_MAX_LOSS_DB, n_calibration: int = 32,
                 calibration_tile: int = 128, check_patches: int = 8, check_size: int = 128,
                 check_samples: int = 8, seed: int = 0, overwrite: bool = False) -> Path:
    """Copy the package at ``model`` to ``output`` with a calibrated, checked int8 decoder.

    Parameters
    ----------
    calibration_data
        TIFF files, folders or globs of the model's *training* images (never the images
        you evaluate on). Each frame is split as training splits it: calibration crops
        come from the first part, the check patches from the held-out rest.
    max_loss_db
        Refuse above this estimated PSNR loss (dB) on the held-out patches.
    n_calibration, calibration_tile
        Calibration feeds (crops x latent draws) and their side in pixels.
    check_patches, check_size, check_samples
        Held-out patches, their side and the samples of each MMSE in the check.

    Raises
    ------
    Int8CheckError
        (a PackageError) the check fails; nothing is written.
    ConfigError, InputError
        Bad settings or calibration data.
    """
    if not max_loss_db > 0:
        raise ConfigError(f"max_loss_db must be > 0, got {max_loss_db}")
    package = load_package(model)
    output = Path(output)
    if output.exists() and not overwrite:
        raise PackageError(f"{output} exists already; remove it or pass --overwrite")
    m = package.spatial_multiple
    frames, files = load_frames(list(calibration_data), m)
    train, held_out = split_frames(frames, CHECK_FRACTION, m)
    feeds = list(calibration_feeds(package, train, n_calibration, calibration_tile, seed))
    patches = _check_patches(held_out, check_size, check_patches, m, seed + 1)
    with staged_folder(output) as staging:
        from .direct import copy_package

        copy_package(package, staging)
        decoder = staging / package.manifest.graphs.decoder.file
        float_copy = staging / "decoder.float.onnx"
        decoder.rename(float_copy)
        quantize_decoder_static(float_copy, decoder, feeds)
        float_copy.unlink()
        manifest = package.manifest
        int8_manifest = dataclasses.replace(
            manifest, graphs=dataclasses.replace(manifest.graphs, decoder=dataclasses.replace(
                manifest.graphs.decoder, sha256=sha256_file(decoder))))
        (staging / MANIFEST_FILE).write_text(json.dumps(manifest_to_json(int8_manifest)))
        check = check_int8(package.path, staging, patches, n_samples=check_samples,
                           max_loss_db=max_loss_db, seed=seed)
        if not check.estimated_psnr_loss_db <= max_loss_db:
            raise Int8CheckError(
                f"int8 export refused: on {check.patches} patches held out from calibration "
                f"the int8 decoder loses an estimated {check.estimated_psnr_loss_db:.3f} dB PSNR "
                f"(mean squared MMSE change {check.mean_sq_diff:.4g} vs posterior variance "
                f"{check.posterior_variance:.4g}), above the bound {max_loss_db:g} dB; nothing "
                f"was written. Keep the float package, or calibrate on more training data")
        info = Int8Info(method="static", graphs=("decoder",), check=check, calibration=freeze({
            "data": files, "feeds": n_calibration, "tile": calibration_tile, "seed": seed,
            "held_out_fraction": CHECK_FRACTION}))
        final = dataclasses.replace(int8_manifest, format_version=DIRECT_FORMAT_VERSION,
                                    export=dataclasses.replace(manifest.export, int8=info))
        (staging / MANIFEST_FILE).write_text(json.dumps(manifest_to_json(final), indent=2))
    return output
