"""Noise model from a 2D histogram of (signal, observation) pairs (the PPN2V layout)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from hdn_deploy.errors import ConfigError, InputError

from .base import TOL, PathLike, _float_tensor_like, _magic, _pairs, _read_npz, write_atomically


class HistogramNoiseModel:
    """Noise model from a 2D histogram of (signal, observation) pairs.

    ``histogram`` has shape (3, bins, bins): ``[0]`` p(x|s) per signal row (row i = signal
    bin i, column j = observation bin j) as a density (each non-empty row integrates to
    1 over x), ``[1]`` and ``[2]`` the lower and upper bin edges (``[1][j, :]`` = lower
    edge of bin j, the PPN2V layout). Signal and observation share the same bins.
    The likelihood interpolates linearly between signal-bin centres (so it is
    differentiable w.r.t. the signal) and looks up the observation's bin; empty rows give
    likelihood 1e-10. PPN2V files, whose rows sum to 1 instead, are converted on load.

    Parameters
    ----------
    histogram
        Array of shape (3, bins, bins), bins >= 2, as described above.
    """

    kind = "histogram"

    def __init__(self, histogram: np.ndarray):
        hist = np.asarray(histogram, dtype=np.float64)
        problem = _histogram_problem(hist)
        if problem:
            raise ConfigError(f"invalid histogram noise model: {problem}")
        self.histogram = hist.copy()
        self._density = torch.from_numpy(hist[0].astype(np.float32))

    def __repr__(self) -> str:
        return (f"HistogramNoiseModel(bins={self.bins}, min_value={self.min_value:g}, "
                f"max_value={self.max_value:g})")

    @property
    def bins(self) -> int:
        """Bins along each axis."""
        return self.histogram.shape[1]

    @property
    def min_value(self) -> float:
        """Lower edge of the first bin."""
        return float(self.histogram[1].min())

    @property
    def max_value(self) -> float:
        """Upper edge of the last bin."""
        return float(self.histogram[2].max())

    @classmethod
    def fit(cls, signal: np.ndarray, observation: np.ndarray, *, bins: int = 256,
            min_value: float | None = None, max_value: float | None = None
            ) -> "HistogramNoiseModel":
        """Histogram (signal, observation) pairs over [min_value, max_value] on both axes.

        Parameters
        ----------
        signal, observation
            Pixel pairs of equal size, raw intensity units.
        bins
            Bins per axis (>= 2).
        min_value, max_value
            Histogram range; default the joint range of signal and observation.

        Returns
        -------
        HistogramNoiseModel
        """
        if int(bins) != bins or bins < 2:
            raise ConfigError(f"bins must be an integer >= 2, got {bins!r}")
        s, x = _pairs(signal, observation)
        lo = float(min(s.min(), x.min())) if min_value is None else float(min_value)
        hi = float(max(s.max(), x.max())) if max_value is None else float(max_value)
        if not hi > lo:
            raise InputError(f"the histogram range is empty (min {lo:g}, max {hi:g})")
        counts, edges, _ = np.histogram2d(s, x, bins=int(bins), range=[[lo, hi], [lo, hi]])
        width = np.diff(edges)
        sums = counts.sum(axis=1, keepdims=True)
        density = np.divide(counts, sums * width[None, :], out=np.zeros_like(counts),
                            where=sums > 0)
        hist = np.empty((3, int(bins), int(bins)))
        hist[0] = density
        hist[1] = edges[:-1, None]
        hist[2] = edges[1:, None]
        return cls(hist)

    def _edges(self) -> np.ndarray:
        return np.append(self.histogram[1][:, 0], self.histogram[2][-1, 0])

    def log_likelihood(self, observation: torch.Tensor, signal: torch.Tensor) -> torch.Tensor:
        """Elementwise log(p(x|s) + 1e-10), linear in s between signal-bin centres."""
        density = _float_tensor_like(self._density, signal)
        b = self.bins
        scale = b / (self.max_value - self.min_value)
        x = observation.to(device=signal.device, dtype=density.dtype)
        obs_idx = torch.clamp((x - self.min_value) * scale, 0, b - 1).floor().long()
        sf = torch.clamp((signal - self.min_value) * scale - 0.5, 0, b - 1)
        s0 = torch.clamp(sf.detach().floor(), max=b - 2)
        frac = sf - s0
        s0 = s0.long()
        p = density[s0, obs_idx] * (1.0 - frac) + density[s0 + 1, obs_idx] * frac
        return torch.log(p + TOL)

    def variance(self, signal: np.ndarray) -> np.ndarray:
        """Variance of x under each signal row (uniform within bins), interpolated.

        Rows without data are skipped; outside the covered range the nearest row's value
        is used. NaN everywhere if the histogram is empty.
        """
        edges = self._edges()
        width = np.diff(edges)
        centres = 0.5 * (edges[:-1] + edges[1:])
        mass = self.histogram[0] * width[None, :]
        total = mass.sum(axis=1)
        ok = total > 0
        signal = np.asarray(signal, dtype=np.float64)
        if not ok.any():
            return np.full(signal.shape, np.nan)
        m = mass[ok] / total[ok, None]
        mean = m @ centres
        var = m @ (centres**2 + width**2 / 12.0) - mean**2
        return np.interp(signal, centres[ok], var)

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """``({"kind": "histogram", "bins", "min_value", "max_value"}, {"histogram": ...})``."""
        meta = {"kind": self.kind, "bins": self.bins, "min_value": self.min_value,
                "max_value": self.max_value}
        return meta, {"histogram": self.histogram.copy()}

    def save(self, path: PathLike) -> Path:
        """Write ``.npy`` (the bare array) or ``.npz`` (key ``histogram``) atomically."""
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix == ".npy":
            return write_atomically(path, lambda h: np.save(h, self.histogram))
        if suffix == ".npz":
            return write_atomically(path, lambda h: np.savez(h, histogram=self.histogram))
        raise InputError(f"{path}: a histogram noise model is saved as .npy or .npz")

    @classmethod
    def load(cls, path: PathLike) -> "HistogramNoiseModel":
        """Read a ``.npy`` array or ``.npz`` key ``histogram``; wrong layout -> InputError."""
        path = Path(path)
        if _magic(path) == "npz":
            arrays = _read_npz(path)
            if "histogram" not in arrays:
                raise InputError(f"{path}: no key 'histogram' (found {sorted(arrays)})")
            hist = np.asarray(arrays["histogram"])
        else:
            try:
                hist = np.load(path, allow_pickle=False)
            except (OSError, ValueError, EOFError) as exc:
                raise InputError(f"{path}: cannot read as a .npy array ({exc})") from exc
        if not np.issubdtype(hist.dtype, np.number):
            raise InputError(f"{path}: histogram must be numeric, got dtype {hist.dtype}")
        hist = _as_density(np.asarray(hist, dtype=np.float64), path)
        problem = _histogram_problem(hist)
        if problem:
            raise InputError(f"{path}: invalid histogram noise model: {problem}")
        return cls(hist)


def _histogram_problem(hist: np.ndarray) -> str | None:
    if hist.ndim != 3 or hist.shape[0] != 3 or hist.shape[1] != hist.shape[2] or hist.shape[1] < 2:
        return f"expected an array of shape (3, bins, bins) with bins >= 2, got {hist.shape}"
    if not np.isfinite(hist).all():
        return "the array contains NaN or Inf"
    if (hist[0] < 0).any():
        return "negative probabilities in histogram[0]"
    lower, upper = hist[1][:, 0], hist[2][:, 0]
    if not (np.all(upper > lower) and np.all(np.diff(lower) > 0)):
        return "bin edges in histogram[1] / histogram[2] must increase"
    return None


def _as_density(hist: np.ndarray, path: Path) -> np.ndarray:
    """Convert PPN2V files (rows sum to 1) to per-bin densities (rows integrate to 1)."""
    if hist.ndim != 3 or hist.shape[0] != 3 or hist.shape[1] != hist.shape[2]:
        return hist  # reported by _histogram_problem
    width = hist[2][:, 0] - hist[1][:, 0]
    sums = hist[0].sum(axis=1)
    rows = sums > 1e-20
    if not rows.any():
        return hist
    integrals = (hist[0] * width[None, :]).sum(axis=1)
    if np.allclose(integrals[rows], 1.0, atol=1e-3):
        return hist
    if np.allclose(sums[rows], 1.0, atol=1e-3):
        out = hist.copy()
        out[0] = hist[0] / width[None, :]
        return out
    raise InputError(
        f"{path}: histogram rows are neither densities (integrating to 1) nor "
        "probabilities (summing to 1); normalise each signal row of histogram[0]"
    )

