"""Seeded latent noise for the HDN sampler, independent of tiling and batching.

The sampler network turns, for every sampled level ``l``, a standard-normal tensor
``eps`` of shape ``(N, C_l, H / 2**(l+1), W / 2**(l+1))`` into the posterior sample
``z_l = mu_l + sigma_l * eps``. This module produces those ``eps``.

Contract
--------
The value of ``eps`` at (seed, sample index, level, channel, global latent row,
global latent column) is a **pure function** of those arguments (and of ``mode``,
``block`` and the level's channel count, which are part of a run's configuration).
It does not depend on how samples are batched, how the image is cut into tiles,
which tiles are computed first or how many threads draw the numbers. Two tiles that
overlap therefore see the same latent noise on their shared region, and a run is
reproducible from its seed alone.

How it is done: each level's latent plane is split into ``block x block`` latent
positions. Block ``(by, bx)`` of stream ``s`` at level ``l`` is::

    Generator(Philox(key=seed, counter=[0, s, l, (by << 32) | bx]))
        .standard_normal((C_l, block, block), dtype=float32)

Philox is counter based: it increments the 256-bit counter as a little-endian
integer, so drawing advances word 0 only (a carry into word 1 would need 2**64
increments, i.e. 2**66 64-bit outputs per block). Words 1-3 name the stream, so no
two blocks ever share random numbers. In ``"mc"`` mode the stream of sample ``s``
is ``s``; in ``"antithetic"`` mode samples ``2k`` and ``2k + 1`` share stream
``2k`` and sample ``2k + 1`` gets its negation (each sample is still a valid
N(0, 1) draw; pairs have exactly opposite noise, which reduces the variance of the
MMSE mean); in ``"mean"`` mode ``eps`` is zero (every level at its mean).

Cost: roughly 50-80 million float32 normals per second per CPU thread (Philox +
ziggurat), plus about 10 microseconds per block generator; ``workers`` threads draw
different samples in parallel (numpy releases the GIL while filling).
"""
from __future__ import annotations

import enum
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import numpy as np

from .errors import ConfigError

__all__ = ["SamplingMode", "LatentSampler"]

_MAX_U64 = 2**64


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
    block : int, optional
        Side of the square latent blocks drawn from one generator (default 32).
        Part of the reproducibility contract: the same seed with a different block
        gives different numbers.
    workers : int, optional
        Threads drawing different samples in parallel (default 1). Results do not
        depend on it.

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
        block: int = 32,
        workers: int = 1,
    ) -> None:
        self._seed = _check_int("seed", seed)
        self._mode = _sampling_mode(mode)
        self._block = _check_int("block", block, low=1, high=2**16)
        self._workers = _check_int("workers", workers, low=1, high=1025)

    @property
    def seed(self) -> int:
        """The run seed (Philox key)."""
        return self._seed

    @property
    def mode(self) -> SamplingMode:
        """The sampling mode."""
        return self._mode

    @property
    def block(self) -> int:
        """Side of the latent blocks drawn from one generator."""
        return self._block

    def __repr__(self) -> str:
        return (
            f"LatentSampler(seed={self._seed}, mode={self._mode.value!r}, "
            f"block={self._block}, workers={self._workers})"
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
        samples = [_check_int("sample index", s) for s in sample_indices]
        level_specs = self._check_levels(levels)
        self._check_tile(level_specs, y0, x0, height, width)
        out = []
        for level, channels in level_specs:
            shift = level + 1
            shape = (len(samples), channels, height >> shift, width >> shift)
            if self._mode is SamplingMode.MEAN:
                out.append(np.zeros(shape, dtype=np.float32))
                continue
            arr = np.empty(shape, dtype=np.float32)
            self._fill_level(arr, samples, level, y0 >> shift, x0 >> shift)
            out.append(arr)
        return out

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
                (_check_int("level index", level, high=62), _check_int("channels", channels, low=1))
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
        antithetic = self._mode is SamplingMode.ANTITHETIC
        rows_of: dict[int, list[tuple[int, bool]]] = {}
        for row, s in enumerate(samples):
            stream, negate = (s & ~1, bool(s & 1)) if antithetic else (s, False)
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
        """Fill ``out`` (C, h, w) with the noise of one stream at latent origin (ly0, lx0)."""
        channels, h, w = out.shape
        b = self._block
        for by in range(ly0 // b, (ly0 + h - 1) // b + 1):
            # Rows of this block inside the tile, in block and in tile coordinates.
            r0, r1 = max(ly0, by * b), min(ly0 + h, (by + 1) * b)
            for bx in range(lx0 // b, (lx0 + w - 1) // b + 1):
                c0, c1 = max(lx0, bx * b), min(lx0 + w, (bx + 1) * b)
                # An explicit uint64 array: numpy converts a list holding ints >= 2**63
                # through float64, which would silently drop low bits.
                counter = np.array([0, stream, level, (by << 32) | bx], dtype=np.uint64)
                gen = np.random.Generator(np.random.Philox(key=self._seed, counter=counter))
                block = gen.standard_normal((channels, b, b), dtype=np.float32)
                out[:, r0 - ly0 : r1 - ly0, c0 - lx0 : c1 - lx0] = block[
                    :, r0 - by * b : r1 - by * b, c0 - bx * b : c1 - bx * b
                ]
