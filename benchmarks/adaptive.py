"""Adaptive sampling: samples and time saved at equal PSNR (within 0.05 dB).

For each benchmark image of ``benchmarks/quality.py`` (held-out 256x256 crops, the
bundled model's Poisson-Gaussian noise, fixed noise seed), the bundled model denoises
with a fixed number of samples (the reference) and with each tolerance (same cap, same
seed). Reported per run: PSNR against the clean image, mean/min/max samples used per tile,
the median wall time over ``--repeats`` runs (1 onnxruntime thread). A tolerance "keeps
PSNR" when every image is within 0.05 dB of its fixed-sample reference.

    python benchmarks/adaptive.py --cap 64 --tolerances 0.05sigma 0.1sigma 0.2sigma 2 4 \
        --repeats 3 --out benchmarks/results/adaptive

Writes ``adaptive.json`` and ``adaptive.md`` in ``--out``.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.quality import add_noise, clean_images  # noqa: E402
from hdn_deploy import Denoiser  # noqa: E402
from hdn_deploy.atomic import atomic_write_text  # noqa: E402
from hdn_deploy.metrics import psnr  # noqa: E402

EQUAL_DB = 0.05


def _run(den: Denoiser, noisy: np.ndarray, clean: np.ndarray, repeats: int,
         **options) -> dict[str, Any]:
    seconds, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = den.denoise(noisy, seed=0, **options)
        seconds.append(time.perf_counter() - start)
    used = [c for per_slice in result.metadata["samples_per_tile"] for c in per_slice]
    data_range = float(clean.max() - clean.min())
    return {"psnr": round(psnr(result.mmse, clean, data_range=data_range), 3),
            "samples_mean": round(float(np.mean(used)), 2), "samples_min": min(used),
            "samples_max": max(used), "seconds_median": round(statistics.median(seconds), 3),
            "seconds_all": [round(s, 3) for s in seconds]}


def measure(args: argparse.Namespace) -> dict[str, Any]:
    den = Denoiser(args.package, backend="cpu", threads=1)
    clean = clean_images()
    rows: dict[str, Any] = {}
    for name in args.images or list(clean):
        noisy = add_noise(clean[name], "pg", args.noise_seed)
        runs = {"fixed": _run(den, noisy, clean[name], args.repeats, n_samples=args.cap,
                              sampling=args.sampling)}
        for tol in args.tolerances:
            runs[tol] = _run(den, noisy, clean[name], args.repeats, n_samples=args.cap,
                             sampling=args.sampling, tolerance=tol)
        rows[name] = runs
        print(name, json.dumps({k: (v["psnr"], v["samples_mean"], v["seconds_median"])
                                for k, v in runs.items()}), flush=True)
    return rows


def summary(rows: dict[str, Any], tolerances: list[str]) -> dict[str, Any]:
    out = {}
    for tol in tolerances:
        drops = [r["fixed"]["psnr"] - r[tol]["psnr"] for r in rows.values()]
        samples = [r[tol]["samples_mean"] / r["fixed"]["samples_mean"] for r in rows.values()]
        times = [r[tol]["seconds_median"] / r["fixed"]["seconds_median"] for r in rows.values()]
        out[tol] = {"max_psnr_drop_db": round(max(drops), 3),
                    "keeps_psnr": bool(max(drops) <= EQUAL_DB),
                    "samples_fraction_mean": round(float(np.mean(samples)), 3),
                    "time_fraction_mean": round(float(np.mean(times)), 3)}
    return out


def markdown(report: dict[str, Any]) -> str:
    cfg = report["config"]
    lines = [f"# Adaptive sampling (cap {cfg['cap']} {cfg['sampling']} samples, bundled model, "
             f"Poisson-Gaussian noise, 256x256, 1 thread, median of {cfg['repeats']})", "",
             f"Command: `{cfg['command']}`", "",
             "| image | run | PSNR (dB) | samples/tile mean (min-max) | seconds (median) |",
             "|---|---|---|---|---|"]
    for name, runs in report["images"].items():
        for label, r in runs.items():
            lines.append(f"| {name} | {label} | {r['psnr']:.3f} | {r['samples_mean']:.1f} "
                         f"({r['samples_min']}-{r['samples_max']}) | {r['seconds_median']:.2f} |")
    lines += ["", "| tolerance | max PSNR drop vs fixed (dB) | within 0.05 dB | samples (x fixed) "
              "| time (x fixed) |", "|---|---|---|---|---|"]
    for tol, s in report["summary"].items():
        lines.append(f"| {tol} | {s['max_psnr_drop_db']:.3f} | {'yes' if s['keeps_psnr'] else 'no'} "
                     f"| {s['samples_fraction_mean']:.3f} | {s['time_fraction_mean']:.3f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package", default="hdn_deploy/models/default")
    parser.add_argument("--cap", type=int, default=64)
    parser.add_argument("--sampling", default="antithetic")
    parser.add_argument("--tolerances", nargs="+", default=["0.05sigma", "0.1sigma", "2"])
    parser.add_argument("--images", nargs="*")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--noise-seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/adaptive"))
    args = parser.parse_args()
    rows = measure(args)
    report = {"config": {**{k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                         "command": "python " + " ".join(sys.argv), "machine": platform.processor()
                         or platform.machine()},
              "images": rows, "summary": summary(rows, args.tolerances)}
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "adaptive.json", json.dumps(report, indent=1))
    atomic_write_text(args.out / "adaptive.md", markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
