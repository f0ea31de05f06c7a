"""Training throughput on this CPU: patches/s of one optimiser step for training variants.

Each variant runs in its own process (fresh torch state, its own thread count), times
``--steps`` steps after ``--warmup`` untimed ones, and reports the median step time; the
variants run in turn, ``--rounds`` times (A B C A B C ...), so a drifting machine affects all
alike. Compared: the ``cpu`` preset as is; channels-last memory format; ``torch.compile``;
batch sizes; thread counts; the reference's width and narrower/shallower models.

Usage::

    python benchmarks/train_speed.py --out benchmarks/results/train_speed
    # thread count only, on an otherwise idle machine
    python benchmarks/train_speed.py --only "preset (batch 16, 1 thread)" "2 threads" \\
        --out benchmarks/results/train_speed/threads
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

VARIANTS = {
    "preset (batch 16, 1 thread)": {},
    "channels-last": {"channels_last": True},
    "torch.compile": {"compile": True},
    "batch 8": {"batch": 8},
    "batch 32": {"batch": 32},
    "2 threads": {"threads": 2},
    "64 filters, 5 blocks (reference width)": {"filters": 64, "blocks": 5},
    "16 filters, 3 blocks": {"filters": 16, "blocks": 3},
    "32 filters, 1 block": {"filters": 32, "blocks": 1},
}


def worker(spec: dict, steps: int, warmup: int) -> list[float]:
    import numpy as np
    import torch

    from hdn_deploy.training.config import PRESETS, ModelConfig
    from hdn_deploy.training.data import Normalization
    from hdn_deploy.training.model import LadderVAE
    from hdn_deploy.training.noise_models import GaussianNoiseModel
    from hdn_deploy.training.trainer import hdn_loss

    torch.set_num_threads(spec.get("threads", 1))
    model_cfg = {**PRESETS["cpu"]["model"]}
    if "filters" in spec:
        model_cfg.update(n_filters=spec["filters"], blocks_per_level=spec["blocks"])
    model = LadderVAE(ModelConfig.from_dict(model_cfg))
    batch_size = spec.get("batch", PRESETS["cpu"]["train"]["batch_size"])
    fmt = torch.channels_last if spec.get("channels_last") else torch.contiguous_format
    model = model.to(memory_format=fmt)
    step_model = torch.compile(model) if spec.get("compile") else model
    opt = torch.optim.Adamax(model.parameters(), lr=1e-3)
    noise, norm = GaussianNoiseModel(25.0), Normalization(100.0, 50.0)
    rng = np.random.default_rng(0)
    times = []
    for i in range(warmup + steps):
        x = torch.from_numpy(rng.normal(size=(batch_size, 1, 64, 64)).astype(np.float32))
        x = x.contiguous(memory_format=fmt)
        start = time.perf_counter()
        losses = hdn_loss(model, x, step_model(x), noise, norm)
        opt.zero_grad(set_to_none=True)
        losses["loss"].backward()
        opt.step()
        if i >= warmup:
            times.append((time.perf_counter() - start) / batch_size)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/train_speed"))
    parser.add_argument("--only", nargs="+", metavar="VARIANT", choices=list(VARIANTS),
                        help="run only these variants (the first is the baseline)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker), args.steps, args.warmup)))
        return 0
    variants = {name: VARIANTS[name] for name in args.only or VARIANTS}
    per_patch: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, spec in variants.items():
            out = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec),
                                  "--steps", str(args.steps), "--warmup", str(args.warmup)],
                                 check=True, capture_output=True, text=True).stdout
            per_patch[name] += json.loads(out.strip().splitlines()[-1])
    base = statistics.median(per_patch[next(iter(variants))])
    rows = {name: {"patches_per_s": round(1 / statistics.median(t), 2),
                   "speedup_vs_preset": round(base / statistics.median(t), 3),
                   "n_steps_timed": len(t)} for name, t in per_patch.items()}
    from hdn_deploy.atomic import atomic_write_text

    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "train_speed.json", json.dumps(
        {"command": "python benchmarks/train_speed.py " + " ".join(sys.argv[1:]),
         "variants": rows}, indent=2))
    lines = ["| variant | patches/s (median) | vs preset |", "|---|---|---|"]
    lines += [f"| {n} | {r['patches_per_s']} | {r['speedup_vs_preset']}x |" for n, r in rows.items()]
    atomic_write_text(args.out / "train_speed.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
