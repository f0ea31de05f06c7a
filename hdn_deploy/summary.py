"""Medians and spreads of repeated measurements (benchmarks report these, never one run)."""
from __future__ import annotations

from typing import Any, Iterable, Sequence

import numpy as np

from .errors import InputError

__all__ = ["summarize", "percentiles"]


def summarize(values: Iterable[float]) -> dict[str, Any]:
    """Median and spread of repeated measurements.

    Returns
    -------
    dict
        ``median``, ``min``, ``max``, ``spread`` (max - min), ``rel_spread``
        (spread / median), ``n`` and the raw ``values``.
    """
    vals = [float(v) for v in values]
    if not vals:
        return {"median": None, "min": None, "max": None, "spread": None, "rel_spread": None,
                "n": 0, "values": []}
    med = float(np.median(vals))
    spread = max(vals) - min(vals)
    return {"median": med, "min": min(vals), "max": max(vals), "spread": spread,
            "rel_spread": spread / med if med else None, "n": len(vals), "values": vals}


def percentiles(values: Iterable[float], qs: Sequence[int] = (50, 90, 99)) -> dict[str, float]:
    """``{"p50": ..., "p90": ..., "p99": ...}`` (linear interpolation) plus ``n``."""
    vals = np.asarray(list(values), dtype=np.float64)
    if vals.size == 0:
        raise InputError("percentiles of an empty list")
    out: dict[str, float] = {f"p{q}": float(np.percentile(vals, q)) for q in qs}
    out["n"] = int(vals.size)
    return out
