"""Quality per number of samples, from one run per sampling mode and seed (no torch).

:func:`quality_curve` draws ``n_max`` samples once per sampling mode and seed and records
the running MMSE at a grid of sample counts N (``Denoiser`` ``checkpoints``: seeded
latents make the first N samples of a long run exactly the samples of a run of N). With
a clean ground truth, ``quality(N) = PSNR(MMSE_N, clean)``; the samples needed are the
smallest N on the grid whose quality is within ``tolerance_db`` (0.1 dB) of
``quality(n_max)``. ``PSNR(MMSE_N, MMSE_n_max)`` is reported as the convergence curve.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from .denoiser import Denoiser
from .errors import ConfigError, InputError
from .latents import SamplingMode
from .metrics import psnr
from .summary import summarize

__all__ = ["quality_grid", "samples_needed", "running_mmse", "quality_curve", "DEFAULT_TOLERANCE_DB"]

DEFAULT_TOLERANCE_DB = 0.1


def quality_grid(n_max: int) -> list[int]:
    """Sample counts at which the running MMSE is recorded: 1..16 exactly, then powers of
    two and 1.5 x powers of two, then ``n_max``."""
    if n_max < 1:
        raise ConfigError(f"n_max must be >= 1, got {n_max}")
    grid = set(range(1, min(16, n_max) + 1))
    power = 16
    while power <= n_max:
        grid.update(n for n in (power, power * 3 // 2) if n <= n_max)
        power *= 2
    grid.add(n_max)
    return sorted(grid)


def samples_needed(ns: Sequence[int], psnrs: Sequence[float | None], target: float) -> int | None:
    """Smallest N (in ``ns``) whose PSNR reaches ``target``; None if none does.

    Examples
    --------
    >>> samples_needed([1, 2, 4, 8], [20.0, 25.0, 29.95, 30.0], 29.9)
    4
    """
    if len(ns) != len(psnrs):
        raise InputError(f"ns and psnrs differ in length ({len(ns)} vs {len(psnrs)})")
    for n, value in sorted(zip(ns, psnrs), key=lambda pair: pair[0]):
        if value is not None and value >= target:
            return int(n)
    return None


def _finite(value: float) -> float | None:
    """JSON-safe float: None for inf/NaN."""
    value = float(value)
    return value if np.isfinite(value) else None


# ----------------------------------------------------------------------------- quality
def running_mmse(
    denoiser: Denoiser,
    image: np.ndarray,
    checkpoints: Iterable[int],
    *,
    seed: int = 0,
    sampling: SamplingMode | str = SamplingMode.MC,
    batch_size: int = 8,
    tile: int | None = None,
    overlap: int | None = None,
    blend: str = "hann",
) -> dict[int, np.ndarray]:
    """MMSE of the first N samples for every N in ``checkpoints``, from one run.

    One :meth:`Denoiser.denoise` call with ``n_samples = max(checkpoints)`` and
    ``checkpoints``: ``result[N]`` equals ``denoiser.denoise(image, n_samples=N,
    seed=seed, ...).mmse`` bit for bit (seeded latents, per-sample moments).

    Returns
    -------
    dict
        ``{N: float32 MMSE image in raw units}`` (the image's shape; stacks allowed).

    Raises
    ------
    ConfigError
        If a checkpoint is below 1 (or the options are invalid).
    """
    marks = sorted({int(n) for n in checkpoints})
    if not marks or marks[0] < 1:
        raise ConfigError(f"checkpoints must be >= 1, got {marks}")
    result = denoiser.denoise(image, n_samples=marks[-1], seed=seed, sampling=sampling,
                              batch_size=batch_size, tile=tile, overlap=overlap, blend=blend,
                              checkpoints=marks)
    return dict(result.checkpoints)


def _seed_curve(means: dict[int, np.ndarray], grid: list[int], clean: np.ndarray,
                tolerance_db: float) -> dict[str, Any]:
    final = means[grid[-1]]
    vs_clean = [psnr(means[n], clean) for n in grid]
    vs_final = [_finite(psnr(means[n], final)) for n in grid]
    target = vs_clean[-1] - tolerance_db
    return {"psnr_vs_clean": vs_clean, "psnr_vs_final": vs_final, "final_psnr": vs_clean[-1],
            "target_psnr": target, "samples_needed": samples_needed(grid, vs_clean, target)}


def _mode_summary(per_seed: dict[str, dict[str, Any]], grid: list[int],
                  tolerance_db: float) -> dict[str, Any]:
    curves = np.array([s["psnr_vs_clean"] for s in per_seed.values()])
    mean_curve = curves.mean(axis=0)
    needed = [s["samples_needed"] for s in per_seed.values()]
    reached = [n for n in needed if n is not None]
    return {
        "psnr_vs_clean_mean": mean_curve.tolist(),
        "final_psnr": summarize(s["final_psnr"] for s in per_seed.values()),
        "samples_needed_per_seed": needed,
        "samples_needed_median": float(np.median(reached)) if len(reached) == len(needed) else None,
        "samples_needed_of_mean_curve": samples_needed(grid, mean_curve.tolist(),
                                                       float(mean_curve[-1]) - tolerance_db),
        "seconds": summarize(s["seconds"] for s in per_seed.values()),
    }


def quality_curve(
    denoiser: Denoiser,
    noisy: np.ndarray,
    clean: np.ndarray,
    *,
    n_max: int = 1000,
    seeds: Sequence[int] = (0, 1),
    modes: Sequence[SamplingMode | str] = (SamplingMode.MC, SamplingMode.ANTITHETIC),
    grid: Sequence[int] | None = None,
    batch_size: int = 8,
    tile: int | None = None,
    overlap: int | None = None,
    tolerance_db: float = DEFAULT_TOLERANCE_DB,
    include_mean: bool = True,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """PSNR of the N-sample MMSE as N grows, per sampling mode and seed.

    Parameters
    ----------
    denoiser
        The runtime.
    noisy, clean
        2D images of one shape, raw units (e.g. a 256 x 256 crop).
    n_max
        Samples per mode and seed; ``MMSE_n_max`` is the converged reference.
    seeds, modes
        One run of ``n_max`` samples per (mode, seed).
    grid
        Sample counts to record (default :func:`quality_grid`); ``n_max`` is added.
    batch_size, tile, overlap
        As for :meth:`Denoiser.denoise`.
    tolerance_db
        Samples needed: smallest N with ``PSNR(MMSE_N, clean) >= PSNR(MMSE_n_max, clean)
        - tolerance_db`` (per seed).
    include_mean
        Also evaluate one pass with every eps = 0 (``sampling="mean"``).
    progress
        Called with a short message after each run (e.g. ``print``).

    Returns
    -------
    dict
        ``grid``, ``psnr_noisy``, ``modes`` (per mode: ``seeds`` with ``psnr_vs_clean``,
        ``psnr_vs_final`` (None at n_max), ``final_psnr``, ``target_psnr``,
        ``samples_needed``, ``seconds``; and ``summary``) and ``mean_pass``.
    """
    noisy = np.asarray(noisy, dtype=np.float32)
    clean = np.asarray(clean, dtype=np.float32)
    if noisy.shape != clean.shape or noisy.ndim != 2:
        raise InputError(f"noisy and clean must be 2D of one shape, got {noisy.shape}, {clean.shape}")
    grid = quality_grid(n_max) if grid is None else sorted({int(n) for n in grid if n <= n_max} | {n_max})
    options = dict(batch_size=batch_size, tile=tile, overlap=overlap)
    out: dict[str, Any] = {"n_max": n_max, "grid": grid, "seeds": list(seeds),
                           "tolerance_db": tolerance_db, "shape": list(noisy.shape),
                           "data_range": float(clean.max() - clean.min()),
                           "psnr_noisy": psnr(noisy, clean), "modes": {}}
    finals: dict[str, np.ndarray] = {}
    for mode in (SamplingMode(m) for m in modes):
        per_seed: dict[str, dict[str, Any]] = {}
        for seed in seeds:
            start = time.perf_counter()
            means = running_mmse(denoiser, noisy, grid, seed=seed, sampling=mode, **options)
            per_seed[str(seed)] = {**_seed_curve(means, grid, clean, tolerance_db),
                                   "seconds": time.perf_counter() - start}
            finals.setdefault(mode.value, means[n_max])
            if progress:
                s = per_seed[str(seed)]
                progress(f"quality {mode.value} seed {seed}: {n_max} samples in {s['seconds']:.1f} s, "
                         f"final {s['final_psnr']:.2f} dB, needs {s['samples_needed']}")
        out["modes"][mode.value] = {"seeds": per_seed,
                                    "summary": _mode_summary(per_seed, grid, tolerance_db)}
    if include_mean:
        out["mean_pass"] = _mean_pass(denoiser, noisy, clean, finals, out, options)
    return out


def _mean_pass(denoiser: Denoiser, noisy: np.ndarray, clean: np.ndarray,
               finals: dict[str, np.ndarray], curves: dict[str, Any],
               options: dict[str, Any]) -> dict[str, Any]:
    start = time.perf_counter()
    mean_image = denoiser.denoise(noisy, sampling=SamplingMode.MEAN, **options).mmse
    seconds = time.perf_counter() - start
    value = psnr(mean_image, clean)
    result: dict[str, Any] = {"psnr_vs_clean": value, "seconds": seconds}
    for mode, final in finals.items():
        first_seed = next(iter(curves["modes"][mode]["seeds"].values()))
        result[mode] = {
            "psnr_vs_mmse_n_max": _finite(psnr(mean_image, final)),
            "gap_db": float(first_seed["final_psnr"] - value),
            "equivalent_samples": samples_needed(curves["grid"], first_seed["psnr_vs_clean"], value),
        }
    return result
