"""Samples needed for the MMSE: ``mc`` vs ``antithetic``, and the gap of ``sampling="mean"``.

For each image (held out from the model's training data, with the model's noise), one run of
``--n-max`` samples per sampling mode and seed records the running MMSE
(:func:`hdn_deploy.quality.quality_curve`); the samples needed are the smallest N whose
PSNR against the clean image is within 0.1 dB of the ``n_max``-sample MMSE. The single pass
with every latent at its mean (``sampling="mean"``) is scored beside it.

    python benchmarks/sampling_convergence.py --package hdn_deploy/models/default \\
        --images nuclei_q4 astronaut --n-max 128 --seeds 0 1 --out benchmarks/results/sampling

Writes ``sampling.json`` and ``sampling.md`` in ``--out``.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.quality import add_noise, clean_images  # noqa: E402
from hdn_deploy import Denoiser  # noqa: E402
from hdn_deploy.atomic import atomic_write_text  # noqa: E402
from hdn_deploy.quality import quality_curve  # noqa: E402


def markdown(results: dict, command: str) -> str:
    lines = [f"# Samples needed to come within 0.1 dB of the {results['n_max']}-sample MMSE",
             "", f"Command: `{command}`", "",
             "| image | noisy PSNR | mode | MMSE PSNR (n_max, mean of seeds) | samples needed "
             "per seed | single pass with latents at their mean | mean - MMSE (dB) |",
             "|---|---|---|---|---|---|---|"]
    for name, r in results["images"].items():
        for mode, m in r["modes"].items():
            final = m["summary"]["final_psnr"]["median"]
            lines.append(f"| {name} | {r['psnr_noisy']:.2f} | {mode} | {final:.2f} | "
                         f"{m['summary']['samples_needed_per_seed']} | {r['mean_pass']['psnr_vs_clean']:.2f} | "
                         f"{r['mean_pass']['psnr_vs_clean'] - final:+.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package", default="hdn_deploy/models/default")
    parser.add_argument("--images", nargs="+", default=["nuclei_q4"])
    parser.add_argument("--noise", default="pg", choices=["pg", "gaussian25"])
    parser.add_argument("--n-max", type=int, default=128)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/sampling"))
    args = parser.parse_args()
    denoiser = Denoiser(args.package, threads=args.threads)
    clean = clean_images()
    results = {"package": args.package, "noise": args.noise, "n_max": args.n_max, "images": {}}
    for name in args.images:
        noisy = add_noise(clean[name], args.noise, 0)
        curve = quality_curve(denoiser, noisy, clean[name], n_max=args.n_max, seeds=args.seeds,
                              progress=print)
        results["images"][name] = curve
    command = "python " + shlex.join(sys.argv)
    results["command"] = command
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "sampling.json", json.dumps(results, indent=1, default=float))
    atomic_write_text(args.out / "sampling.md", markdown(results, command))
    print(markdown(results, command))


if __name__ == "__main__":
    main()
