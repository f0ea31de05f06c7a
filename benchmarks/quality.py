"""Quality benchmark: PSNR/SSIM of the HDN MMSE against clean images, next to BM3D and the
noisy input, and PSNR against training wall time.

Images: real images that scikit-image's wheel carries and that the bundled model never saw
in training (central 256x256 crops, grey, 8-bit range; ``ihc_q4`` is the bottom-right
quadrant of the immunohistochemistry image, the demo sample of bundled models before
2026-11-30), and two from the 512x512 fluorescence image of stained nuclei that StarDist's
wheel carries as test data (``training/sample_images.py``; fetched once into
``runs/bench-data``; intensities 0-235 used as they are): ``nuclei_q4``, its bottom-right
quadrant, the bundled demo sample (held out from the bundled model's training, which used
the other three), and ``nuclei``, the whole image, for train-on-image runs only. Noise,
drawn with a fixed seed:

- ``gaussian25``: additive Gaussian, sigma 25;
- ``pg``: Poisson-Gaussian, 4 * Poisson(clean / 4) + N(0, 5^2) (the bundled model's noise).

BM3D (the ``bm3d`` package) gets the true sigma for Gaussian noise; for Poisson-Gaussian
noise it runs behind the generalised Anscombe transform (Makitalo & Foi, IEEE TIP 2013;
closed-form approximation of the exact unbiased inverse). PSNR uses the clean image's
range (max - min), as the HDN paper does.

Sub-commands (each writes ``quality.json``, ``quality.md`` and ``quality_vs_time.png`` in
``--out``, merging with what is already there)::

    # a trained package (e.g. the bundled model) on every image with its noise
    python benchmarks/quality.py package --noise pg --label bundled \
        --package hdn_deploy/models/default --out benchmarks/results/quality
    # every weight snapshot of a training run (step_*.safetensors, best.safetensors):
    # PSNR against the run's training seconds
    python benchmarks/quality.py snapshots runs/default-model/run --noise pg --label default-model \
        --images ihc_q4 --out benchmarks/results/quality
    # train on each noisy image itself (unsupervised), then evaluate its snapshots
    python benchmarks/quality.py train --noise gaussian25 --images astronaut --max-steps 2000 \
        --out benchmarks/results/quality
"""
from __future__ import annotations

import argparse
import functools
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from hdn_deploy.atomic import atomic_path, atomic_write_text
from hdn_deploy.metrics import psnr
from hdn_deploy.training.default_model import GAIN, READ_NOISE  # the bundled model's noise

SIGMA = 25.0
NOISES = ("gaussian25", "pg")
CROP = 256


# ------------------------------------------------------------------------------ data
def _grey(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image, dtype=np.float64)
    if image.ndim == 3:
        image = image[..., :3] @ np.array([0.2125, 0.7154, 0.0721])
    return image.astype(np.float32)


def _centre(image: np.ndarray, size: int = CROP) -> np.ndarray:
    y, x = (image.shape[0] - size) // 2, (image.shape[1] - size) // 2
    return np.ascontiguousarray(image[y:y + size, x:x + size])


@functools.lru_cache(maxsize=1)
def clean_images() -> dict[str, np.ndarray]:
    """Held-out clean images (name -> float32 2-D, 8-bit range); read once per process."""
    import skimage.data as data

    from hdn_deploy.demo import SAMPLE_CLEAN, bundled_path
    from hdn_deploy.io import read_image
    from hdn_deploy.training.sample_images import stardist_nuclei

    return {
        "ihc_q4": _grey(data.immunohistochemistry())[256:, 256:],
        # the bundled model's demo sample: held out from its training (the other quadrants)
        "nuclei_q4": read_image(bundled_path(SAMPLE_CLEAN)).array.astype(np.float32),
        "astronaut": _centre(_grey(data.astronaut())),
        "brick": _centre(_grey(data.brick())),
        "chelsea": _centre(_grey(data.chelsea())),
        # whole image: for train-on-image runs, not for the bundled model (trained on 3/4)
        "nuclei": stardist_nuclei(Path("runs/bench-data")),
    }


def add_noise(clean: np.ndarray, noise: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if noise == "gaussian25":
        return (clean + rng.normal(0.0, SIGMA, clean.shape)).astype(np.float32)
    photons = rng.poisson(np.clip(clean, 0, None) / GAIN)
    return (GAIN * photons + rng.normal(0.0, READ_NOISE, clean.shape)).astype(np.float32)


# ------------------------------------------------------------------------------ BM3D
def gat(x: np.ndarray) -> np.ndarray:
    """Generalised Anscombe transform of gain * Poisson + N(0, read^2), in photon units."""
    sigma = READ_NOISE / GAIN
    return 2.0 * np.sqrt(np.maximum(x / GAIN + 3.0 / 8.0 + sigma**2, 0.0))


def gat_inverse(d: np.ndarray) -> np.ndarray:
    """Closed-form approximation of the exact unbiased inverse (Makitalo & Foi 2013)."""
    sigma = READ_NOISE / GAIN
    d = np.maximum(d, 0.8)
    s = np.sqrt(1.5)
    y = 0.25 * d**2 + 0.25 * s / d - 11.0 / 8.0 / d**2 + 5.0 / 8.0 * s / d**3 - 1.0 / 8.0 - sigma**2
    return GAIN * np.maximum(y, 0.0)


def bm3d_estimate(noisy: np.ndarray, noise: str) -> np.ndarray:
    import bm3d

    if noise == "gaussian25":
        return bm3d.bm3d(noisy, sigma_psd=SIGMA).astype(np.float32)
    return gat_inverse(bm3d.bm3d(gat(noisy), sigma_psd=1.0)).astype(np.float32)


# ------------------------------------------------------------------------------ scoring
def scores(estimate: np.ndarray, clean: np.ndarray) -> dict[str, float]:
    from skimage.metrics import structural_similarity

    rng = float(clean.max() - clean.min())
    return {"psnr": round(psnr(estimate, clean, data_range=rng), 3),
            "ssim": round(float(structural_similarity(estimate, clean, data_range=rng)), 4)}


def hdn_mmse(package: Path, noisy: np.ndarray, n_samples: int, seed: int) -> np.ndarray:
    from hdn_deploy import Denoiser

    return Denoiser(package, threads=1).denoise(noisy, n_samples=n_samples, seed=seed).mmse


def baselines(names: list[str], noise: str, seed: int) -> dict[str, dict[str, Any]]:
    out = {}
    clean = clean_images()
    for name in names:
        noisy = add_noise(clean[name], noise, seed)
        start = time.perf_counter()
        estimate = bm3d_estimate(noisy, noise)
        out[name] = {"noisy": scores(noisy, clean[name]),
                     "bm3d": {**scores(estimate, clean[name]),
                              "seconds": round(time.perf_counter() - start, 2)}}
    return out


# ------------------------------------------------------------------------------ runs
def export(checkpoint: Path, folder: Path) -> Path:
    from hdn_deploy.export.onnx_export import package_from_checkpoint

    # collapsed models are scored too (export refuses them by default)
    return package_from_checkpoint(checkpoint, folder, verify=False, overwrite=True,
                                   allow_collapsed=True)


def snapshot_curve(run_dir: Path, names: list[str], noise: str, seed: int, n_samples: int,
                   images: dict[str, np.ndarray] | None = None) -> list[dict[str, Any]]:
    """PSNR of every kept snapshot of ``run_dir`` (and of its final weights, ``last``) against
    the run's training seconds."""
    import csv

    from hdn_deploy.training.checkpoint import load_checkpoint

    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    seconds_at = {int(r["step"]): float(r.get("train_seconds") or "nan") for r in rows}
    clean = images or clean_images()
    curve = []
    snaps = sorted(run_dir.glob("step_*.safetensors"), key=lambda p: int(p.stem.split("_")[1]))
    steps = [int(p.stem.split("_")[1]) for p in snaps]
    last = run_dir / "last.safetensors"
    last_step = load_checkpoint(last).provenance["step"] if last.is_file() else None
    if last_step is not None and last_step not in steps and last_step in seconds_at:
        snaps, steps = [*snaps, last], [*steps, last_step]  # the final weights
    with tempfile.TemporaryDirectory() as tmp:
        for snap, step in zip(snaps, steps):
            package = export(snap, Path(tmp) / snap.stem)
            point = {"step": step, "train_seconds": seconds_at.get(step), "images": {}}
            for name in names:
                mmse = hdn_mmse(package, add_noise(clean[name], noise, seed), n_samples, seed)
                point["images"][name] = scores(mmse, clean[name])
            curve.append(point)
            print(json.dumps(point), flush=True)
    return curve


def train_on_image(name: str, noise: str, seed: int, work: Path, max_steps: int,
                   snapshot_every: int, *, noise_model: Path | None = None,
                   extra: list[str] = (), tag: str = "") -> Path:
    """Train the ``cpu`` preset on the noisy image itself (unsupervised); returns the run folder.

    ``extra``: more ``hdn-deploy train`` flags (e.g. ``--init CKPT --lr 3e-4`` to fine-tune).
    """
    import tifffile

    work.mkdir(parents=True, exist_ok=True)
    data = work / f"{name}_{noise}.tif"
    tifffile.imwrite(data, add_noise(clean_images()[name], noise, seed))
    run_dir = work / f"run_{name}_{noise}{tag}"
    if noise == "pg" and noise_model is None:
        raise SystemExit("--noise-model NPZ is needed to train on Poisson-Gaussian noise")
    likelihood = (["--gaussian-sigma", str(SIGMA)] if noise == "gaussian25"
                  else ["--noise-model", str(noise_model)])
    cmd = [sys.executable, "-m", "hdn_deploy", "train", str(data), "-o", str(run_dir),
           "--preset", "cpu", "--max-steps", str(max_steps), "--snapshot-every",
           str(snapshot_every), "--threads", "1", "--seed", str(seed), "--quiet", *likelihood,
           *extra]
    if (run_dir / "last.safetensors").is_file():
        cmd = [sys.executable, "-m", "hdn_deploy", "train", "--resume", str(run_dir),
               "--max-steps", str(max_steps), "--quiet"]
    subprocess.run(cmd, check=True)
    return run_dir


# ------------------------------------------------------------------------------ report
def _load(out: Path) -> dict[str, Any]:
    path = out / "quality.json"
    return json.loads(path.read_text()) if path.is_file() else {"baselines": {}, "hdn": {}, "curves": {}}


def markdown(results: dict[str, Any]) -> str:
    lines = ["| noise | image | noisy PSNR | BM3D PSNR | HDN MMSE PSNR | HDN - BM3D | model | "
             "noisy SSIM | BM3D SSIM | HDN SSIM |", "|" + "---|" * 10]
    for key, entry in sorted(results["hdn"].items()):
        noise, image, label = key.split("/")
        base = results["baselines"].get(f"{noise}/{image}")
        if base is None:
            continue
        lines.append(
            f"| {noise} | {image} | {base['noisy']['psnr']:.2f} | {base['bm3d']['psnr']:.2f} | "
            f"{entry['psnr']:.2f} | {entry['psnr'] - base['bm3d']['psnr']:+.2f} | {label} | "
            f"{base['noisy']['ssim']:.3f} | {base['bm3d']['ssim']:.3f} | {entry['ssim']:.3f} |")
    for key, curve in sorted(results["curves"].items()):
        lines += ["", f"**{key}**: PSNR of the MMSE per snapshot (training seconds on 1 core)", "",
                  "| step | train s | " + " | ".join(curve[0]["images"]) + " |",
                  "|" + "---|" * (2 + len(curve[0]["images"]))]
        for p in curve:
            lines.append(f"| {p['step']} | {p['train_seconds'] or float('nan'):.0f} | " +
                         " | ".join(f"{v['psnr']:.2f}" for v in p["images"].values()) + " |")
    return "\n".join(lines) + "\n"


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for key, curve in sorted(results["curves"].items()):
        noise = key.split("/")[0]
        for image in curve[0]["images"]:
            t = [p["train_seconds"] / 60 for p in curve]
            line, = ax.plot(t, [p["images"][image]["psnr"] for p in curve], marker="o",
                            label=f"HDN {key} {image}")
            base = results["baselines"].get(f"{noise}/{image}")
            if base:
                ax.axhline(base["bm3d"]["psnr"], color=line.get_color(), ls="--", lw=1,
                           label=f"BM3D {noise} {image}")
    ax.set_xlabel("training time (minutes, 1 CPU core)")
    ax.set_ylabel("PSNR of the MMSE (dB)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)


def save(results: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "quality.json", json.dumps(results, indent=2))
    atomic_write_text(out / "quality.md", markdown(results))
    if results["curves"]:
        plot(results, out / "quality_vs_time.png")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["package", "snapshots", "train"])
    parser.add_argument("run_dir", nargs="?", type=Path, help="run folder (snapshots mode)")
    parser.add_argument("--noise", choices=NOISES, required=True)
    parser.add_argument("--images", nargs="+", default=None, help="default: all")
    parser.add_argument("--package", type=Path, help="package folder (package mode)")
    parser.add_argument("--label", default="hdn")
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-steps", type=int, default=2000)
    parser.add_argument("--snapshot-every", type=int, default=250)
    parser.add_argument("--work", type=Path, default=Path("runs/quality"))
    parser.add_argument("--noise-model", type=Path, help="noise model .npz (train mode, pg noise)")
    parser.add_argument("--train-args", default="",
                        help="extra `hdn-deploy train` flags, e.g. '--init CKPT --lr 3e-4'")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/quality"))
    args = parser.parse_args(argv)
    names = args.images or list(clean_images())
    results = _load(args.out)
    for name, entry in baselines(names, args.noise, args.seed).items():
        results["baselines"][f"{args.noise}/{name}"] = entry
    clean = clean_images()
    if args.mode == "package":
        for name in names:
            start = time.perf_counter()
            mmse = hdn_mmse(args.package, add_noise(clean[name], args.noise, args.seed),
                            args.samples, args.seed)
            results["hdn"][f"{args.noise}/{name}/{args.label}"] = {
                **scores(mmse, clean[name]), "n_samples": args.samples,
                "seconds": round(time.perf_counter() - start, 2)}
    elif args.mode == "snapshots":
        curve = snapshot_curve(args.run_dir, names, args.noise, args.seed, args.samples, clean)
        results["curves"][f"{args.noise}/{args.label}"] = curve
    else:
        for name in names:
            run_dir = train_on_image(name, args.noise, args.seed, args.work, args.max_steps,
                                     args.snapshot_every, noise_model=args.noise_model,
                                     extra=args.train_args.split(), tag=f"_{args.label}")
            curve = snapshot_curve(run_dir, [name], args.noise, args.seed, args.samples, clean)
            results["curves"][f"{args.noise}/{args.label}-{name}"] = curve
            last = curve[-1]["images"][name]
            results["hdn"][f"{args.noise}/{name}/{args.label}-trained-on-image"] = {
                **last, "n_samples": args.samples, "train_seconds": curve[-1]["train_seconds"]}
    command = " ".join(["python", "benchmarks/quality.py", *(argv or sys.argv[1:])])
    results.setdefault("commands", []).append(command)
    save(results, args.out)
    print(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
