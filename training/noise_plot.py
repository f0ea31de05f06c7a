"""PNG of a noise-model fit, so a user can judge it (matplotlib, Agg canvas, no pyplot)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from hdn_deploy.errors import InputError

from .noise_models.base import PathLike, _pairs, write_atomically

__all__ = ["plot_noise_model_fit"]

_MAX_PAIRS = 2_000_000  # pairs kept (at random) for plotting


def _density_curve(model, grid: np.ndarray, level: float) -> np.ndarray:
    x = torch.from_numpy(grid.astype(np.float64))
    with torch.no_grad():
        log_p = model.log_likelihood(x, torch.full_like(x, level))
    return np.exp(log_p.numpy())


def _level_panel(ax, model, s: np.ndarray, x: np.ndarray, level: float) -> None:
    k = max(1, s.size // 100, min(500, s.size // 20))  # nearest 1 % (>= 500 if there are many)
    near = np.argpartition(np.abs(s - level), k - 1)[:k]
    obs, width = x[near], float(np.ptp(s[near]))
    std = math.sqrt(max(float(model.variance(np.array([level]))[0]), 0.0))
    lo, hi = np.percentile(obs, [0.1, 99.9])
    if math.isfinite(std) and std > 0:
        lo, hi = min(lo, level - 4 * std), max(hi, level + 4 * std)
    if not hi > lo:
        lo, hi = lo - 1.0, hi + 1.0
    ax.hist(obs, bins=60, range=(lo, hi), density=True, color="0.75",
            label=f"observations ({obs.size})")
    grid = np.linspace(lo, hi, 400)
    ax.plot(grid, _density_curve(model, grid, level), color="C3", lw=1.5, label="model p(x|s)")
    ax.axvline(level, color="C0", lw=0.8, ls="--")
    ax.set_title(f"signal {level:.4g} ± {width / 2:.2g}", fontsize=9)
    ax.set_xlabel("observation x")
    ax.set_ylabel("density")
    ax.legend(fontsize=7)


def _variance_panel(ax, model, s: np.ndarray, x: np.ndarray) -> None:
    edges = np.unique(np.quantile(s, np.linspace(0.0, 1.0, 31)))
    which = np.clip(np.searchsorted(edges, s, side="right") - 1, 0, max(len(edges) - 2, 0))
    r2 = (x.astype(np.float64) - s) ** 2
    counts = np.bincount(which, minlength=len(edges) - 1)
    used = counts > 0
    centres = np.bincount(which, weights=s, minlength=len(edges) - 1)[used] / counts[used]
    emp = np.bincount(which, weights=r2, minlength=len(edges) - 1)[used] / counts[used]
    grid = np.linspace(float(s.min()), float(s.max()), 200)
    ax.plot(centres, emp, "o", ms=3, color="0.4", label="data: mean (x - s)^2")
    ax.plot(grid, model.variance(grid), color="C3", lw=1.5, label="model variance")
    ax.set_title("noise variance vs signal", fontsize=9)
    ax.set_xlabel("signal s")
    ax.set_ylabel("variance")
    ax.legend(fontsize=7)


def plot_noise_model_fit(
    model,
    signal: np.ndarray,
    observation: np.ndarray,
    path: PathLike,
    n_levels: int = 4,
) -> Path:
    """Write a PNG comparing a noise model with the data it was fitted to.

    One panel per signal level (quantiles 10 %...90 % of the signal) shows the model's
    p(x|s) against the normalised histogram of observations whose signal lies in a
    narrow bin around that level (the nearest 1 % of pairs; at least 500 or 5 %); a last panel
    shows the model's variance against the binned mean squared residual.

    Parameters
    ----------
    model
        A noise model (``log_likelihood`` and ``variance``).
    signal, observation
        The (signal, observation) pairs, raw units.
    path
        PNG to write (atomically: temporary file in the same folder, then rename).
    n_levels
        Number of signal levels shown.

    Returns
    -------
    Path
        ``path``.
    """
    if int(n_levels) != n_levels or n_levels < 1:
        raise InputError(f"n_levels must be a positive integer, got {n_levels!r}")
    s, x = _pairs(signal, observation)
    if s.size > _MAX_PAIRS:
        keep = np.random.default_rng(0).choice(s.size, size=_MAX_PAIRS, replace=False)
        s, x = s[keep], x[keep]
    s, x = s.astype(np.float64), x.astype(np.float64)
    levels = np.quantile(s, np.linspace(0.1, 0.9, int(n_levels)))
    panels = int(n_levels) + 1
    cols = min(3, panels)
    rows = math.ceil(panels / cols)
    fig = Figure(figsize=(4.2 * cols, 3.4 * rows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, level in zip(axes, levels):
        _level_panel(ax, model, s, x, float(level))
    _variance_panel(axes[len(levels)], model, s, x)
    for ax in axes[panels:]:
        ax.set_visible(False)
    fig.suptitle(f"{type(model).__name__} fit", fontsize=10)
    return write_atomically(path, lambda handle: fig.savefig(handle, format="png", dpi=100))
