"""Artefact benchmark: structured-noise HDN vs pixel-noise HDN vs BM3D on line artefacts.

Each clean image (:func:`benchmarks.quality.clean_images`: real images held out from the
bundled model's training data, 256x256, 8-bit range) gets Gaussian pixel noise (sigma 25)
plus a line artefact, drawn with a fixed seed:

- ``rows``: a random offset (std 12) added to 30 % of the rows, as the issue's
  measurement; ``columns``: the same on columns.

On each noisy image (unsupervised: the model sees only that noisy image) two HDN models are
trained with the same budget through ``hdn-deploy train``, at the same time (``--jobs``, one
core each): the pixel-noise model (the Gaussian likelihood of the pixel noise) and the
structured-noise model (``--structured``: the line-artefact likelihood, row and column
offsets marginalised with their std estimated from the noisy image). Scored: PSNR of the
``--samples``-sample MMSE (and of BM3D given the pixel sigma, and of the noisy input)
against the clean image, and the share of the artefact removed::

    removed = 1 - var(line means of (estimate - clean)) / var(line means of (noisy - clean))

(line means along the artefact's lines: row means for ``rows``). Runs resume: a model
folder with ``last.safetensors`` continues (``--resume``) up to ``--max-steps``.

    python benchmarks/artefacts.py --images astronaut ihc_q4 --artefacts rows \\
        --models pixel structured --max-steps 800 --out benchmarks/results/artefacts

Writes ``artefacts.json``, ``artefacts.md`` and a montage per case
(noisy | BM3D | HDN pixel | HDN structured | clean) in ``--out``.
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.quality import SIGMA, clean_images, export, hdn_mmse, scores  # noqa: E402
from hdn_deploy.atomic import atomic_path, atomic_write_text  # noqa: E402

ARTEFACTS = ("rows", "columns")
# model name -> extra `hdn-deploy train` flags ("{artefact}" is replaced by rows/columns,
# e.g. ["--line-artefacts", "{artefact}"] for a model told the artefact's direction)
MODELS = {"pixel": [], "structured": ["--structured"]}


def draw_artefact_noise(clean: np.ndarray, artefact: str, seed: int, *, std: float = 12.0,
                        fraction: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """(noisy, offsets): Gaussian pixel noise (sigma 25) plus an offset (std ``std``) on
    ``fraction`` of the lines; ``offsets`` holds each line's offset (0 for most)."""
    rng = np.random.default_rng(seed)
    noisy = clean + rng.normal(0.0, SIGMA, clean.shape)
    n_lines = clean.shape[0] if artefact == "rows" else clean.shape[1]
    offsets = rng.normal(0.0, std, n_lines) * (rng.random(n_lines) < fraction)
    noisy += offsets[:, None] if artefact == "rows" else offsets[None, :]
    return noisy.astype(np.float32), offsets


def add_artefact_noise(clean: np.ndarray, artefact: str, seed: int, **kwargs) -> np.ndarray:
    """The noisy image of :func:`draw_artefact_noise`."""
    return draw_artefact_noise(clean, artefact, seed, **kwargs)[0]


def artefact_kept(estimate: np.ndarray, clean: np.ndarray, offsets: np.ndarray,
                  artefact: str) -> float:
    """Share of each line's offset that passes into ``estimate``: the slope of the
    estimate's line-mean error regressed on the true offsets (1: all kept, 0: none). Unlike
    :func:`artefact_removed` it is not lowered by the estimate's other errors, which are
    uncorrelated with the random offsets."""
    axis = 1 if artefact == "rows" else 0
    residual = (estimate - clean).mean(axis=axis)
    centred = offsets - offsets.mean()
    return round(float((residual - residual.mean()) @ centred / (centred @ centred)), 4)


def artefact_removed(estimate: np.ndarray, noisy: np.ndarray, clean: np.ndarray,
                     artefact: str) -> float:
    """1 - var(line means of estimate - clean) / var(line means of noisy - clean)."""
    axis = 1 if artefact == "rows" else 0
    residual = (estimate - clean).mean(axis=axis)
    before = (noisy - clean).mean(axis=axis)
    return round(float(1.0 - residual.var() / before.var()), 4)


def train_command(noisy_file: Path, run_dir: Path, kind: str, artefact: str, max_steps: int,
                  seed: int, extra: list[str]) -> list[str]:
    """The `hdn-deploy train` command that trains (or resumes) one model."""
    if (run_dir / "last.safetensors").is_file():
        cmd = ["--resume", str(run_dir), "--max-steps", str(max_steps)]
    else:
        cmd = [str(noisy_file), "-o", str(run_dir), "--preset", "cpu", "--max-steps",
               str(max_steps), "--gaussian-sigma", str(SIGMA), "--threads", "1", "--seed",
               str(seed), *(f.format(artefact=artefact) for f in MODELS[kind]), *extra]
    return [sys.executable, "-m", "hdn_deploy", "train", *cmd, "--quiet"]


def train_all(commands: list[list[str]], jobs: int) -> None:
    """Run the training commands, ``jobs`` at a time (one core each); fail if any fails."""
    pending, running = list(commands), []
    while pending or running:
        while pending and len(running) < jobs:
            running.append(subprocess.Popen(pending.pop(0)))
        done = running.pop(0)
        if done.wait() != 0:
            raise SystemExit(f"training failed (exit {done.returncode}): {shlex.join(done.args)}")


def train_seconds(run_dir: Path) -> float | None:
    import csv

    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    return float(rows[-1]["train_seconds"]) if rows and rows[-1].get("train_seconds") else None


def montage(panels: dict[str, np.ndarray], clean: np.ndarray, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lo, hi = np.percentile(clean, [0.5, 99.5])
    fig, axes = plt.subplots(1, len(panels), figsize=(3 * len(panels), 3.3))
    for ax, (title, image) in zip(axes, panels.items()):
        ax.imshow(image, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def run_case(name: str, artefact: str, clean: np.ndarray, args) -> dict[str, Any]:
    import tifffile

    from benchmarks.quality import bm3d_estimate

    noisy, offsets = draw_artefact_noise(clean, artefact, args.seed)
    work = args.work / f"{name}_{artefact}"
    work.mkdir(parents=True, exist_ok=True)
    noisy_file = work / "noisy.tif"
    if not noisy_file.is_file():
        tifffile.imwrite(noisy_file, noisy)
    estimates = {"noisy": noisy, "BM3D": bm3d_estimate(noisy, "gaussian25")}
    case: dict[str, Any] = {"models": {}}
    train_all([train_command(noisy_file, work / kind, kind, artefact, args.max_steps, args.seed,
                             args.train_args.split()) for kind in args.models], args.jobs)
    for kind in args.models:
        run_dir = work / kind
        with tempfile.TemporaryDirectory() as tmp:
            package = export(run_dir / "best.safetensors", Path(tmp) / "pkg")
            estimates[f"HDN {kind}"] = hdn_mmse(package, noisy, args.samples, args.seed)
        case["models"][kind] = {"train_seconds": train_seconds(run_dir),
                                "max_steps": args.max_steps}
    for label, estimate in estimates.items():
        case.setdefault("scores", {})[label] = {
            **scores(estimate, clean),
            "artefact_removed": artefact_removed(estimate, noisy, clean, artefact),
            "artefact_kept": artefact_kept(estimate, clean, offsets, artefact)}
    montage({**{k: v for k, v in estimates.items()}, "clean": clean}, clean,
            args.out / f"montage_{name}_{artefact}.png")
    return case


def markdown(results: dict[str, Any]) -> str:
    lines = ["Commands (each case's last):", "", *(f"    {c}" for c in results["commands"]), "",
             "| image | artefact | method | PSNR (dB) | SSIM | artefact variance removed | "
             "offset kept (slope) | training (s, 1 core) |", "|---|---|---|---|---|---|---|---|"]
    for key, case in results["cases"].items():
        name, artefact = key.split("/")
        for label, s in case["scores"].items():
            kind = label.replace("HDN ", "")
            secs = case["models"].get(kind, {}).get("train_seconds")
            lines.append(f"| {name} | {artefact} | {label} | {s['psnr']:.2f} | {s['ssim']:.3f} | "
                         f"{100 * s['artefact_removed']:.1f} % | "
                         f"{s.get('artefact_kept', '')} | "
                         f"{'' if secs is None else f'{secs:.0f}'} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", nargs="+", default=["astronaut"])
    parser.add_argument("--artefacts", nargs="+", choices=ARTEFACTS, default=list(ARTEFACTS))
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--max-steps", type=int, default=1200)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2,
                        help="models trained at once, one core each (default 2)")
    parser.add_argument("--train-args", default="", help="more `hdn-deploy train` flags")
    parser.add_argument("--work", type=Path, default=Path("runs/artefacts"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/artefacts"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "artefacts.json"
    results = json.loads(path.read_text()) if path.is_file() else {"cases": {}}
    command = "python " + shlex.join(sys.argv)
    results.pop("command", None)
    results["commands"] = [c for c in results.get("commands", []) if c != command] + [command]
    clean = clean_images()
    for name in args.images:
        for artefact in args.artefacts:
            results["cases"][f"{name}/{artefact}"] = run_case(name, artefact, clean[name], args)
            atomic_write_text(path, json.dumps(results, indent=1))
            atomic_write_text(args.out / "artefacts.md", markdown(results))
            print(markdown(results), flush=True)


if __name__ == "__main__":
    main()
