"""The public API: ``Denoiser`` loads a model package once and denoises images.

It only composes the pieces: package (manifest) -> backend (graphs) -> tiler (splitter
and merger) -> latent sampler (seeded eps) -> running moments (MMSE and std).
"""
from __future__ import annotations

import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ._version import __version__
from .backends import Backend, create_backend
from .errors import ConfigError, InputError
from .latents import LatentSampler, SamplingMode, _sampling_mode
from .package import ModelPackage, load_package
from .range_check import check_intensity_range
from .stats import RunningMoments
from .tiling import Tile, Tiler

DEFAULT_SAMPLES = 100
DEFAULT_BATCH = 1  # measured: on 2 CPU cores batches of 2-8 samples are not faster
DEFAULT_SAMPLING = SamplingMode.ANTITHETIC  # measured: 2 samples reach what mc needs 13 for


@dataclass(frozen=True)
class DenoiseResult:
    """Result of one call, in the input's intensity units.

    Attributes
    ----------
    mmse : numpy.ndarray
        float32, the input's shape: mean of the samples (the MMSE estimate).
    std : numpy.ndarray
        float32, per-pixel standard deviation of the samples (uncertainty).
    samples : numpy.ndarray or None
        float32 ``(k, *shape)``: the first k samples, when asked for.
    metadata : dict
        Seed, sampling settings, model hash, backend and versions.
    """

    mmse: np.ndarray
    std: np.ndarray
    samples: np.ndarray | None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Run:
    """Settings and progress counter of one iter_denoise call."""

    n_samples: int
    batch_size: int
    keep: int
    timings: dict[str, float] | None
    done: int
    total: int


@dataclass(frozen=True)
class Progress:
    """Yielded by :meth:`Denoiser.iter_denoise` after every tile."""

    tiles_done: int
    tiles_total: int
    result: DenoiseResult | None = None  # set on the last event only


def _slice_seed(seed: int, index: int) -> int:
    """Seed of slice ``index`` of a stack: slice 0 uses ``seed`` itself, so a 2D image and
    the first slice of a stack draw the same latents; others get independent streams."""
    if index == 0:
        return seed
    return int(np.random.SeedSequence([seed, index]).generate_state(1, np.uint64)[0])


def _timed(timings: dict[str, float] | None, phase: str, func, *args):
    """Call ``func(*args)``; when ``timings`` is a dict, add the seconds spent to ``phase``."""
    if timings is None:
        return func(*args)
    start = time.perf_counter()
    out = func(*args)
    timings[phase] = timings.get(phase, 0.0) + time.perf_counter() - start
    return out


class Denoiser:
    """Load a model package once; denoise many images, from any number of threads.

    Parameters
    ----------
    model
        Model package folder (or a loaded :class:`ModelPackage`).
    backend
        ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"ort-tensorrt"``, or a Backend instance.
    threads
        CPU threads for the backend (None: the backend's default).

    Examples
    --------
    >>> den = Denoiser("model/")                              # doctest: +SKIP
    >>> res = den.denoise(image, n_samples=100, seed=1)       # doctest: +SKIP
    >>> res.mmse, res.std                                     # doctest: +SKIP
    """

    def __init__(self, model: str | Path | ModelPackage, *, backend: str | Backend = "auto",
                 threads: int | None = None, **backend_options):
        self.package = model if isinstance(model, ModelPackage) else load_package(model)
        self.backend = (backend if isinstance(backend, Backend)
                        else create_backend(backend, self.package, threads=threads, **backend_options))
        self._levels = [(lv.index, lv.channels) for lv in self.package.sampled_levels]

    # ------------------------------------------------------------------ public
    def denoise(self, image: np.ndarray, **options) -> DenoiseResult:
        """Denoise a 2D image (Y, X) or a stack (n, Y, X), slice by slice.

        Keyword options: ``n_samples`` (100), ``seed`` (0), ``tile`` and ``overlap``
        (package defaults), ``sampling`` ("antithetic" (default), "mc" or "mean"), ``keep_samples``
        (0), ``batch_size`` (samples per decoder call, 1), ``blend`` ("hann"), ``timings``
        (None, or a dict that accumulates seconds per phase; see :meth:`iter_denoise`),
        ``allow_out_of_range`` (False; see :mod:`hdn_deploy.range_check`).

        Raises OutOfRangeError (an InputError) when more than 10 % of the pixels lie
        outside the intensity range the model was trained on, unless
        ``allow_out_of_range=True``; warns (OutOfRangeWarning) above 1 %. The shares are
        in ``metadata["input_range"]``.
        """
        last = None
        for event in self.iter_denoise(image, **options):
            last = event
        return last.result

    def iter_denoise(
        self,
        image: np.ndarray,
        *,
        n_samples: int = DEFAULT_SAMPLES,
        seed: int = 0,
        tile: int | None = None,
        overlap: int | None = None,
        sampling: SamplingMode | str = DEFAULT_SAMPLING,
        keep_samples: int = 0,
        batch_size: int = DEFAULT_BATCH,
        blend: str = "hann",
        timings: dict[str, float] | None = None,
        allow_out_of_range: bool = False,
    ) -> Iterator[Progress]:
        """Like :meth:`denoise`, but yields a :class:`Progress` after every tile so callers
        can show progress or stop early; the last event carries the result.

        ``timings``: when a dict is given, wall-clock seconds are added (``+=``, so one dict
        can sum several calls) under ``"encode"`` (bottom-up graph), ``"latents"`` (drawing
        eps), ``"decode"`` (top-down graph), ``"stats"`` (running moments) and ``"merge"``
        (blending tiles into the image). None (default) measures nothing."""
        array = self._check_image(image)
        input_range = check_intensity_range(array, self.package.manifest,
                                            package=self.package.path,
                                            allow_out_of_range=allow_out_of_range)
        mode = _sampling_mode(sampling)
        if mode is SamplingMode.MEAN:
            n_samples = 1
        if n_samples < 1 or batch_size < 1 or keep_samples < 0:
            raise ConfigError(
                f"n_samples ({n_samples}) and batch_size ({batch_size}) must be >= 1 and "
                f"keep_samples ({keep_samples}) >= 0"
            )
        tiler = Tiler(tile or self.package.recommended_tile,
                      self.package.recommended_overlap if overlap is None else overlap,
                      multiple=self.package.spatial_multiple, blend=blend)
        stack = array[None] if array.ndim == 2 else array
        keep = min(keep_samples, n_samples)
        plans = [tiler.plan(s.shape) for s in stack]
        total = sum(len(p) for p in plans)
        mmse = np.empty(stack.shape, np.float32)
        std = np.empty(stack.shape, np.float32)
        kept = np.empty((keep, *stack.shape), np.float32) if keep else None
        run = _Run(n_samples=n_samples, batch_size=batch_size, keep=keep, timings=timings,
                   done=0, total=total)
        for z, (frame, plan) in enumerate(zip(stack, plans)):
            sampler = LatentSampler(_slice_seed(seed, z), mode=mode)
            mean, sd, samples = yield from self._iter_frame(frame, plan, tiler, sampler, run)
            mmse[z] = mean * self.package.std + self.package.mean
            std[z] = sd * self.package.std
            if keep:
                kept[:, z] = samples * self.package.std + self.package.mean
        squeeze = array.ndim == 2
        samples = None if kept is None else (kept[:, 0] if squeeze else kept)
        metadata = self._metadata(seed=seed, n_samples=n_samples, mode=mode, tiler=tiler,
                                  batch_size=batch_size, shape=array.shape)
        metadata["input_range"] = input_range
        yield Progress(total, total, DenoiseResult(
            mmse=mmse[0] if squeeze else mmse, std=std[0] if squeeze else std,
            samples=samples, metadata=metadata))

    # ----------------------------------------------------------------- helpers
    def _iter_frame(self, frame: np.ndarray, plan, tiler: Tiler, sampler: LatentSampler,
                    run: "_Run"):
        """Denoise one 2D frame tile by tile (normalised units); yields Progress, returns
        (mean, std, kept samples or None)."""
        merger = tiler.merger(plan)
        kept_sum = np.zeros((run.keep, *plan.padded_shape)) if run.keep else None
        kept_weight = np.zeros(plan.padded_shape) if run.keep else None
        normalised = ((frame - self.package.mean) / self.package.std).astype(np.float32)
        for tile, patch in tiler.iter_tiles(normalised, plan):
            moments = self._tile_moments(patch, tile, sampler, run.n_samples, run.batch_size,
                                         run.keep, run.timings)
            _timed(run.timings, "merge", merger.add, tile, moments.mean(), moments.second_moment())
            if run.keep:
                window = merger.window(tile)
                kept_sum[(slice(None), *tile.slices)] += window * moments.samples
                kept_weight[tile.slices] += window
            run.done += 1
            if run.done < run.total:
                yield Progress(run.done, run.total)
        mean, sd = _timed(run.timings, "merge", merger.finalize)
        if not run.keep:
            return mean, sd, None
        h, w = plan.image_shape
        return mean, sd, kept_sum[:, :h, :w] / kept_weight[:h, :w]

    def _check_image(self, image: np.ndarray) -> np.ndarray:
        try:
            array = np.asarray(image)
        except (TypeError, ValueError) as exc:  # ragged nested lists and the like
            raise InputError(f"cannot use the image as an array: {exc}") from exc
        if array.dtype.kind not in "uif":
            raise InputError(f"expected a numeric image array, got dtype {array.dtype}")
        if array.ndim not in (2, 3) or array.size == 0:
            raise InputError(
                f"expected a 2D image (Y, X) or a stack (n, Y, X), got shape {array.shape}; "
                "split channels or extra axes first"
            )
        array = array.astype(np.float32, copy=False)
        if not np.isfinite(array).all():
            raise InputError("image contains NaN or Inf values")
        return array

    def _tile_moments(self, patch: np.ndarray, tile: Tile, sampler: LatentSampler,
                      n_samples: int, batch_size: int, keep: int,
                      timings: dict[str, float] | None = None) -> RunningMoments:
        features = _timed(timings, "encode", self.backend.encode, patch[None, None])
        moments = RunningMoments(patch.shape, keep=keep)
        for start in range(0, n_samples, batch_size):
            indices = list(range(start, min(start + batch_size, n_samples)))
            eps = _timed(timings, "latents", sampler.tile_eps, indices, self._levels,
                         tile.y0, tile.x0, tile.height, tile.width)
            decoded = _timed(timings, "decode", self.backend.decode, features, eps)
            _timed(timings, "stats", moments.update, decoded[:, 0])
        return moments

    def _metadata(self, *, seed, n_samples, mode, tiler, batch_size, shape) -> dict[str, Any]:
        return {
            "software": "hdn-deploy",
            "hdn_deploy_version": __version__,
            "numpy_version": np.__version__,
            "python_version": platform.python_version(),
            "model_sha256": self.package.model_hash,
            "model_path": str(self.package.path),
            "seed": int(seed),
            "n_samples": int(n_samples),
            "sampling": mode.value,
            "tile": tiler.tile_size,
            "overlap": tiler.overlap,
            "blend": tiler.blend.value if hasattr(tiler.blend, "value") else str(tiler.blend),
            "batch_size": int(batch_size),
            "backend": self.backend.describe(),
            "shape": list(shape),
        }
