"""Benchmark harness of the runtime: speed, memory and quality per time (no torch).

Used by ``hdn-deploy bench`` and ``benchmarks/run_cpu_suite.py``. Benchmarks are not
tests: the numbers depend on the machine and its load, so every timing is repeated and
reported as a median with its spread, and comparisons are ratios taken in one run.

Quality per time lives in :mod:`hdn_deploy.quality` and medians in
:mod:`hdn_deploy.summary`; their functions are re-exported here.
"""
from __future__ import annotations

import os
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ._version import __version__
from .denoiser import Denoiser
from .errors import ConfigError, InputError
from .latents import LatentSampler, SamplingMode
from .metrics import psnr
from .package import load_package
from .quality import (
    DEFAULT_TOLERANCE_DB,
    quality_curve,
    quality_grid,
    running_mmse,
    samples_needed,
)
from .summary import percentiles, summarize

__all__ = [
    "DEFAULT_TOLERANCE_DB",
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
