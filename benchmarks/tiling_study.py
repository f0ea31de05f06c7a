"""Which tile sizes does a model tolerate, and how much overlap makes tiling invisible?

Because eps is a pure function of (seed, sample, level, global position), a tiled run and a
whole-image run with the same seed draw the same latents: every difference between them
comes from the tiles' limited context and from blending. This script measures

1. tolerance: PSNR vs the clean image and the mean posterior std for tile sizes from the
   training patch size up to the whole image (a model that blows up on large inputs shows
   it here: the reference HDN failed on a whole 512x512 image after 64x64 training);
2. overlap: RMS and max |tiled MMSE - whole-image MMSE| for each overlap, relative to the
   noise level, to pick the default.

Usage::

    python benchmarks/tiling_study.py --model hdn_deploy/models/default \
        --noisy NOISY.tif [--clean CLEAN.tif] --samples 32 --out tiling.json
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from hdn_deploy.denoiser import Denoiser
from hdn_deploy.io import read_image
from hdn_deploy.metrics import psnr


def study(model: Path, noisy: np.ndarray, clean: np.ndarray | None, *, samples: int, seed: int,
          tiles: list[int], overlaps: list[int], threads: int | None) -> dict:
    den = Denoiser(model, backend="cpu", threads=threads)
    m = den.package.spatial_multiple
    whole = max(-(-s // m) * m for s in noisy.shape)
    t0 = time.perf_counter()
    ref = den.denoise(noisy, n_samples=samples, seed=seed, tile=whole, overlap=0)
    out = {"image_shape": list(noisy.shape), "samples": samples, "seed": seed, "whole_tile": whole,
           "whole": {"seconds": time.perf_counter() - t0, "mean_std": float(ref.std.mean()),
                     "psnr": psnr(ref.mmse, clean) if clean is not None else None},
           "tolerance": [], "overlap": []}
    noise_scale = float(np.std(noisy - ref.mmse))
    out["noise_scale"] = noise_scale
    for tile in tiles:
        if tile >= whole:
            continue
        overlap = min(max(tile // 4 // m * m, m), tile - m)
        t0 = time.perf_counter()
        res = den.denoise(noisy, n_samples=samples, seed=seed, tile=tile, overlap=overlap)
        out["tolerance"].append({
            "tile": tile, "overlap": overlap, "seconds": time.perf_counter() - t0,
            "mean_std": float(res.std.mean()),
            "psnr": psnr(res.mmse, clean) if clean is not None else None,
            "rms_diff_to_whole": float(np.sqrt(np.mean((res.mmse - ref.mmse) ** 2))),
        })
    for tile in tiles:
        if tile >= whole:
            continue
        for overlap in overlaps:
            if overlap >= tile:
                continue
            res = den.denoise(noisy, n_samples=samples, seed=seed, tile=tile, overlap=overlap)
            diff = res.mmse - ref.mmse
            out["overlap"].append({
                "tile": tile, "overlap": overlap,
                "rms_diff": float(np.sqrt(np.mean(diff**2))),
                "max_abs_diff": float(np.abs(diff).max()),
                "rms_diff_over_noise": float(np.sqrt(np.mean(diff**2)) / noise_scale),
                "psnr": psnr(res.mmse, clean) if clean is not None else None,
            })
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--noisy", type=Path, required=True)
    parser.add_argument("--clean", type=Path)
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tiles", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--overlaps", type=int, nargs="+", default=[0, 64, 128])
    parser.add_argument("--threads", type=int)
    parser.add_argument("--out", type=Path, default=Path("tiling.json"))
    args = parser.parse_args()
    noisy = read_image(args.noisy).array
    clean = read_image(args.clean).array if args.clean else None
    result = study(args.model, noisy, clean, samples=args.samples, seed=args.seed,
                   tiles=args.tiles, overlaps=args.overlaps, threads=args.threads)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
