"""Image-quality metrics used by the demo and the benchmarks."""
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
