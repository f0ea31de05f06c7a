"""The demo's numbers next to BM3D on the same noisy sample (dev-only comparison).

BM3D (the ``bm3d`` package, a dev extra) is given the true noise std. The sample's noise is
Poisson-Gaussian, so its std varies with the signal: BM3D gets the RMS noise std of the
stated model over the clean image, sqrt(mean(GAIN * clean) + READ_NOISE^2), as the closest
single sigma (also reported: the empirical std of noisy - clean), and BM3D behind the
generalised Anscombe transform (``benchmarks/quality.py``'s ``bm3d_estimate``), the right
treatment of Poisson-Gaussian noise and the strongest of the three.

Usage::

    python benchmarks/demo_vs_bm3d.py --samples 100 --out benchmarks/results/demo/demo_vs_bm3d.json
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from hdn_deploy.demo import SAMPLE_CLEAN, SAMPLE_NOISY, bundled_path, run_demo
from hdn_deploy.io import read_image
from hdn_deploy.metrics import psnr
from hdn_deploy.training.default_model import GAIN, READ_NOISE

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.quality import bm3d_estimate  # noqa: E402  (same GAIN/READ_NOISE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--out", type=Path, default=Path("demo_vs_bm3d.json"))
    parser.add_argument("--demo-dir", type=Path, default=Path("demo_output"))
    args = parser.parse_args()
    import bm3d

    noisy = read_image(bundled_path(SAMPLE_NOISY)).array
    clean = read_image(bundled_path(SAMPLE_CLEAN)).array
    report = {"demo": {}, "bm3d": {}}
    for sampling in ("mc", "antithetic"):
        demo = run_demo(args.demo_dir / sampling, n_samples=args.samples, sampling=sampling)
        report["demo"][sampling] = {"n_samples": demo.n_samples, "seconds": round(demo.seconds, 2),
                                    "psnr_noisy": demo.psnr_noisy, "psnr_mmse": demo.psnr_mmse,
                                    "psnr_one_sample": demo.psnr_sample}
    model_sigma = float(np.sqrt(np.mean(GAIN * np.clip(clean, 0, None)) + READ_NOISE**2))
    empirical_sigma = float(np.std(noisy - clean))
    for name, sigma in (("model_rms_sigma", model_sigma), ("empirical_sigma", empirical_sigma)):
        start = time.perf_counter()
        estimate = bm3d.bm3d(noisy, sigma_psd=sigma)
        report["bm3d"][name] = {"sigma": sigma, "seconds": round(time.perf_counter() - start, 2),
                                "psnr": psnr(estimate, clean)}
    start = time.perf_counter()
    estimate = bm3d_estimate(noisy, "pg")
    report["bm3d"]["vst"] = {"seconds": round(time.perf_counter() - start, 2),
                             "psnr": psnr(estimate, clean)}
    report["command"] = "python benchmarks/demo_vs_bm3d.py " + " ".join(sys.argv[1:])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
