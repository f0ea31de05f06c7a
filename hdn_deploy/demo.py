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
SAMPLE_NOISY = "sample_data/nuclei_noisy.tif"
SAMPLE_CLEAN = "sample_data/nuclei_clean.tif"


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


Panel = tuple[str, np.ndarray, tuple[float, float]]  # label, image, display range


def write_montage(path: Path, panels: list[tuple[str, np.ndarray]], *, display_range) -> Path:
    """PNG montage of labelled panels side by side (intensity panels share one range;
    a panel named 'std' gets its own)."""
    row = [(label, image, (0.0, float(np.percentile(image, 99.5))) if label.startswith("std")
            else display_range) for label, image in panels]
    return write_grid(path, [row])


def _panel(label: str, image: np.ndarray, low: float, high: float, max_side: int | None, font):
    from PIL import Image, ImageDraw

    tile = Image.fromarray(_display(image, low, high)).convert("RGB")
    if max_side and max(tile.size) > max_side:
        scale = max_side / max(tile.size)
        tile = tile.resize((max(1, round(tile.width * scale)), max(1, round(tile.height * scale))),
                           Image.Resampling.BOX)
    canvas = Image.new("RGB", (max(tile.width, int(font.getlength(label)) + 8), tile.height + 20),
                       "white")
    canvas.paste(tile, (0, 20))
    ImageDraw.Draw(canvas).text((4, 3), label, fill="black", font=font)
    return canvas


def write_grid(path: Path, rows: list[list[Panel]], *, title: str | None = None,
               max_side: int | None = None) -> Path:
    """PNG of labelled grey panels, row by row, each shown over its own display range
    (low -> black, high -> white); panels larger than ``max_side`` pixels are shrunk
    (box filter); an optional title line on top. Written atomically; returns ``path``."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=13)
    grid = [[_panel(label, image, lo, hi, max_side, font) for label, image, (lo, hi) in row]
            for row in rows]
    gap, top = 6, (24 if title else 0)
    widths = [sum(t.width for t in row) + gap * (len(row) - 1) for row in grid]
    heights = [max(t.height for t in row) for row in grid]
    width = max(widths + ([int(font.getlength(title)) + 8] if title else []))
    montage = Image.new("RGB", (width, top + sum(heights) + gap * (len(grid) - 1)), "white")
    if title:
        ImageDraw.Draw(montage).text((4, 4), title, fill="black", font=font)
    y = top
    for row, height in zip(grid, heights):
        x = 0
        for tile in row:
            montage.paste(tile, (x, y))
            x += tile.width + gap
        y += height + gap
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
        "mmse": write_tiff_atomic(out_dir / "nuclei_mmse.tif", result.mmse, metadata=meta, axes="YX"),
        "std": write_tiff_atomic(out_dir / "nuclei_std.tif", result.std, metadata=meta, axes="YX"),
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
