"""Cut a 2-D image into aligned, overlapping tiles and blend per-tile results back.

The splitter (:class:`Tiler`: ``plan``, ``pad``, ``iter_tiles``) and the merger
(:class:`TileMerger`, which blends any per-tile stack: moments, kept samples) know
nothing about the network. Images are padded by ``margin`` pixels on every side (so
that borders and corners see image context rather than the network's zero padding)
and then at the bottom/right up to a multiple of ``multiple``. Tile coordinates are
coordinates in that padded image: pixel ``(r, c)`` of the image is at
``(r + margin, c + margin)`` whatever the tile size, which keeps seeded latent noise
(see :mod:`hdn_deploy.latents`) independent of the tile layout. Tile sizes and origins
are multiples of ``multiple`` (``2**n_levels`` for HDN), so every tile is aligned with
every latent grid.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterator

import numpy as np

from .errors import ConfigError, InputError

__all__ = ["BlendMode", "PadMode", "Tile", "TilePlan", "Tiler", "TileMerger"]

_MIN_WEIGHT = 1e-3


class BlendMode(str, enum.Enum):
    """Weights of overlapping tiles: ``hann`` ramps over the overlap, ``constant`` is flat."""

    HANN = "hann"
    CONSTANT = "constant"


class PadMode(str, enum.Enum):
    """How the image is extended to a multiple of the tile grid."""

    REFLECT = "reflect"
    CONSTANT = "constant"


def _choice(enum_type: type[enum.Enum], value: object, what: str) -> enum.Enum:
    try:
        return enum_type(value)
    except ValueError:
        options = ", ".join(repr(m.value) for m in enum_type)
        raise ConfigError(f"unknown {what} {value!r}; expected one of {options}") from None


@dataclass(frozen=True)
class Tile:
    """One tile in global (padded-image) pixel coordinates."""

    y0: int
    x0: int
    height: int
    width: int

    @property
    def slices(self) -> tuple[slice, slice]:
        """``(rows, columns)`` slices selecting the tile from the padded image."""
        return slice(self.y0, self.y0 + self.height), slice(self.x0, self.x0 + self.width)


@dataclass(frozen=True)
class TilePlan:
    """Where the tiles of one image lie.

    Attributes
    ----------
    image_shape : tuple of int
        ``(height, width)`` of the original image.
    padded_shape : tuple of int
        ``(height, width)`` after padding by ``margin`` on every side and at the
        bottom/right to a multiple of ``multiple``.
    tiles : tuple of Tile
        Row-major, covering the padded image; overlapping by at least ``overlap``.
    overlap : int
        Nominal overlap between neighbouring tiles (the blend ramp width).
    margin : int
        Context pixels added on every side; the image starts at ``(margin, margin)``.
    """

    image_shape: tuple[int, int]
    padded_shape: tuple[int, int]
    tiles: tuple[Tile, ...]
    overlap: int
    margin: int = 0

    @property
    def crop(self) -> tuple[slice, slice]:
        """``(rows, columns)`` slices of the image inside the padded image."""
        (h, w), m = self.image_shape, self.margin
        return slice(m, m + h), slice(m, m + w)

    def __len__(self) -> int:
        return len(self.tiles)


def _check_size(name: str, value: object, multiple: int, *, low: int, fix: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if value < low or value % multiple:
        raise ConfigError(
            f"{name}={value} must be a multiple of {multiple} and at least {low}; {fix}"
        )
    return value


def _axis_layout(padded: int, tile: int, overlap: int, multiple: int) -> tuple[int, list[int]]:
    """Tile length and origins along one axis: the fewest tiles of at most ``tile`` that
    cover ``padded`` with at least ``overlap`` between neighbours, made as short as that
    allows and spread evenly (first at 0, last flush with the end), all multiples of
    ``multiple``. Equal, shortest tiles waste the least work on overlaps: 1024 px with
    tiles of at most 512 and overlap 64 become 3 x 384 px instead of 3 x 512 px."""
    if padded <= tile:
        return padded, [0]
    n = -(-(padded - overlap) // (tile - overlap))
    length = -(-(padded + (n - 1) * overlap) // (n * multiple)) * multiple
    span = padded - length
    origins = [int(k * span / (n - 1) / multiple + 0.5) * multiple for k in range(n)]
    return length, origins


def _reflect_index(n: int, size: int, start: int = 0) -> np.ndarray:
    """Indices ``start .. start+size-1`` folded into ``0 .. n-1`` by mirroring (no edge
    repeat; negative indices mirror at 0)."""
    idx = np.arange(start, start + size)
    if n == 1:
        return np.zeros(size, dtype=np.intp)
    period = 2 * n - 2
    idx = idx % period
    return np.where(idx < n, idx, period - idx)


class Tiler:
    """Plan, pad and cut an image into aligned overlapping tiles.

    Parameters
    ----------
    tile_size : int, optional
        Tile side in pixels (default 256); a multiple of ``multiple``. Images
        smaller than a tile (after padding) are processed as one smaller tile.
    overlap : int, optional
        Overlap between neighbouring tiles in pixels (default 64); a multiple of
        ``multiple`` with ``0 <= overlap < tile_size``.
    multiple : int, optional
        Alignment of tile sizes and origins (default 64 = 2**6 for 6 latent levels).
    blend : BlendMode or str, optional
        ``"hann"`` (default) or ``"constant"``; used by :meth:`merger`.
    pad_mode : PadMode or str, optional
        ``"reflect"`` (default; mirrors repeatedly when the pad exceeds the image)
        or ``"constant"`` (the image mean).
    margin : int, optional
        Context pixels padded on every side before tiling and cropped afterwards
        (default 0). With 0, pixels at the top/left borders and corners see the
        network's zero padding; :class:`~hdn_deploy.denoiser.Denoiser` uses the
        package's recommended overlap.
    """

    def __init__(
        self,
        tile_size: int = 256,
        overlap: int = 64,
        *,
        multiple: int = 64,
        blend: BlendMode | str = BlendMode.HANN,
        pad_mode: PadMode | str = PadMode.REFLECT,
        margin: int = 0,
    ) -> None:
        self.multiple = _check_size("multiple", multiple, 1, low=1, fix="use e.g. 64 = 2**levels")
        m = self.multiple
        fix = f"use a multiple of {m} such as {4 * m}"
        self.tile_size = _check_size("tile_size", tile_size, m, low=m, fix=fix)
        self.overlap = _check_size(
            "overlap", overlap, self.multiple, low=0, fix=f"use 0, {self.multiple}, ..."
        )
        if self.overlap >= self.tile_size:
            raise ConfigError(
                f"overlap={self.overlap} must be smaller than tile_size={self.tile_size}; "
                f"use e.g. overlap={self.tile_size // 4 // self.multiple * self.multiple}"
            )
        self.blend = _choice(BlendMode, blend, "blend mode")
        self.pad_mode = _choice(PadMode, pad_mode, "pad mode")
        self.margin = _check_size("margin", margin, 1, low=0, fix="use e.g. the overlap")

    def __repr__(self) -> str:
        return (
            f"Tiler(tile_size={self.tile_size}, overlap={self.overlap}, multiple={self.multiple}, "
            f"blend={self.blend.value!r}, pad_mode={self.pad_mode.value!r}, margin={self.margin})"
        )

    def plan(self, shape: tuple[int, int]) -> TilePlan:
        """Tile layout of an image of ``shape = (height, width)``.

        Raises
        ------
        InputError
            If ``shape`` is not two positive integers.
        """
        shape = tuple(shape)
        if len(shape) != 2 or not all(isinstance(s, (int, np.integer)) and s > 0 for s in shape):
            raise InputError(f"image shape must be (height, width) > 0, got {shape!r}")
        h, w = (int(s) for s in shape)
        m, edge = self.multiple, 2 * self.margin
        ph, pw = -(-(h + edge) // m) * m, -(-(w + edge) // m) * m
        th, ys = _axis_layout(ph, self.tile_size, self.overlap, m)
        tw, xs = _axis_layout(pw, self.tile_size, self.overlap, m)
        tiles = tuple(Tile(y0, x0, th, tw) for y0 in ys for x0 in xs)
        return TilePlan((h, w), (ph, pw), tiles, self.overlap, self.margin)

    def pad(self, image: np.ndarray, plan: TilePlan) -> np.ndarray:
        """Pad the last two axes of ``image`` to ``plan.padded_shape``: ``plan.margin`` on
        every side, the rest at the bottom/right (reflection or the image mean)."""
        image = np.asarray(image)
        if image.ndim < 2 or image.shape[-2:] != plan.image_shape:
            raise InputError(
                f"image of shape {image.shape} does not match the plan's image shape "
                f"{plan.image_shape}; plan the tiles for this image"
            )
        (h, w), (ph, pw), m = plan.image_shape, plan.padded_shape, plan.margin
        if (h, w) == (ph, pw):
            return image
        if self.pad_mode is PadMode.CONSTANT:
            out = np.full(image.shape[:-2] + (ph, pw), image.mean(), dtype=image.dtype)
            out[(..., *plan.crop)] = image
            return out
        rows, cols = _reflect_index(h, ph, -m), _reflect_index(w, pw, -m)
        return image[..., rows[:, None], cols[None, :]]

    def iter_tiles(self, image: np.ndarray, plan: TilePlan) -> Iterator[tuple[Tile, np.ndarray]]:
        """Yield ``(tile, patch)`` in plan order; ``patch`` is a C-contiguous copy.

        Public so that callers can report progress or stop early.
        """
        padded = self.pad(image, plan)
        for tile in plan.tiles:
            yield tile, np.ascontiguousarray(padded[(..., *tile.slices)])

    def merger(self, plan: TilePlan) -> "TileMerger":
        """A :class:`TileMerger` for ``plan`` using this tiler's blend mode."""
        return TileMerger(plan, blend=self.blend)


@lru_cache(maxsize=64)
def _ramp_1d(length: int, ramp: int, start: bool, end: bool) -> np.ndarray:
    """Raised-cosine weights: rises over ``ramp`` px at the start/end when flagged.

    The rise ``r(t) = (1 - cos(pi (t + 0.5) / ramp)) / 2`` and the fall of the
    neighbour add up to exactly 1 where two tiles overlap by ``ramp`` pixels.
    """
    w = np.ones(length, dtype=np.float64)
    ramp = min(ramp, length)
    if ramp == 0:
        return w
    rise = 0.5 * (1.0 - np.cos(np.pi * (np.arange(ramp) + 0.5) / ramp))
    if start:
        w[:ramp] *= rise
    if end:
        w[length - ramp :] *= rise[::-1]
    return w


@lru_cache(maxsize=64)
def _window(height: int, width: int, ramp: int, sides: tuple[bool, bool, bool, bool]) -> np.ndarray:
    top, bottom, left, right = sides
    win = np.outer(_ramp_1d(height, ramp, top, bottom), _ramp_1d(width, ramp, left, right))
    np.maximum(win, _MIN_WEIGHT, out=win)
    win.setflags(write=False)
    return win


class TileMerger:
    """Blend per-tile stacks (moments, kept samples, anything per pixel) into the image.

    Like MONAI's ``Merger``: ``add(tile, values)`` for every planned tile, then
    ``finalize()``.

    Parameters
    ----------
    plan : TilePlan
        The plan the tiles come from.
    blend : BlendMode or str, optional
        ``"hann"`` (default): weights rise with a raised cosine over the ``overlap``
        pixels at every tile side that has a neighbouring tile and are 1 elsewhere
        (including along the padded image's border, which is never faded); weights
        are clamped to at least 1e-3. ``"constant"``: all weights 1.

    Notes
    -----
    Each pixel's result is ``sum(w * v) / sum(w)`` over the tiles covering it, per
    entry of the stack, in float64. Where a ramp makes one tile's weight small, a
    neighbour's weight is large: two ramps facing each other add up to 1 and the
    summed weight never falls below about 0.5.
    """

    def __init__(self, plan: TilePlan, *, blend: BlendMode | str = BlendMode.HANN) -> None:
        self.plan = plan
        self.blend = _choice(BlendMode, blend, "blend mode")
        self._sum: np.ndarray | None = None  # (*stack, ph, pw), allocated by the first add
        self._weight = np.zeros(plan.padded_shape, dtype=np.float64)
        self._pending = set(plan.tiles)

    @property
    def n_remaining(self) -> int:
        """Number of planned tiles not added yet."""
        return len(self._pending)

    def window(self, tile: Tile) -> np.ndarray:
        """Blend weights of ``tile`` (read-only float64, cached per shape and sides)."""
        ph, pw = self.plan.padded_shape
        ramp = self.plan.overlap if self.blend is BlendMode.HANN else 0
        sides = (tile.y0 > 0, tile.y0 + tile.height < ph, tile.x0 > 0, tile.x0 + tile.width < pw)
        return _window(tile.height, tile.width, ramp, sides)

    def add(self, tile: Tile, values: np.ndarray) -> None:
        """Add one tile's values, shape ``(*stack, tile.height, tile.width)``; every tile
        must bring the same ``stack`` shape (e.g. ``(2,)`` for mean and E[x**2]).

        Raises
        ------
        InputError
            If ``tile`` is not in the plan or was already added, or the shape differs.
        """
        if tile not in self._pending:
            state = "was already added" if tile in self.plan.tiles else "is not in the plan"
            raise InputError(f"{tile} {state}")
        values = np.asarray(values)
        stack = values.shape[:-2] if self._sum is None else self._sum.shape[:-2]
        expected = (*stack, tile.height, tile.width)
        if values.shape != expected:
            raise InputError(f"values have shape {values.shape}, expected {expected} for {tile}")
        if self._sum is None:
            self._sum = np.zeros((*stack, *self.plan.padded_shape), dtype=np.float64)
        win = self.window(tile)
        self._sum[(..., *tile.slices)] += win * values
        self._weight[tile.slices] += win
        self._pending.discard(tile)

    def finalize(self, *, allow_partial: bool = False) -> np.ndarray:
        """Blended stack, float64 ``(*stack, height, width)`` cropped to the image.

        With ``allow_partial=True`` pixels no added tile covers are NaN; otherwise
        missing tiles raise InputError.
        """
        if self._pending and not allow_partial:
            raise InputError(
                f"{len(self._pending)} of {len(self.plan.tiles)} tiles were not added; "
                "add them all or call finalize(allow_partial=True)"
            )
        if self._sum is None:
            raise InputError("no tile was added; add tiles before finalize()")
        crop = self.plan.crop
        with np.errstate(invalid="ignore", divide="ignore"):
            return self._sum[(..., *crop)] / self._weight[crop]
