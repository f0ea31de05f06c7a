"""``make demo`` / ``hdn-deploy demo``: denoise the bundled sample with the bundled model.

Runtime only (numpy, onnxruntime, tifffile, Pillow): no torch, no GPU, no download.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from .atomic import atomic_path
from .io import read_image, write_tiff_atomic
from .metrics import psnr

DEFAULT_MODEL = "models/default"
SAMPLE_NOISY = "sample_data/ihc_noisy.tif"
SAMPLE_CLEAN = "sample_data/ihc_clean.tif"


def bundled_path(relative: str) -> Path:
    """Path of a file or folder shipped inside the installed package."""
    return Path(str(resources.files("hdn_deploy").joinpath(relative)))


@dataclass(frozen=True)
class DemoReport:
    n_samples: int
    seconds: float
    psnr_noisy: float
    psnr_mmse: float
    psnr_sample: float
    outputs: dict[str, Path]


def _display(image: np.ndarray, low: float, high: float) -> np.ndarray:
    scaled = (np.asarray(image, np.float64) - low) / max(high - low, 1e-12)
    return (np.clip(scaled, 0, 1) * 255).round().astype(np.uint8)


def write_montage(path: Path, panels: list[tuple[str, np.ndarray]], *, display_range) -> Path:
    """PNG montage of labelled panels side by side (intensity panels share one range;
    a panel named 'std' gets its own)."""
    from PIL import Image, ImageDraw

    tiles = []
    for label, image in panels:
        low, high = ((0.0, float(np.percentile(image, 99.5))) if label.startswith("std")
                     else display_range)
        tile = Image.fromarray(_display(image, low, high)).convert("RGB")
        canvas = Image.new("RGB", (tile.width, tile.height + 18), "white")
        canvas.paste(tile, (0, 18))
        ImageDraw.Draw(canvas).text((4, 3), label, fill="black")
        tiles.append(canvas)
    gap = 6
    montage = Image.new("RGB", (sum(t.width for t in tiles) + gap * (len(tiles) - 1),
                                max(t.height for t in tiles)), "white")
    x = 0
    for tile in tiles:
        montage.paste(tile, (x, 0))
        x += tile.width + gap
    with atomic_path(path) as tmp:
        montage.save(tmp, format="PNG")
    return path


def run_demo(out_dir: str | Path, *, n_samples: int = 100, seed: int = 0, threads: int | None = None,
             model: str | Path | None = None, sampling: str = "antithetic") -> DemoReport:
    """Denoise the bundled sample; write MMSE/std TIFFs and a montage PNG into ``out_dir``."""
    from .denoiser import Denoiser

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    noisy = read_image(bundled_path(SAMPLE_NOISY)).array
    clean = read_image(bundled_path(SAMPLE_CLEAN)).array
    start = time.perf_counter()
    denoiser = Denoiser(model or bundled_path(DEFAULT_MODEL), backend="cpu", threads=threads)
    result = denoiser.denoise(noisy, n_samples=n_samples, seed=seed, keep_samples=2,
                              sampling=sampling)
    seconds = time.perf_counter() - start
    meta = {**result.metadata, "input": SAMPLE_NOISY}
    outputs = {
        "mmse": write_tiff_atomic(out_dir / "ihc_mmse.tif", result.mmse, metadata=meta, axes="YX"),
        "std": write_tiff_atomic(out_dir / "ihc_std.tif", result.std, metadata=meta, axes="YX"),
    }
    outputs["montage"] = write_montage(
        out_dir / "montage.png",
        [("noisy", noisy), (f"MMSE ({result.metadata['n_samples']} samples)", result.mmse),
         ("std", result.std), ("sample 1", result.samples[0]), ("sample 2", result.samples[1])],
        display_range=(float(np.percentile(clean, 0.5)), float(np.percentile(clean, 99.5))),
    )
    return DemoReport(
        n_samples=result.metadata["n_samples"], seconds=seconds, psnr_noisy=psnr(noisy, clean),
        psnr_mmse=psnr(result.mmse, clean), psnr_sample=psnr(result.samples[0], clean),
        outputs=outputs,
    )
