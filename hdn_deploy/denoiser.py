"""The public API: ``Denoiser`` loads a model package once and denoises images.

It owns the only denoising loop of hdn-deploy: for every slice and every tile, encode
once -> (per batch of samples) latents -> decode -> running moments, all on the
backend's device -> one host copy of the tile's moments (and kept samples) -> the tile
merger. Benchmarks, the demo and the CLI compose it through its options
(``checkpoints``, ``timings``, ``keep_samples``) and its public tile iterator
(:meth:`Denoiser.iter_denoise`); nothing else repeats the loop.
"""
from __future__ import annotations

import platform
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from ._version import __version__
from .adaptive import Tolerance, adaptive_metadata, should_stop
from .backends import Backend, create_backend
from .backends.base import EpsSpec, timed
from .errors import ConfigError, HDNWarning, InputError, PackageError
from .latents import LATENT_CONTRACT, LatentSampler, SamplingMode, _sampling_mode
from .metrics import DRIFT_LIMIT, tile_drift  # noqa: F401  (public here since 2026-12-01)
from .options import DenoiseMode, parse
from .package import ModelPackage, load_package
from . import outofcore
from .outofcore import ArrayOutputs
from .range_check import check_intensity_range_blocks
from .streaming import StreamResult, stream_frames
from .tiling import StreamingMerger, Tile, TileMerger, TilePlan, Tiler, read_tile

if TYPE_CHECKING:  # pragma: no cover
    from .explain import Explanation

DEFAULT_SAMPLES = 100
DEFAULT_BATCH = 1  # measured: on 2 CPU cores batches of 2-8 samples are not faster
DEFAULT_SAMPLING = SamplingMode.ANTITHETIC  # measured: 2 samples reach what mc needs 13 for
NO_STD = ("not available in direct mode: the direct denoiser outputs the MMSE in one pass and "
          "draws no posterior samples; use mode='sampler' for the std")
SEAM_MESSAGE = ("overlap=0: neighbouring tiles are not blended, which leaves visible seams "
                "(errors up to ~3x the noise std at tile borders); use an overlap of at least "
                "{multiple} (the package recommends {recommended})")


class SeamWarning(HDNWarning):
    """Tiles that do not overlap leave visible seams."""


class DriftWarning(HDNWarning):
    """A tile's MMSE is offset as a whole from the tile's input (see :func:`tile_drift`)."""


DRIFT_MESSAGE = ("the MMSE of the tile at (y={y}, x={x}) is offset from its input by {ratio:.2f} "
                 "x the residual's std (limit {limit}): the model may drift in tiles larger than "
                 "its {patch}-pixel training patches; compare with tile={small}, overlap={patch} "
                 "(--tile {small} --overlap {patch}), or train longer")


@dataclass(frozen=True)
class DenoiseResult:
    """Result of one call, in the input's intensity units.

    Attributes
    ----------
    mmse : numpy.ndarray
        float32, the input's shape: mean of the samples (the MMSE estimate).
    std : numpy.ndarray or None
        float32, per-pixel standard deviation of the samples (uncertainty); None in
        ``mode="direct"``, which draws no samples (``metadata["std"]`` says so).
    samples : numpy.ndarray or None
        float32 ``(k, *shape)``: the first k samples, when asked for.
    metadata : dict
        Seed, sampling settings, latent contract, model hash, backend and versions.
    checkpoints : dict
        ``{N: float32 MMSE of the first N samples}`` for each N asked for with
        ``checkpoints`` (empty otherwise); ``checkpoints[n_samples]`` equals ``mmse``.
    """

    mmse: np.ndarray
    std: np.ndarray | None
    samples: np.ndarray | None
    metadata: dict[str, Any] = field(default_factory=dict)
    checkpoints: dict[int, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class _Run:
    """Validated settings of one iter_denoise call."""

    n_samples: int
    batch_size: int
    keep: int
    marks: tuple[int, ...]  # checkpoint sample counts, ascending
    mode: SamplingMode
    tiler: Tiler
    timings: dict[str, float] | None
    tolerance: Tolerance | None = None
    direct: bool = False
    mean_levels: tuple[int, ...] = ()


@dataclass(frozen=True)
class Progress:
    """Yielded by :meth:`Denoiser.iter_denoise` after every tile.

    ``samples_used`` is the number of samples the last tile took (below ``n_samples``
    when a ``tolerance`` stopped it early); ``slice_index`` the slice it belongs to.
    ``result`` is set on the last event only.
    """

    tiles_done: int
    tiles_total: int
    result: DenoiseResult | None = None
    samples_used: int = 0
    slice_index: int = 0
    _preview: Callable[[], np.ndarray] | None = field(default=None, repr=False, compare=False)

    def current_mmse(self) -> np.ndarray:
        """The MMSE of the current slice so far: float32 ``(Y, X)`` in intensity units,
        NaN where no tile is done yet (for live display; computed on call, ~1 ms per
        megapixel). On the last event: the final MMSE of the last slice."""
        if self.result is not None:
            return self.result.mmse if self.result.mmse.ndim == 2 else self.result.mmse[-1]
        return self._preview()


def _slice_seed(seed: int, index: int) -> int:
    """Seed of slice ``index`` of a stack: slice 0 uses ``seed`` itself, so a 2D image and
    the first slice of a stack draw the same latents; others get independent streams."""
    if index == 0:
        return seed
    return int(np.random.SeedSequence([seed, index]).generate_state(1, np.uint64)[0])


def _batches(n_samples: int, batch_size: int, marks: Sequence[int]) -> Iterator[range]:
    """Sample index ranges of at most ``batch_size``, also cut at every checkpoint (moments
    are updated one sample at a time, so the cuts do not change a bit)."""
    stops = sorted({*marks, n_samples})
    start = 0
    for stop in stops:
        while start < stop:
            end = min(start + batch_size, stop)
            yield range(start, end)
            start = end


class Denoiser:
    """Load a model package once; denoise many images, from any number of threads.

    Parameters
    ----------
    model
        Model package folder (or a loaded :class:`ModelPackage`).
    backend
        ``"auto"``, ``"cpu"``, ``"cuda"``, ``"ort-tensorrt"`` or ``"tensorrt"``, or a
        Backend instance.
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

    # ------------------------------------------------------------------ public
    def denoise(self, image: np.ndarray, *, on_progress: Callable[[Progress], None] | None = None,
                **options) -> DenoiseResult:
        """Denoise a 2D image (Y, X) or a stack (n, Y, X), slice by slice.

        Keyword options are those of :meth:`iter_denoise`; ``on_progress`` (optional) is
        called with every :class:`Progress` event, e.g. to show
        ``event.current_mmse()`` live.

        Raises
        ------
        InputError
            For an image that is not a finite numeric 2D image or 3D stack.
        ConfigError
            For invalid options.
        """
        last = None
        for event in self.iter_denoise(image, **options):
            if on_progress is not None:
                on_progress(event)
            last = event
        return last.result

    def stream(self, frames: Iterable[np.ndarray], *, max_queue: int = 2,
               when_full: str = "block", **options) -> Iterator[StreamResult]:
        """Denoise 2D frames as they arrive (e.g. from a camera loop): a background thread
        pulls ``frames`` into a queue of at most ``max_queue``; when it is full the source
        waits (``when_full="block"``) or the frame is dropped (``"drop"``). Yields a
        :class:`~hdn_deploy.streaming.StreamResult` per frame, in order, with its
        latency. Other options as :meth:`iter_denoise`; frame i gets the seed of slice i
        of a stack. Raises InputError for a frame that is not 2D."""
        return stream_frames(self, frames, max_queue=max_queue, when_full=when_full, **options)

    def explain(self, image: np.ndarray, *, n_samples: int = 8, seed: int = 0,
                tile: int | None = None, overlap: int | None = None, margin: int | None = None,
                blend: str = "hann", batch_size: int = DEFAULT_BATCH,
                allow_out_of_range: bool = False,
                on_progress: Callable[[int, int], None] | None = None) -> "Explanation":
        """What each latent level encodes, for one 2D image (see :mod:`hdn_deploy.explain`):
        the std each sampled level adds alone (every other level at its posterior mean,
        eps = 0) and the MMSE with levels set to their mean from the finest up.

        Options are those of :meth:`iter_denoise` (``n_samples``: samples per view, 8);
        ``on_progress(done, total)`` after each of the ``2 L + 1`` runs. Returns an
        :class:`~hdn_deploy.explain.Explanation`; write it with
        :func:`~hdn_deploy.explain.write_explanation`.

        Raises
        ------
        InputError
            For anything but a finite 2D image, or one out of the model's range.
        ConfigError
            For invalid options.
        """
        from .explain import explain

        return explain(self, image, n_samples=n_samples, seed=seed, tile=tile, overlap=overlap,
                       margin=margin, blend=blend, batch_size=batch_size,
                       allow_out_of_range=allow_out_of_range, on_progress=on_progress)

    def iter_denoise(
        self,
        image: np.ndarray,
        *,
        n_samples: int = DEFAULT_SAMPLES,
        seed: int = 0,
        tile: int | None = None,
        overlap: int | None = None,
        margin: int | None = None,
        sampling: SamplingMode | str = DEFAULT_SAMPLING,
        keep_samples: int = 0,
        batch_size: int = DEFAULT_BATCH,
        blend: str = "hann",
        checkpoints: Sequence[int] = (),
        timings: dict[str, float] | None = None,
        allow_out_of_range: bool = False,
        tolerance: Tolerance | float | str | None = None,
        mode: DenoiseMode | str = DenoiseMode.SAMPLER,
        mean_levels: Sequence[int] = (),
        out: ArrayOutputs | None = None,
    ) -> Iterator[Progress]:
        """Denoise tile by tile, yielding a :class:`Progress` after every tile so callers
        can show progress or stop early; the last event carries the result.

        Parameters
        ----------
        image
            2D ``(Y, X)`` or stack ``(n, Y, X)``, any real dtype, raw intensities.
        n_samples, seed, sampling
            Posterior samples per pixel (100), run seed (0; slice ``z > 0`` of a stack
            uses a seed derived from it), ``"antithetic"`` (default), ``"mc"`` or
            ``"mean"`` (one pass with every eps = 0).
        tile, overlap, blend
            Tile side and overlap in pixels (package defaults) and ``"hann"`` or
            ``"constant"`` blending. ``overlap=0`` leaves seams: warns (SeamWarning).
            A tile whose MMSE is offset as a whole from its input (:func:`tile_drift` above
            ``DRIFT_LIMIT``; seen with models trained briefly, in tiles much larger than
            their training patches) warns (DriftWarning), once per 2D frame.
        margin
            Context pixels padded (by reflection) on every side before tiling and
            cropped afterwards, so borders and corners do not see the network's zero
            padding (default: half the package's recommended overlap; measured on the
            previous bundled model, 64 x 64 IHC crop: error of the outer 2-pixel ring 30.6
            without margin, 12.1 with 32 px, interior 9.4).
        keep_samples, batch_size
            Samples returned (0) and samples per decoder call (1); neither changes the
            MMSE or std.
        checkpoints
            Sample counts N at which the MMSE of the first N samples is also recorded
            (``DenoiseResult.checkpoints``): a quality-vs-samples curve from one run.
        timings
            None, or a dict that accumulates wall-clock seconds (``+=``) under
            ``"encode"``, ``"latents"``, ``"decode"``, ``"stats"`` and ``"merge"``.
        allow_out_of_range
            Denoise even when more than 10 % of the pixels lie outside the intensity range
            the model was trained on (see :mod:`hdn_deploy.range_check`); the shares are
            recorded in ``metadata["input_range"]`` either way.

        tolerance
            Adaptive sampling (see :mod:`hdn_deploy.adaptive`): stop each tile's sampling
            once the standard error of its MMSE is at or below this, in intensity units
            (``2.5``) or as a fraction of the noise std (``"0.05sigma"``); ``n_samples``
            is then the upper bound. The samples used per tile are in
            ``metadata["samples_per_tile"]`` (one list per slice, row-major tiles).
            None (default): exactly ``n_samples``. Not combinable with ``checkpoints``.
        mode
            ``"sampler"`` (default): average posterior samples (MMSE and std).
            ``"direct"``: one pass of the package's distilled direct denoiser per tile
            (``direct.onnx``, see ``hdn-deploy distill``), through the same tiling and
            blending; ``std`` is None, ``n_samples``, ``seed`` and ``sampling`` do not
            apply (``metadata["n_samples"]`` is 0) and ``keep_samples``, ``checkpoints``
            and ``tolerance`` are refused.
        mean_levels
            Sampled latent levels (indices, 0 finest) held at their posterior mean
            (eps = 0) in every sample; the other levels draw exactly the latents they
            draw without it (latent contract). Default none. With every sampled level
            listed, one pass as ``sampling="mean"``. Recorded in
            ``metadata["mean_levels"]`` when not empty. :meth:`explain` uses it.

        out
            Out of core (:mod:`hdn_deploy.outofcore`): an :class:`ArrayOutputs` whose
            ``mmse`` (and ``std``) are writable array-likes of the image's shape (numpy
            memmap, zarr array ...). ``image`` may then be any array-like that slices like
            numpy (zarr, tifffile's zarr store, memmap): it is read one band of tile rows at
            a time and finished rows are written to ``out`` as soon as no later tile touches
            them, so memory depends on the tile size and the image width, not its height.
            The values written are the bytes the in-memory path returns; the result's
            ``mmse`` and ``std`` are ``out``'s arrays. Not combinable with ``keep_samples``
            or ``checkpoints``; ``Progress.current_mmse`` is not available.

        Raises
        ------
        PackageError
            ``mode="direct"`` with a package that has no direct graph.
        ------
        OutOfRangeError
            (an InputError) above 10 % of pixels out of range without
            ``allow_out_of_range``; above 1 % an OutOfRangeWarning is issued.
        ConfigError
            For invalid options (listed in the message).
        """
        array = self._check_image(image) if out is None else outofcore.check_source(image)
        run = self._run_settings(n_samples, batch_size, keep_samples, checkpoints, sampling,
                                 tile, overlap, margin, blend, timings, tolerance, mode,
                                 mean_levels)
        if out is not None:  # checked before the range check reads a big image once
            self._check_out(out, run, array.shape)
        input_range = self._check_range(array, out is not None, allow_out_of_range)
        frames = (outofcore.planes(array) if out is not None
                  else list(array.reshape(-1, *array.shape[-2:])))
        plans = [run.tiler.plan(f.shape) for f in frames]
        self._warn_seams(run.tiler, plans)
        total, done = sum(len(p) for p in plans), 0
        merged, used = [], []
        for z, (frame, plan) in enumerate(zip(frames, plans)):
            sampler = LatentSampler(_slice_seed(seed, z), mode=run.mode,
                                    mean_levels=run.mean_levels)
            if out is None:
                merger = run.tiler.merger(plan)
                tiles = run.tiler.iter_tiles(self._normalise(frame), plan)
            else:
                merger = StreamingMerger(plan, self._writer(out, z, len(array.shape)),
                                         blend=run.tiler.blend)
                tiles = run.tiler.iter_tiles_lazy(frame, plan, self._normalise)
            used.append([])
            for count in self._iter_frame(tiles, merger, run=run, sampler=sampler):
                used[-1].append(count)
                done += 1
                if done < total:
                    yield Progress(done, total, samples_used=count, slice_index=z,
                                   _preview=lambda m=merger: self._preview(m))
            merged.append(timed(run.timings, "merge", merger.finalize))
        if out is None:
            result = self._result(merged, array, run, seed)
        else:
            result = DenoiseResult(mmse=out.mmse, std=out.std, samples=None,
                                   metadata={**self._metadata(run, seed, array.shape),
                                             "out_of_core": True})
        result.metadata.update(input_range=input_range, **adaptive_metadata(run.tolerance, used))
        yield Progress(total, total, result, samples_used=used[-1][-1], slice_index=len(frames) - 1)

    def _denoise_region(self, window: np.ndarray, origin: tuple[int, int],
                        image_shape: tuple[int, int], region: tuple[slice, slice], *,
                        slice_seed: int, run: _Run) -> tuple[np.ndarray, np.ndarray, int]:
        """MMSE and std (raw-unit float32) of the image pixels ``region`` (rows, columns)
        of one 2D frame of ``image_shape``, from ``window``: raw pixels of the frame from
        ``origin`` on, wide enough for every tile of the frame's plan that covers the
        region. Same bytes as those pixels of the whole-frame result: same plan, patches,
        latents (global coordinates) and additions. Also returns the number of tiles run.
        Raises ConfigError when the window is too small (see ``read_tile``)."""
        plan = run.tiler.plan(image_shape)
        m = plan.margin
        rows, cols = region
        merger = TileMerger(plan, blend=run.tiler.blend,
                            region=(slice(rows.start + m, rows.stop + m),
                                    slice(cols.start + m, cols.stop + m)))
        covering = [t for t in plan.tiles if merger.overlaps(t)]
        normalised = self._normalise(window)
        tiles = ((t, read_tile(normalised, origin, plan, t)) for t in covering)
        sampler = LatentSampler(slice_seed, mode=run.mode, mean_levels=run.mean_levels)
        for _ in self._iter_frame(tiles, merger, sampler=sampler, run=run):
            pass
        merged = merger.finalize()
        return self._raw_mmse(merged[0]), self._raw_std(merged[1]), len(covering)

    def _check_range(self, array, lazy: bool, allow_out_of_range: bool) -> dict[str, Any]:
        """The intensity-range report (and, for a lazy source, the finiteness check, one
        band at a time)."""
        blocks = (map(outofcore.check_finite, outofcore.iter_bands(array)) if lazy
                  else [array])
        return check_intensity_range_blocks(blocks, self.package.manifest,
                                            package=self.package.path,
                                            allow_out_of_range=allow_out_of_range)

    @staticmethod
    def _check_out(out: ArrayOutputs, run: _Run, shape: tuple[int, ...]) -> None:
        if not isinstance(out, ArrayOutputs):
            raise ConfigError(f"out must be an hdn_deploy.ArrayOutputs, got {type(out).__name__}")
        if run.keep or run.marks:
            raise ConfigError("keep_samples and checkpoints are not available out of core "
                              "(out=); denoise in memory to get them")
        if run.direct and out.std is not None:
            raise ConfigError("mode='direct' gives no std: pass ArrayOutputs(mmse, None)")
        outofcore.check_targets(out, shape)

    def _writer(self, out: ArrayOutputs, z: int, ndim: int) -> Callable[[slice, np.ndarray], None]:
        """Sink of a StreamingMerger: blended rows of slice ``z`` -> raw-unit float32 rows
        of ``out`` (the conversion of :meth:`_result`, element by element)."""
        def write(rows: slice, block: np.ndarray) -> None:
            for target, values in ((out.mmse, self._raw_mmse(block[0])),
                                   (out.std, None if out.std is None else self._raw_std(block[1]))):
                if target is not None:
                    plane = target if ndim == 2 else outofcore.planes(target)[z]
                    plane[rows, :] = values
        return write

    def _normalise(self, frame: np.ndarray) -> np.ndarray:
        """Raw intensities -> the network's float32 units (element by element)."""
        frame = np.asarray(frame).astype(np.float32, copy=False)
        return ((frame - self.package.mean) / self.package.std).astype(np.float32)

    def _raw_mmse(self, mean: np.ndarray) -> np.ndarray:
        return (mean * self.package.std + self.package.mean).astype(np.float32)

    def _raw_std(self, variance: np.ndarray) -> np.ndarray:
        std = np.sqrt(np.maximum(variance, 0.0))
        return (std * np.float32(self.package.std)).astype(np.float32)

    # ----------------------------------------------------------------- helpers
    def _run_settings(self, n_samples, batch_size, keep_samples, checkpoints, sampling, tile,
                      overlap, margin, blend, timings, tolerance=None,
                      denoise_mode=DenoiseMode.SAMPLER, mean_levels=()) -> _Run:
        direct = parse(DenoiseMode, denoise_mode, "mode") is DenoiseMode.DIRECT
        if direct:
            self._check_direct(keep_samples, checkpoints, tolerance, mean_levels)
            n_samples, keep_samples, checkpoints, tolerance = 1, 0, (), None
        mode = _sampling_mode(sampling)
        mean_levels = self._mean_levels(mean_levels)
        if set(mean_levels) >= {lv.index for lv in self.package.sampled_levels}:
            mode = SamplingMode.MEAN  # nothing left to sample: one pass
        if mode is SamplingMode.MEAN:
            n_samples = 1
        if n_samples < 1 or batch_size < 1 or keep_samples < 0:
            raise ConfigError(
                f"n_samples ({n_samples}) and batch_size ({batch_size}) must be >= 1 and "
                f"keep_samples ({keep_samples}) >= 0"
            )
        marks = tuple(sorted({int(n) for n in checkpoints}))
        if marks and (marks[0] < 1 or marks[-1] > n_samples):
            raise ConfigError(f"checkpoints must lie in [1, n_samples={n_samples}], got {list(marks)}")
        tolerance = None if mode is SamplingMode.MEAN else Tolerance.parse(tolerance)
        if tolerance is not None and marks:
            raise ConfigError("checkpoints and tolerance cannot be combined (a tile may stop "
                              "before a checkpoint); use one or the other")
        pkg = self.package
        overlap = pkg.recommended_overlap if overlap is None else overlap
        tiler = Tiler(tile or pkg.recommended_tile, overlap, multiple=pkg.spatial_multiple,
                      blend=blend, margin=pkg.recommended_overlap // 2 if margin is None else margin)
        return _Run(n_samples=n_samples, batch_size=batch_size, keep=min(keep_samples, n_samples),
                    marks=marks, mode=mode, tiler=tiler, timings=timings, tolerance=tolerance,
                    direct=direct, mean_levels=mean_levels)

    def _check_direct(self, keep_samples, checkpoints, tolerance, mean_levels) -> None:
        if not self.package.has_direct:
            raise PackageError(
                f"{self.package.path}: mode='direct' needs a package with a direct denoiser "
                "graph (direct.onnx), and this one has none. Add one: `hdn-deploy distill "
                "CHECKPOINT DATA -o RUN`, then `hdn-deploy export PACKAGE -o NEW --direct RUN`; "
                "or use mode='sampler'")
        asked = [name for name, value in (("keep_samples", keep_samples),
                                          ("checkpoints", tuple(checkpoints)),
                                          ("tolerance", tolerance),
                                          ("mean_levels", tuple(mean_levels))) if value]
        if asked:
            raise ConfigError(f"{', '.join(asked)}: not available in direct mode (it draws no "
                              "posterior samples); use mode='sampler'")

    def _mean_levels(self, levels: Sequence[int]) -> tuple[int, ...]:
        """Sorted, checked ``mean_levels``: ConfigError for anything but sampled levels."""
        sampled = [lv.index for lv in self.package.sampled_levels]
        if isinstance(levels, (str, bytes)) or not all(
                isinstance(lv, (int, np.integer)) and not isinstance(lv, bool) for lv in levels):
            raise ConfigError(f"mean_levels must be a sequence of level indices, got {levels!r}")
        chosen = sorted({int(lv) for lv in levels})
        wrong = [lv for lv in chosen if lv not in sampled]
        if wrong:
            uncond = list(self.package.manifest.uncond_levels)
            raise ConfigError(f"mean_levels {wrong} are not sampled levels of this model "
                              f"(sampled: {sampled}; unconditional, always at their mean: "
                              f"{uncond})")
        return tuple(chosen)

    def _warn_seams(self, tiler: Tiler, plans: list[TilePlan]) -> None:
        if tiler.overlap == 0 and any(len(p) > 1 for p in plans):
            warnings.warn(SEAM_MESSAGE.format(multiple=tiler.multiple,
                                              recommended=self.package.recommended_overlap),
                          SeamWarning, stacklevel=4)

    def _iter_frame(self, tiles: Iterable[tuple[Tile, np.ndarray]], merger: TileMerger, *,
                    sampler: LatentSampler, run: _Run) -> Iterator[int]:
        """Denoise the tiles of one 2D frame (normalised patches) into ``merger``: adds
        every tile's stack ``[mean, variance, *kept samples, *checkpoint means]`` and yields
        its sample count. Variances are blended, not second moments: where overlapping
        tiles disagree (tiling error), that disagreement is not posterior uncertainty and
        must not show up in the std. The tiles may be a subset of the plan (a dask chunk,
        :mod:`hdn_deploy.dask`): eps depends on global coordinates only."""
        warned = False
        for tile, patch in tiles:
            stack, count = self._tile_stack(patch, tile, sampler, run)
            if not warned:
                warned = self._warn_drift(patch, stack[0], tile)
            timed(run.timings, "merge", merger.add, tile, stack)
            yield count

    def _warn_drift(self, patch: np.ndarray, mmse: np.ndarray, tile: Tile) -> bool:
        """DriftWarning (once per frame) when the tile's MMSE is offset from its input."""
        ratio = tile_drift(patch, mmse)
        if ratio <= DRIFT_LIMIT:
            return False
        manifest = self.package.manifest
        patch_size = manifest.training_patch_size or manifest.recommended_overlap
        warnings.warn(DRIFT_MESSAGE.format(y=tile.y0, x=tile.x0, ratio=ratio, limit=DRIFT_LIMIT,
                                           patch=patch_size, small=2 * patch_size),
                      DriftWarning, stacklevel=2)
        return True

    def _tile_stack(self, patch: np.ndarray, tile: Tile, sampler: LatentSampler,
                    run: _Run) -> tuple[np.ndarray, int]:
        """One tile through the backend: ``(2 + keep + len(marks), h, w)`` float64 and the
        number of samples drawn (fewer than n_samples when the tolerance is met)."""
        backend = self.backend
        if run.direct:
            mmse = timed(run.timings, "decode", backend.direct, patch[None, None])
            return mmse[0].astype(np.float64), 0
        features = timed(run.timings, "encode", backend.encode, patch[None, None])
        paired = run.mode is SamplingMode.ANTITHETIC
        moments = backend.moments(patch.shape, keep=run.keep,
                                  pairs=paired and run.tolerance is not None)
        snapshots = []
        for indices in _batches(run.n_samples, run.batch_size, run.marks):
            spec = EpsSpec(sampler, tuple(indices), tile.y0, tile.x0)
            backend.decode(features, spec, moments, timings=run.timings)
            if moments.count in run.marks:
                snapshots.append(moments.mean())  # copies the mean only
            if should_stop(moments, patch, run.tolerance, scale=self.package.std,
                           paired=paired, minimum=run.keep):
                break
        host = moments.to_host()
        return np.concatenate([host.mean[None], host.variance[None], host.samples,
                               np.asarray(snapshots).reshape(-1, *patch.shape)]), host.count

    def _preview(self, merger) -> np.ndarray:
        """Raw-unit float32 MMSE of the tiles merged so far (NaN elsewhere)."""
        if isinstance(merger, StreamingMerger):
            raise ConfigError("current_mmse() is not available out of core (out=): finished "
                              "rows are in out.mmse")
        partial = merger.finalize(allow_partial=True)[0]
        return (partial * self.package.std + self.package.mean).astype(np.float32)

    def _result(self, merged: list[np.ndarray], array: np.ndarray, run: _Run,
                seed: int) -> DenoiseResult:
        """Raw-unit float32 result from the merged per-slice stacks."""
        mean = np.stack([m[0] for m in merged])
        squeeze = (lambda a: a[0]) if array.ndim == 2 else (lambda a: a)
        raw = self._raw_mmse
        if run.direct:
            return DenoiseResult(mmse=squeeze(raw(mean)), std=None, samples=None,
                                 metadata=self._metadata(run, seed, array.shape))
        var = np.stack([m[1] for m in merged])
        kept = np.stack([m[2:2 + run.keep] for m in merged], axis=1)  # (k, n, Y, X)
        marks = {n: np.stack([m[2 + run.keep + i] for m in merged]) for i, n in enumerate(run.marks)}
        samples = None
        if run.keep:
            samples = raw(kept[:, 0] if array.ndim == 2 else kept)
        return DenoiseResult(
            mmse=squeeze(raw(mean)), std=squeeze(self._raw_std(var)),
            samples=samples, metadata=self._metadata(run, seed, array.shape),
            checkpoints={n: squeeze(raw(m)) for n, m in marks.items()})

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

    def _metadata(self, run: _Run, seed: int, shape: tuple[int, ...]) -> dict[str, Any]:
        tiler = run.tiler
        direct = {"mode": DenoiseMode.DIRECT.value, "n_samples": 0, "sampling": None,
                  "std": NO_STD, "direct_sha256": self.package.manifest.graphs.direct.sha256,
                  } if run.direct else {"mode": DenoiseMode.SAMPLER.value}
        extra = {"mean_levels": list(run.mean_levels)} if run.mean_levels else {}
        return {
            "software": "hdn-deploy",
            "hdn_deploy_version": __version__,
            "numpy_version": np.__version__,
            "python_version": platform.python_version(),
            "model_sha256": self.package.model_hash,
            "model_path": str(self.package.path),
            "seed": int(seed),
            "n_samples": int(run.n_samples),
            "sampling": run.mode.value,
            "latent_contract": LATENT_CONTRACT,
            "tile": tiler.tile_size,
            "overlap": tiler.overlap,
            "margin": tiler.margin,
            "blend": tiler.blend.value,
            "batch_size": int(run.batch_size),
            "backend": self.backend.describe(),
            "shape": list(shape),
            **direct,
            **extra,
        }
