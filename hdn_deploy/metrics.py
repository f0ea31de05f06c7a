"""Image-quality metrics used by the demo, the benchmarks, the runtime's drift warning and
training's tile check."""
from __future__ import annotations

import numpy as np

from .errors import InputError


def psnr(estimate: np.ndarray, reference: np.ndarray, *, data_range: float | None = None) -> float:
    """PSNR in dB as HDN reports it: 20 log10(range) - 10 log10(MSE).

    ``data_range`` defaults to max - min of ``reference`` (per image, as the reference does).
    """
    reference = np.asarray(reference, dtype=np.float64)
    estimate = np.asarray(estimate, dtype=np.float64)
    if estimate.shape != reference.shape:
        raise InputError(f"psnr needs equal shapes, got {estimate.shape} and {reference.shape}")
    rng = float(reference.max() - reference.min()) if data_range is None else float(data_range)
    mse = float(np.mean((estimate - reference) ** 2))
    if mse == 0:
        return float("inf")
    return float(20.0 * np.log10(rng) - 10.0 * np.log10(mse))


#: |mean(input - MMSE)| / std(input - MMSE) of one tile above which the runtime warns
#: (DriftWarning) and above which training's tile check rejects a tile size.
#: A sound model with zero-mean noise stays below ~0.07 (measured: 0.015 on models trained to
#: convergence, 0.067 on a model with the dropout bias); models that drift in tiles larger
#: than their training patches reached 0.14-0.3 (benchmarks/results/quality/probes.md).
DRIFT_LIMIT = 0.1


def tile_drift(patch: np.ndarray, mmse: np.ndarray) -> float:
    """|mean(patch - mmse)| / std(patch - mmse) of one tile (any units, both the same).

    For noise of zero mean given the signal (Gaussian, Poisson-Gaussian, calibrated noise
    models) this is about 1/sqrt(pixels) for a sound MMSE; a whole-tile offset (a model
    whose deep levels see more than in training) raises it. 0 where MMSE == patch."""
    residual = np.asarray(patch, dtype=np.float64) - np.asarray(mmse, dtype=np.float64)
    offset = abs(residual.mean())
    return 0.0 if offset == 0 else float(offset / max(residual.std(), 1e-12))
