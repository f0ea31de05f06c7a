"""Seeded latent noise for the HDN sampler, independent of tiling, batching and device.

The sampler network turns, for every sampled level ``l``, a standard-normal tensor
``eps`` of shape ``(N, C_l, H / 2**(l+1), W / 2**(l+1))`` into the posterior sample
``z_l = mu_l + sigma_l * eps``. This module produces those ``eps``.

Contract (latent contract version 2, :data:`LATENT_CONTRACT`)
-------------------------------------------------------------
Every value of ``eps`` is a **pure function** of (seed, sample index, level, channel,
global latent row ``y``, global latent column ``x``) and of ``mode``, computable element
by element on any device: it does not depend on batching, on the tile layout, on which
tiles run first, on threads, or on the device. Overlapping tiles therefore see the same
latent noise on their shared region, and a run is reproducible from its seed alone.

The value is one output lane of Philox4x32-10 (see :mod:`hdn_deploy.philox`)::

    key     = (seed & 0xFFFFFFFF, seed >> 32)
    counter = (x >> 2, y, (level << 24) | channel, stream)
    eps     = box_muller(philox4x32_10(counter, key))[x & 3]

``stream`` is the sample index in ``"mc"`` mode; in ``"antithetic"`` mode samples ``2k``
and ``2k + 1`` share stream ``2k`` and sample ``2k + 1`` gets the negated value (pairs
have exactly opposite noise, which reduces the variance of the MMSE); in ``"mean"`` mode
``eps`` is zero. Levels listed in a sampler's ``mean_levels`` get ``eps = 0`` in every mode
(the level at its posterior mean, ``z = mu``); the other levels keep exactly the values
above, so holding some levels at their mean never changes the noise of the rest.
Limits: seed < 2**64, sample index < 2**32, level < 64, channels < 2**24, latent
coordinates < 2**32.

Agreement across devices: the Philox words and the uniforms derived from them are
integers and exact float32 values, hence bit-identical on every device. The normals
use float32 ``log``, ``sqrt``, ``cos`` and ``sin``: numpy on one machine gives the same
bytes every run (same numpy build and CPU), and the CUDA kernel
(:mod:`hdn_deploy.latents_cuda`) gives the same bytes every run on one GPU, but CPU and
GPU agree only to float32 rounding of those functions (a few units in the last place,
absolute differences below 1e-5).

Version 1 (hdn-deploy <= 0.1.0, no ``latent_contract`` key in output metadata) drew
``numpy.random.Philox`` (4x64) blocks of 32 x 32 latent positions with the ziggurat
method; it could not run on a device. Outputs of version 2 differ from version 1 by
Monte-Carlo noise only.

Cost: measured by ``benchmarks/latent_throughput.py`` (see the README).
"""
from __future__ import annotations

import enum
from concurrent.futures import ThreadPoolExecutor
from typing import Collection, Sequence

import numpy as np

from .errors import ConfigError
from .philox import box_muller, philox4x32

__all__ = ["SamplingMode", "LatentSampler", "LATENT_CONTRACT"]

LATENT_CONTRACT = 2  # recorded in output metadata as "latent_contract"
_MAX_U64 = 2**64
_MAX_SAMPLE = 2**32
_MAX_LEVEL = 64
_MAX_CHANNELS = 2**24
_CHUNK = 1 << 14  # Philox counters per vectorised pass (keeps the work arrays in cache)


class SamplingMode(str, enum.Enum):
    """How latent noise is drawn: ``mc``, ``antithetic`` or ``mean``."""

    MC = "mc"
    ANTITHETIC = "antithetic"
    MEAN = "mean"


def _sampling_mode(value: SamplingMode | str) -> SamplingMode:
    try:
        return SamplingMode(value)
    except ValueError:
        options = ", ".join(repr(m.value) for m in SamplingMode)
        raise ConfigError(f"unknown sampling mode {value!r}; expected one of {options}") from None


def _check_int(name: str, value: object, *, low: int = 0, high: int = _MAX_U64) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ConfigError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    value = int(value)
    if not low <= value < high:
        raise ConfigError(f"{name} must be in [{low}, {high}), got {value}")
    return value


class LatentSampler:
    """Deterministic standard-normal latent noise, addressed by global coordinates.

    Parameters
    ----------
    seed : int
        Run seed in ``[0, 2**64)``; it is the Philox key.
    mode : SamplingMode or str, optional
        ``"mc"`` (independent samples, default), ``"antithetic"`` (sample ``2k+1``
        uses ``-eps`` of sample ``2k``) or ``"mean"`` (all zeros).
    workers : int, optional
        Threads drawing different samples in parallel (default 1). Results do not
        depend on it.
    mean_levels : collection of int, optional
        Latent levels whose eps is zero in every mode (held at their posterior mean);
        default none.

    Examples
    --------
    >>> sampler = LatentSampler(42)
    >>> eps = sampler.tile_eps([0, 1], [(0, 32), (1, 32)], 0, 0, 256, 256)
    >>> [e.shape for e in eps]
    [(2, 32, 128, 128), (2, 32, 64, 64)]
    """

    def __init__(
        self,
        seed: int,
        *,
        mode: SamplingMode | str = SamplingMode.MC,
        workers: int = 1,
        mean_levels: Collection[int] = (),
    ) -> None:
        self._seed = _check_int("seed", seed)
        self._mode = _sampling_mode(mode)
        self._workers = _check_int("workers", workers, low=1, high=1025)
        self._mean_levels = frozenset(_check_int("mean level", lv, high=_MAX_LEVEL)
                                      for lv in mean_levels)

    @property
    def seed(self) -> int:
        """The run seed (Philox key)."""
        return self._seed

    @property
    def mode(self) -> SamplingMode:
        """The sampling mode."""
        return self._mode

    @property
    def mean_levels(self) -> frozenset[int]:
        """Levels whose eps is zero whatever the mode."""
        return self._mean_levels

    def at_mean(self, level: int) -> bool:
        """True when every eps of ``level`` is zero (``"mean"`` mode or a mean level)."""
        return self._mode is SamplingMode.MEAN or level in self._mean_levels

    def __repr__(self) -> str:
        return (
            f"LatentSampler(seed={self._seed}, mode={self._mode.value!r}, "
            f"workers={self._workers}, mean_levels={sorted(self._mean_levels)})"
        )

    def tile_eps(
        self,
        sample_indices: Sequence[int],
        levels: Sequence[tuple[int, int]],
        y0: int,
        x0: int,
        height: int,
        width: int,
    ) -> list[np.ndarray]:
        """Latent noise of one tile for several samples and levels.

        Parameters
        ----------
        sample_indices : sequence of int
            Global sample indices (``0 .. n_samples - 1`` of the run), one per row
            of the batch.
        levels : sequence of (int, int)
            ``(level index, channels)`` of each sampled level, in the order the
            network expects them.
        y0, x0, height, width : int
            The tile in global pixel coordinates of the (padded) image; all must be
            multiples of ``2**(max level + 1)``.

        Returns
        -------
        list of numpy.ndarray
            Per level, C-contiguous float32 of shape
            ``(len(sample_indices), channels, height >> (l+1), width >> (l+1))``.

        Raises
        ------
        ConfigError
            If an index, level, channel count or tile coordinate is invalid.
        """
        samples, level_specs = self.validate(sample_indices, levels, y0, x0, height, width)
        out = []
        for level, channels in level_specs:
            shift = level + 1
            shape = (len(samples), channels, height >> shift, width >> shift)
            if self.at_mean(level):
                out.append(np.zeros(shape, dtype=np.float32))
                continue
            arr = np.empty(shape, dtype=np.float32)
            self._fill_level(arr, samples, level, y0 >> shift, x0 >> shift)
            out.append(arr)
        return out

    def validate(
        self, sample_indices: Sequence[int], levels: Sequence[tuple[int, int]],
        y0: int, x0: int, height: int, width: int,
    ) -> tuple[list[int], list[tuple[int, int]]]:
        """Checked ``(sample indices, [(level, channels), ...])`` of a :meth:`tile_eps`
        request (shared with the device sampler); raises ConfigError as tile_eps does."""
        samples = [_check_int("sample index", s, high=_MAX_SAMPLE) for s in sample_indices]
        level_specs = self._check_levels(levels)
        self._check_tile(level_specs, y0, x0, height, width)
        return samples, level_specs

    def stream_of(self, sample: int) -> tuple[int, bool]:
        """``(Philox stream, negate)`` of a sample index under this sampler's mode."""
        if self._mode is SamplingMode.ANTITHETIC:
            return sample & ~1, bool(sample & 1)
        return sample, False

    # -- internals ---------------------------------------------------------------

    def _check_levels(self, levels: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
        specs = []
        for item in levels:
            try:
                level, channels = item
            except (TypeError, ValueError):
                raise ConfigError(
                    f"each level must be a (level index, channels) pair, got {item!r}"
                ) from None
            specs.append(
                (_check_int("level index", level, high=_MAX_LEVEL),
                 _check_int("channels", channels, low=1, high=_MAX_CHANNELS))
            )
        if not specs:
            raise ConfigError("levels is empty; give at least one (level index, channels) pair")
        return specs

    @staticmethod
    def _check_tile(
        specs: list[tuple[int, int]], y0: int, x0: int, height: int, width: int
    ) -> None:
        factor = 2 ** (max(level for level, _ in specs) + 1)
        named = (("y0", y0, 0), ("x0", x0, 0), ("height", height, 1), ("width", width, 1))
        for name, value, low in named:
            value = _check_int(name, value, low=low, high=2**32)
            if value % factor:
                raise ConfigError(
                    f"tile {name}={value} is not a multiple of {factor} = 2**(deepest level + 1); "
                    "tile sizes and origins must be aligned with every latent grid"
                )

    def _fill_level(
        self, arr: np.ndarray, samples: list[int], level: int, ly0: int, lx0: int
    ) -> None:
        # Group batch rows by stream, so each stream is drawn once (antithetic pairs,
        # repeated indices); the first row of a stream is drawn, the others copied.
        rows_of: dict[int, list[tuple[int, bool]]] = {}
        for row, s in enumerate(samples):
            stream, negate = self.stream_of(s)
            rows_of.setdefault(stream, []).append((row, negate))

        def draw(stream: int) -> None:
            rows = rows_of[stream]
            first, first_neg = rows[0]
            self._fill_stream(arr[first], stream, level, ly0, lx0)
            if first_neg:
                np.negative(arr[first], out=arr[first])
            for row, negate in rows[1:]:
                if negate == first_neg:
                    arr[row] = arr[first]
                else:
                    np.negative(arr[first], out=arr[row])

        streams = list(rows_of)
        if self._workers == 1 or len(streams) == 1:
            for stream in streams:
                draw(stream)
        else:
            with ThreadPoolExecutor(max_workers=min(self._workers, len(streams))) as pool:
                list(pool.map(draw, streams))

    def _fill_stream(self, out: np.ndarray, stream: int, level: int, ly0: int, lx0: int) -> None:
        """Fill ``out`` (C, h, w) with the noise of one stream at latent origin (ly0, lx0).

        Philox counters cover whole groups of 4 columns (one call gives 4 normals), in
        chunks of rows so that the uint64 work arrays stay in cache."""
        channels, h, w = out.shape
        g0, g1 = lx0 >> 2, ((lx0 + w - 1) >> 2) + 1
        cols = np.arange(g0, g1, dtype=np.uint64)[None, :]
        key = (self._seed & 0xFFFFFFFF, self._seed >> 32)
        n_rows = channels * h
        step = max(1, _CHUNK // len(cols[0]))
        drawn = np.empty((n_rows, g1 - g0, 4), dtype=np.float32)
        for a in range(0, n_rows, step):
            flat = np.arange(a, min(a + step, n_rows), dtype=np.uint64)
            rows = (flat % np.uint64(h) + np.uint64(ly0))[:, None]
            lanes = ((flat // np.uint64(h)) | np.uint64(level << 24))[:, None]
            words = philox4x32((cols, rows, lanes, stream), key)
            box_muller(words, out=drawn[a : a + len(flat)])
        start = lx0 - 4 * g0
        out[...] = drawn.reshape(channels, h, 4 * (g1 - g0))[:, :, start : start + w]
