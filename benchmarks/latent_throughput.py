"""Throughput of the numpy latent generator (the CPU path of the latent contract).

Reports, as medians over ``--repeats``: normal values per second and milliseconds per
sample for one tile of ``--tile`` px with the levels of a model package (default: the
bundled model: 6 levels x 32 channels), one sample per call and one thread (as the
Denoiser draws them with its default batch size 1), and the share of latents in a CPU
denoise of one tile (``--denoise N``: ``Denoiser`` phase timings).
Writes JSON to ``--out`` (default: stdout only).

    .venv/bin/python benchmarks/latent_throughput.py --tile 256 --repeats 7
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from hdn_deploy.atomic import atomic_write_text
from hdn_deploy.benchmark import machine_info, summarize
from hdn_deploy.latents import LatentSampler
from hdn_deploy.package import load_package


def _time_tile(sampler: LatentSampler, levels, tile: int, repeats: int) -> list[float]:
    times = []
    for r in range(repeats + 1):
        start = time.perf_counter()
        sampler.tile_eps([r], levels, 0, 0, tile, tile)
        if r:  # the first call is a warm-up
            times.append(time.perf_counter() - start)
    return times


def _denoise_share(model: Path, tile: int, samples: int) -> dict:
    from hdn_deploy.denoiser import Denoiser

    den = Denoiser(model, backend="cpu")
    image = np.random.default_rng(0).normal(80, 30, (tile, tile)).astype(np.float32)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    den.denoise(image, n_samples=samples, seed=0, tile=tile, timings=timings)
    wall = time.perf_counter() - start
    return {"wall_s": wall, "phases_s": timings, "latent_share": timings.get("latents", 0) / wall}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=Path("hdn_deploy/models/default"))
    p.add_argument("--tile", type=int, default=256)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--denoise", type=int, default=0, metavar="N",
                   help="also denoise one tile with N samples and report the latent share")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    package = load_package(args.model)
    levels = [(lv.index, lv.channels) for lv in package.sampled_levels]
    values = sum(c * (args.tile >> (i + 1)) ** 2 for i, c in levels)
    result = {"machine": machine_info(), "tile": args.tile, "levels": levels,
              "values_per_sample": values}
    times = _time_tile(LatentSampler(1), levels, args.tile, args.repeats)
    result["ms_per_sample_tile"] = summarize(t * 1e3 for t in times)
    result["values_per_s_median"] = values / float(np.median(times))
    if args.denoise:
        result["denoise"] = _denoise_share(args.model, args.tile, args.denoise)
    text = json.dumps(result, indent=2)
    if args.out:
        atomic_write_text(args.out, text)
    print(text if not args.out else f"wrote {args.out}", file=sys.stdout)
    return result


if __name__ == "__main__":
    main()
