"""Recipe of the bundled default model, from data to package: ``make default-model``.

Data: a real 512x512 fluorescence image of stained nuclei (2018 Kaggle Data Science Bowl)
that StarDist's wheel carries as test data (``training/sample_images.py``: fetched with pip,
no other download), intensities 0-235 as they are. Noise: Poisson-Gaussian, observed =
GAIN * Poisson(clean / GAIN) + N(0, READ_NOISE^2), the model of a camera with GAIN grey
levels per photon. Three 256x256 quadrants are the training data; the held-out sample is
the bottom-right quadrant, which training never sees.

Steps (each a real ``hdn-deploy`` command, as a user would run them):
1. simulate a 60-frame calibration stack of a static ramp-and-disc sample;
2. ``hdn-deploy noise-model calibrate`` -> GMM noise model;
3. ``hdn-deploy train`` on the noisy training images;
4. ``hdn-deploy export`` -> ``hdn_deploy/models/default``; sample -> ``hdn_deploy/sample_data``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import tifffile

from hdn_deploy.atomic import atomic_write_text

GAIN = 4.0
READ_NOISE = 5.0
SEED = 2026
NOISE_DESCRIPTION = (
    f"Poisson-Gaussian noise on 8-bit-range grey images: observed = {GAIN:g} * "
    f"Poisson(clean / {GAIN:g}) + N(0, {READ_NOISE:g}^2); GMM noise model from a simulated "
    "calibration stack; trained on three quadrants of a fluorescence image of stained nuclei"
)
# The `cpu` preset: 6 x 32 latents, 16 filters, 3 blocks, no dropout, 64x64 patches,
# batch 16, Adamax 1e-3 with 100 warm-up steps and cosine decay over --max-steps, nothing
# held out for validation (every pixel of the training quadrants trained on).
RECIPE = ["--preset", "cpu"]
REPO = Path(__file__).resolve().parents[1]
MODEL_DIR = REPO / "hdn_deploy" / "models" / "default"
SAMPLE_DIR = REPO / "hdn_deploy" / "sample_data"


def add_noise(clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The stated Poisson-Gaussian noise, float32."""
    photons = rng.poisson(np.clip(clean, 0, None) / GAIN)
    return (GAIN * photons + rng.normal(0.0, READ_NOISE, clean.shape)).astype(np.float32)


def clean_images(cache: Path) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Training images (name -> clean) and the held-out clean sample, float32 (256, 256)."""
    from hdn_deploy.training.sample_images import stardist_nuclei

    nuclei = stardist_nuclei(cache)
    images = {"nuclei_q1": nuclei[:256, :256], "nuclei_q2": nuclei[:256, 256:],
              "nuclei_q3": nuclei[256:, :256]}
    return images, np.ascontiguousarray(nuclei[256:, 256:])


def calibration_stack(rng: np.random.Generator, frames: int = 60) -> np.ndarray:
    y, x = np.mgrid[0:128, 0:256]
    sample = 255.0 * x / 255.0
    sample = np.where((y - 64) ** 2 + (x - 128) ** 2 < 40**2, 255.0 - sample, sample)
    return np.stack([add_noise(sample.astype(np.float32), rng) for _ in range(frames)])


def run(cmd: list[str], threads: int) -> None:
    """Run one hdn-deploy command; torch's thread pool is sized before torch starts (a pool
    larger than the free cores slows small ops by orders of magnitude on a shared machine)."""
    print("+ hdn-deploy " + " ".join(cmd), flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    subprocess.run([sys.executable, "-m", "hdn_deploy", *cmd], check=True, env=env)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "default-model")
    parser.add_argument("--max-steps", type=int, default=3000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run")
    parser.add_argument("--prepare-only", action="store_true", help="only make data and noise model")
    parser.add_argument("--fresh", action="store_true", help="remake data even if present")
    args = parser.parse_args(argv)
    work: Path = args.work
    start = time.perf_counter()
    rng = np.random.default_rng(SEED)
    data_dir = work / "data"
    if args.fresh and work.exists():
        shutil.rmtree(work)
    if not args.resume and not (work / "nm.npz").is_file():
        data_dir.mkdir(parents=True, exist_ok=True)
        images, sample = clean_images(work / "source")
        for name, clean in images.items():
            tifffile.imwrite(data_dir / f"{name}.tif", add_noise(clean, rng))
        tifffile.imwrite(work / "calibration.tif", calibration_stack(rng))
        SAMPLE_DIR.mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(SAMPLE_DIR / "nuclei_clean.tif", sample)
        tifffile.imwrite(SAMPLE_DIR / "nuclei_noisy.tif", add_noise(sample, rng))
        run(["noise-model", "calibrate", str(work / "calibration.tif"), "-o", str(work / "nm.npz"),
             "--seed", str(SEED)], args.threads)
    if args.prepare_only:
        return 0
    common = ["--max-steps", str(args.max_steps)]
    if args.resume:
        run(["train", "--resume", str(work / "run"), *common], args.threads)
    else:
        run(["train", str(data_dir), "-o", str(work / "run"), "--noise-model", str(work / "nm.npz"),
             *RECIPE, "--snapshot-every", "500", "--seed", str(SEED), "--threads", str(args.threads),
             *common], args.threads)
    if MODEL_DIR.exists():
        shutil.rmtree(MODEL_DIR)
    run(["export", str(work / "run" / "best.safetensors"), "-o", str(MODEL_DIR),
         "--tile", "512", "--overlap", "64", "--description", NOISE_DESCRIPTION], args.threads)
    history = (work / "run" / "metrics.csv").read_text().splitlines()
    summary = {"wall_seconds": round(time.perf_counter() - start, 1), "max_steps": args.max_steps,
               "metrics_last_row": history[-1], "metrics_header": history[0]}
    atomic_write_text(work / "recipe_summary.json", json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
