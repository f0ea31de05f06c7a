"""Denoise a dask array chunk by chunk, on one machine or a ``distributed`` cluster, with
the same bytes as :meth:`hdn_deploy.Denoiser.denoise` on the whole image.

Why the bytes agree: every chunk runs the tiles of the *whole image's* tile plan that
cover it (:meth:`Denoiser._denoise_region`), cut with the same reflected margins from the
chunk and its neighbours' pixels (``dask.array.overlap.overlap`` with a depth of one tile
and no boundary padding: the reflection at the image borders is the tiler's, not dask's,
which repeats the edge pixel), and draws the latent noise of those tiles from global
coordinates (latent contract 2, :mod:`hdn_deploy.latents`). Each pixel therefore sees
the same tiles, patches, noise, weights and additions, in the same order, as in one
process. The price: a tile that straddles a chunk border is run by every chunk it
touches (``DaskResult.metadata["tiles_run"]`` vs ``["tiles_in_plan"]``); chunks of
several tiles keep it small (about ``tile / chunk`` per axis).

Each worker process loads the model once (:func:`worker_denoiser`) and reuses it for
all its chunks. Requires the ``[big]`` extra (``dask[array]``, ``distributed``).
"""
from __future__ import annotations

import functools
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._optional import require
from .denoiser import Denoiser, _slice_seed
from .errors import ConfigError, InputError
from .range_check import check_intensity_range_blocks, model_range, range_report

__all__ = ["DaskResult", "denoise", "worker_denoiser"]

_UNSUPPORTED = ("keep_samples", "checkpoints", "timings", "out")
_lock = threading.Lock()


@dataclass(frozen=True)
class DaskResult:
    """Lazy result of :func:`denoise`.

    Attributes
    ----------
    mmse, std : dask.array.Array
        float32, the input's shape and chunks: MMSE and per-pixel std of the samples,
        in intensity units. Compute them together (``dask.compute(r.mmse, r.std)``) so
        that each chunk is denoised once.
    metadata : dict
        As ``DenoiseResult.metadata``, plus ``tiles_in_plan`` and ``tiles_run``.
    """

    mmse: Any
    std: Any
    metadata: dict[str, Any] = field(default_factory=dict)


@functools.lru_cache(maxsize=4)
def _cached(model: str, backend: str, threads: int | None) -> Denoiser:
    return Denoiser(model, backend=backend, threads=threads)


def worker_denoiser(model: str | Path, backend: str = "auto", threads: int | None = 1) -> Denoiser:
    """The process's :class:`Denoiser` for these arguments, loaded on first use: a dask
    worker loads the model once for all its chunks."""
    with _lock:
        return _cached(str(model), backend, threads)


def _check_array(array: Any) -> Any:
    da = require("dask.array", purpose="hdn_deploy.dask")
    if not isinstance(array, da.Array):
        raise InputError(f"expected a dask array, got {type(array).__name__}; wrap numpy "
                         "arrays with dask.array.from_array(a, chunks=...)")
    if array.dtype.kind not in "uif":
        raise InputError(f"expected a numeric image array, got dtype {array.dtype}")
    if array.ndim not in (2, 3) or array.size == 0:
        raise InputError(f"expected a 2D image (Y, X) or a stack (n, Y, X), got shape "
                         f"{array.shape}; split channels or extra axes first")
    return array


def _check_chunks(array: Any, depth: int) -> None:
    """Every Y/X chunk must hold a tile's worth of pixels (the overlap taken from each
    neighbour), unless the axis is one chunk."""
    for axis, name in ((-2, "Y"), (-1, "X")):
        sizes = array.chunks[axis]
        if len(sizes) > 1 and min(sizes) < depth:
            raise ConfigError(
                f"chunks along {name} must be at least the tile size ({depth} px) so that a "
                f"chunk and its neighbours hold every tile that covers it; got chunk sizes "
                f"{sorted(set(sizes))} (the last chunk counts too). Rechunk, e.g. "
                f"array.rechunk({{{array.ndim + axis}: {_even_chunk(sum(sizes), depth)}}}), "
                "or use a smaller tile")


def _even_chunk(size: int, depth: int, target: int = 4096) -> int:
    """A chunk length near ``target`` whose every chunk along an axis of ``size`` (the
    last one too) is at least ``depth``."""
    n = max(1, min(size // depth, round(size / max(target, depth))))
    return -(-size // n)


def _range_and_finite(array: Any, den: Denoiser, allow_out_of_range: bool) -> dict[str, Any]:
    """Intensity-range report of the whole array (one dask pass), refusing NaN/Inf."""
    import dask

    values = array.astype(np.float32)
    rng = model_range(den.package.manifest)
    lazy = [np.isfinite(values).all(), values.min(), values.max()]
    if rng is not None:
        lazy += [(values < rng.low).sum(), (values > rng.high).sum()]
    finite, low, high, *counts = dask.compute(*lazy)
    if not finite:
        raise InputError("image contains NaN or Inf values")
    if rng is None:  # warns once that the package stores no range
        return check_intensity_range_blocks([], den.package.manifest, package=den.package.path)
    return range_report(rng, int(counts[0]), int(counts[1]), int(values.size), float(low),
                        float(high), allow_out_of_range=allow_out_of_range)


def _block(block: np.ndarray, *, block_id: tuple[int, ...], starts: list[list[int]],
           chunks: tuple[tuple[int, ...], ...], shape: tuple[int, ...], depth: int,
           model: str, backend: str, threads: int | None, seed: int,
           options: dict[str, Any]) -> np.ndarray:
    """One chunk (with its overlap) -> ``(2, *chunk)`` float32: MMSE and std."""
    den = worker_denoiser(model, backend, threads)
    run = den._run_settings(**options)
    index = block_id[1:]
    lo = [starts[a][i] for a, i in enumerate(index)]
    size = [chunks[a][i] for a, i in enumerate(index)]
    frame_shape = tuple(shape[-2:])
    origin = tuple(max(0, lo[a] - depth) for a in (-2, -1))
    region = tuple(slice(lo[a], lo[a] + size[a]) for a in (-2, -1))
    planes = block if block.ndim == 3 else block[None]
    out = np.empty((2, *(size if block.ndim == 3 else [1] + size)), dtype=np.float32)
    z0 = lo[0] if block.ndim == 3 else 0
    for k, plane in enumerate(planes):
        mmse, std, _ = den._denoise_region(np.asarray(plane, dtype=np.float32), origin,
                                           frame_shape, region,
                                           slice_seed=_slice_seed(seed, z0 + k), run=run)
        out[0, k], out[1, k] = mmse, std
    return out if block.ndim == 3 else out[:, 0]


def _tiles_run(den: Denoiser, run: Any, array: Any) -> tuple[int, int]:
    """(tiles in the plans of all planes, tiles the chunks run)."""
    from .tiling import TileMerger

    plan = run.tiler.plan(tuple(array.shape[-2:]))
    m, n_planes = plan.margin, (array.shape[0] if array.ndim == 3 else 1)
    bounds = [np.cumsum((0,) + c) for c in array.chunks[-2:]]
    total = 0
    for y0, y1 in zip(bounds[0][:-1], bounds[0][1:]):
        for x0, x1 in zip(bounds[1][:-1], bounds[1][1:]):
            merger = TileMerger(plan, region=(slice(int(y0) + m, int(y1) + m),
                                              slice(int(x0) + m, int(x1) + m)))
            total += sum(merger.overlaps(t) for t in plan.tiles)
    return len(plan) * n_planes, total * n_planes


def denoise(array: Any, model: str | Path, *, backend: str = "auto", threads: int | None = 1,
            seed: int = 0, **options) -> DaskResult:
    """Denoise a dask array lazily, chunk by chunk (see the module docstring).

    Parameters
    ----------
    array : dask.array.Array
        2D ``(Y, X)`` or stack ``(n, Y, X)``, any real dtype, raw intensities; chunks of
        any size along the stack axis and of at least the tile size along Y and X.
    model : str or Path
        Model package folder, readable by every worker (same path on each machine).
    backend, threads
        As :class:`Denoiser`, per worker (default one thread: one dask thread per core).
    seed, **options
        As :meth:`Denoiser.iter_denoise` (``n_samples``, ``tile``, ``overlap``,
        ``margin``, ``sampling``, ``batch_size``, ``blend``, ``allow_out_of_range``,
        ``tolerance``); ``keep_samples``, ``checkpoints`` and ``timings`` are not
        available. Slice ``z`` of a stack uses the seed it has in one process.

    Returns
    -------
    DaskResult
        Lazy ``mmse`` and ``std``; computed with any scheduler (threads, processes, a
        ``distributed.Client``) they equal ``Denoiser.denoise``'s arrays byte for byte.

    Raises
    ------
    InputError
        Not a dask array, not 2D/3D numeric, NaN/Inf values, too far out of the model's
        range (OutOfRangeError; this check computes the input once).
    ConfigError
        Invalid options, or Y/X chunks smaller than the tile size.
    """
    da = require("dask.array", purpose="hdn_deploy.dask")
    array = _check_array(array)
    bad = sorted(set(options) & set(_UNSUPPORTED))
    if bad:
        raise ConfigError(f"{', '.join(bad)} not available with dask; use Denoiser.denoise")
    allow = bool(options.pop("allow_out_of_range", False))
    den = worker_denoiser(model, backend, threads)
    run = den._run_settings(**_defaults(options))
    depth = run.tiler.tile_size
    _check_chunks(array, depth)
    input_range = _range_and_finite(array, den, allow)
    overlapped = da.overlap.overlap(array, depth={array.ndim - 2: depth, array.ndim - 1: depth},
                                    boundary="none")
    starts = [list(np.cumsum((0,) + c)[:-1].tolist()) for c in array.chunks]
    fn = functools.partial(_block, starts=starts, chunks=array.chunks, shape=array.shape,
                           depth=depth, model=str(model), backend=backend, threads=threads,
                           seed=int(seed), options=_defaults(options))
    both = overlapped.map_blocks(fn, chunks=((2,), *array.chunks), new_axis=0,
                                 dtype=np.float32, meta=np.empty((0,) * (array.ndim + 1), np.float32))
    in_plan, run_tiles = _tiles_run(den, run, array)
    metadata = {**den._metadata(run, seed, array.shape), "input_range": input_range,
                "dask": True, "chunks": [list(c) for c in array.chunks],
                "tiles_in_plan": in_plan, "tiles_run": run_tiles}
    return DaskResult(mmse=both[0], std=both[1], metadata=metadata)


def _defaults(options: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments of ``Denoiser._run_settings`` from iter_denoise's options."""
    from .denoiser import DEFAULT_BATCH, DEFAULT_SAMPLES, DEFAULT_SAMPLING

    known = {"n_samples": DEFAULT_SAMPLES, "batch_size": DEFAULT_BATCH, "keep_samples": 0,
             "checkpoints": (), "sampling": DEFAULT_SAMPLING, "tile": None, "overlap": None,
             "margin": None, "blend": "hann", "timings": None, "tolerance": None,
             "mean_levels": ()}
    options = dict(options)
    if "mode" in options:
        from .options import DenoiseMode, parse

        if parse(DenoiseMode, options.pop("mode"), "mode") is not DenoiseMode.SAMPLER:
            raise ConfigError("mode='direct' is not available with dask (not implemented); "
                              "use Denoiser.denoise(mode='direct') or the sampler")
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ConfigError(f"unknown option(s) {', '.join(unknown)}")
    return {**known, **options}
