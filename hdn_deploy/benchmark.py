"""Benchmark harness of the runtime: speed, memory and quality per time (no torch).

Used by ``hdn-deploy bench`` and ``benchmarks/run_cpu_suite.py``. Benchmarks are not
tests: the numbers depend on the machine and its load, so every timing is repeated and
reported as a median with its spread, and comparisons are ratios taken in one run.

Quality per time: :func:`quality_curve` draws ``n_max`` samples once per sampling mode
and seed and records the running MMSE at a grid of sample counts N (prefix means:
seeded latents make the first N samples of a long run exactly the samples of a run of
N). With a clean ground truth, ``quality(N) = PSNR(MMSE_N, clean)``; the samples needed
are the smallest N on the grid whose quality is within ``tolerance_db`` (0.1 dB) of
``quality(n_max)``. ``PSNR(MMSE_N, MMSE_n_max)`` is reported as the convergence curve.
"""
from __future__ import annotations

import os
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from ._version import __version__
from .denoiser import Denoiser
from .errors import ConfigError, InputError
from .latents import LatentSampler, SamplingMode
from .metrics import psnr
from .package import load_package

__all__ = [
    "psnr",
    "summarize",
    "percentiles",
    "quality_grid",
    "samples_needed",
    "synthetic_image",
    "peak_rss_mb",
    "machine_info",
    "time_denoise",
    "bench_runtime",
    "encoder_reuse",
    "running_mmse",
    "quality_curve",
]

PHASES = ("encode", "latents", "decode", "stats", "merge")
DEFAULT_TOLERANCE_DB = 0.1


# --------------------------------------------------------------------------- statistics
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


# ------------------------------------------------------------------------------ machine
def synthetic_image(size: int, *, mean: float, std: float, seed: int = 0) -> np.ndarray:
    """A ``size x size`` float32 test image in raw units: smooth structure plus noise,
    scaled so that it normalises to roughly zero mean and unit spread."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    signal = np.sin(x / 9.0) * np.cos(y / 13.0) + 0.5 * np.sin((x + y) / 31.0)
    noise = rng.standard_normal((size, size), dtype=np.float32)
    return (mean + std * (signal + 0.5 * noise)).astype(np.float32)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MB).

    ``VmHWM`` of ``/proc/self/status`` where there is one (Linux; it restarts at exec),
    else ``getrusage``'s ``ru_maxrss``. On Linux the latter is inherited at fork, so a
    child of a large process would report its parent's peak.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**10  # kB
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes vs kB


def _current_rss_mb() -> float | None:
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_mb() -> dict[str, float]:
    """MemTotal and MemAvailable from /proc/meminfo (empty elsewhere)."""
    out = {}
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("MemTotal", "MemAvailable"):
                out[key] = int(rest.split()[0]) / 2**10
    except (OSError, ValueError, IndexError):
        pass
    return out


def machine_info() -> dict[str, Any]:
    """Machine, load and library versions (torch only if something imported it already)."""
    versions = {"hdn_deploy": __version__, "numpy": np.__version__,
                "python": platform.python_version()}
    for name in ("onnxruntime", "torch", "onnx"):
        module = sys.modules.get(name)
        if module is not None:
            versions[name] = getattr(module, "__version__", "?")
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count()
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": affinity,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "memory_mb": _memory_mb(),
        "versions": versions,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


# ------------------------------------------------------------------------------- speed
def time_denoise(denoiser: Denoiser, image: np.ndarray, *, n_samples: int, repeats: int = 1,
                 **options) -> dict[str, Any]:
    """Run ``denoiser.iter_denoise`` ``repeats`` times; wall time, per-tile latency, phases.

    Returns
    -------
    dict
        ``wall_s`` (one per repeat), ``tile_latency_s`` (every tile of every repeat:
        seconds between successive tile events), ``phases_s`` (per phase, one value per
        repeat), ``tiles`` (tiles per image).
    """
    walls, latencies = [], []
    phases: dict[str, list[float]] = {p: [] for p in PHASES}
    tiles = 0
    for _ in range(repeats):
        timings: dict[str, float] = {}
        start = last = time.perf_counter()
        for event in denoiser.iter_denoise(image, n_samples=n_samples, timings=timings, **options):
            now = time.perf_counter()
            latencies.append(now - last)
            last = now
            tiles = event.tiles_total
        walls.append(last - start)
        for phase in PHASES:
            phases[phase].append(timings.get(phase, 0.0))
    return {"wall_s": walls, "tile_latency_s": latencies, "phases_s": phases, "tiles": tiles}


def _throughput(image_shape: tuple[int, ...], n_samples: int, walls: Sequence[float],
                phases: dict[str, list[float]]) -> dict[str, Any]:
    megapixels = float(np.prod(image_shape)) / 1e6
    return {
        "wall_s": summarize(walls),
        "seconds_per_sample": summarize(w / n_samples for w in walls),
        "megapixels_per_s": summarize(megapixels / w for w in walls),
        "sample_megapixels_per_s": summarize(megapixels * n_samples / w for w in walls),
        "phases_s": {p: float(np.median(v)) for p, v in phases.items()},
        "latent_share": summarize(lat / w for lat, w in zip(phases["latents"], walls)),
    }


def bench_runtime(
    model_path: str | Path,
    *,
    size: int = 256,
    n_samples: int = 20,
    batch_size: int = 4,
    threads: int | None = None,
    repeats: int = 3,
    tile: int | None = None,
    overlap: int | None = None,
    sampling: SamplingMode | str = SamplingMode.MC,
    graph_optimization: str = "all",
    backend: str = "cpu",
    seed: int = 0,
    image: np.ndarray | None = None,
) -> dict[str, Any]:
    """Cold start, per-tile latency, throughput, memory and latent share of the runtime.

    Parameters
    ----------
    model_path
        Model package folder.
    size
        Side of the synthetic square test image (ignored when ``image`` is given).
    n_samples, batch_size, threads, tile, overlap, sampling, seed
        As for :meth:`Denoiser.denoise` / :class:`Denoiser`.
    repeats
        Timed calls after one warm-up call (which counts as cold start).
    graph_optimization, backend
        Backend options.
    image
        Use this 2D image instead of a synthetic one.

    Returns
    -------
    dict
        ``settings``, ``model``, ``cold_start_s`` (load_package, create_session,
        first_call, total), ``tile_latency_s`` (p50/p90/p99), ``wall_s``,
        ``seconds_per_sample``, ``megapixels_per_s``, ``sample_megapixels_per_s`` (each
        median and spread over repeats), ``phases_s``, ``latent_share``,
        ``peak_rss_mb`` (process peak: includes whatever the process did before) and
        ``rss_mb`` (current RSS after the run).
    """
    if repeats < 1 or n_samples < 1:
        raise ConfigError(f"repeats ({repeats}) and n_samples ({n_samples}) must be >= 1")
    t0 = time.perf_counter()
    package = load_package(model_path)
    t1 = time.perf_counter()
    denoiser = Denoiser(package, backend=backend, threads=threads,
                        graph_optimization=graph_optimization)
    t2 = time.perf_counter()
    if image is None:
        image = synthetic_image(size, mean=package.mean, std=package.std, seed=seed)
    options = dict(seed=seed, batch_size=batch_size, tile=tile, overlap=overlap,
                   sampling=sampling)
    warm = denoiser.denoise(image, n_samples=min(batch_size, n_samples), **options)  # warm-up
    t3 = time.perf_counter()
    run = time_denoise(denoiser, image, n_samples=n_samples, repeats=repeats, **options)
    effective_n = 1 if SamplingMode(sampling) is SamplingMode.MEAN else n_samples
    result = {
        "kind": "hdn-deploy runtime",
        "settings": {"image_shape": list(np.shape(image)), "n_samples": effective_n,
                     "batch_size": batch_size, "threads": threads, "repeats": repeats,
                     "tile": tile or package.recommended_tile,
                     "overlap": package.recommended_overlap if overlap is None else overlap,
                     "margin": warm.metadata["margin"],
                     "sampling": SamplingMode(sampling).value,
                     "graph_optimization": graph_optimization, "seed": seed},
        "backend": denoiser.backend.describe(),
        "model": {"path": str(package.path), "weights_sha256": package.model_hash},
        "cold_start_s": {"load_package": t1 - t0, "create_session": t2 - t1,
                         "first_call": t3 - t2, "total": t3 - t0},
        "tiles_per_image": run["tiles"],
        "tile_latency_s": percentiles(run["tile_latency_s"]),
        **_throughput(np.shape(image), effective_n, run["wall_s"], run["phases_s"]),
        "peak_rss_mb": peak_rss_mb(),
        "rss_mb": _current_rss_mb(),
    }
    denoiser.backend.close()
    return result


def _single_tile(denoiser: Denoiser, image: np.ndarray) -> np.ndarray:
    """The normalised image as one (1, 1, H, W) network input; H, W must be aligned."""
    image = np.asarray(image, dtype=np.float32)
    m = denoiser.package.spatial_multiple
    if image.ndim != 2 or image.shape[0] % m or image.shape[1] % m:
        raise InputError(f"expected a 2D image with sides that are multiples of {m}, "
                         f"got shape {image.shape}; crop it first")
    return ((image - denoiser.package.mean) / denoiser.package.std)[None, None].astype(np.float32)


def encoder_reuse(denoiser: Denoiser, image: np.ndarray, *, n_samples: int = 8,
                  repeats: int = 3, seed: int = 0) -> dict[str, Any]:
    """Encoder once per call vs encoder + decoder for every sample (both batch 1).

    ``image`` is one tile (sides multiples of the package's spatial multiple). Both
    variants run interleaved ``repeats`` times on the same eps.

    Returns
    -------
    dict
        ``encode_once`` and ``encode_per_sample``: seconds per sample (median, spread);
        ``encode_s`` and ``decode_s`` of one call; ``speedup`` (median ratio).
    """
    x = _single_tile(denoiser, image)
    levels = [(lv.index, lv.channels) for lv in denoiser.package.sampled_levels]
    sampler = LatentSampler(seed)
    h, w = x.shape[2:]
    eps = [sampler.tile_eps([i], levels, 0, 0, h, w) for i in range(n_samples)]
    backend = denoiser.backend
    backend.decode_samples(backend.encode(x), eps[0])  # warm-up
    once, per_sample, enc, dec = [], [], [], []
    for _ in range(repeats):
        start = time.perf_counter()
        features = backend.encode(x)
        mid = time.perf_counter()
        for e in eps:
            backend.decode_samples(features, e)
        end = time.perf_counter()
        once.append((end - start) / n_samples)
        enc.append(mid - start)
        dec.append((end - mid) / n_samples)
        start = time.perf_counter()
        for e in eps:
            backend.decode_samples(backend.encode(x), e)
        per_sample.append((time.perf_counter() - start) / n_samples)
    return {
        "image_shape": [int(h), int(w)], "n_samples": n_samples, "repeats": repeats,
        "encode_once": summarize(once), "encode_per_sample": summarize(per_sample),
        "encode_s": summarize(enc), "decode_s": summarize(dec),
        "speedup": float(np.median(per_sample) / np.median(once)),
    }


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
