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

Out of core, :func:`read_tile` cuts a tile from any window of the image (a band of rows
read from a zarr store or memory map, a dask block) with the same reflected margins as
:meth:`Tiler.pad`, and :class:`StreamingMerger` hands rows to a sink as soon as no later
tile touches them, so neither the image nor its result is ever held whole. Both give the
same bytes as the in-memory path: each pixel sees the same float operations in the same
order.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Iterator

import numpy as np

from .errors import ConfigError, InputError

__all__ = ["BlendMode", "PadMode", "Tile", "TilePlan", "Tiler", "TileMerger",
           "StreamingMerger", "read_tile", "tile_source_rows"]

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

    def iter_tiles_lazy(self, source, plan: TilePlan,
                        transform: Callable[[np.ndarray], np.ndarray] | None = None,
                        ) -> Iterator[tuple[Tile, np.ndarray]]:
        """As :meth:`iter_tiles` for a 2D array-like ``source`` that is read lazily (numpy
        memmap, zarr array, tifffile zarr store, h5py dataset): for each row of tiles one
        band of image rows is read (all columns), passed through ``transform`` (e.g.
        normalisation; it must work element by element) and cut into tiles, so at most
        one band (``tile height x width``) is in memory. Gives the same patches as
        ``iter_tiles(transform(image), plan)``.

        Raises
        ------
        ConfigError
            With ``pad_mode="constant"`` (it needs the whole image's mean).
        """
        self._check_lazy(source, plan)
        band, band_y0, origin = None, None, (0, 0)
        for tile in plan.tiles:
            if tile.y0 != band_y0:  # a new row of tiles: read the image rows it needs
                rows, _ = tile_source_rows(plan, tile)
                lo, hi = int(rows.min()), int(rows.max()) + 1
                band = np.asarray(source[lo:hi, :])
                band = band if transform is None else transform(band)
                band_y0, origin = tile.y0, (lo, 0)
            yield tile, read_tile(band, origin, plan, tile)

    def _check_lazy(self, source, plan: TilePlan) -> None:
        if self.pad_mode is not PadMode.REFLECT:
            raise ConfigError("reading tiles lazily needs pad_mode='reflect' (a constant pad "
                              "is the whole image's mean)")
        if tuple(source.shape) != plan.image_shape:
            raise InputError(f"source of shape {tuple(source.shape)} does not match the plan's "
                             f"image shape {plan.image_shape}")

    def merger(self, plan: TilePlan) -> "TileMerger":
        """A :class:`TileMerger` for ``plan`` using this tiler's blend mode."""
        return TileMerger(plan, blend=self.blend)


def tile_source_rows(plan: TilePlan, tile: Tile) -> tuple[np.ndarray, np.ndarray]:
    """Image row and column indices of every pixel of ``tile`` under reflection padding
    (:meth:`Tiler.pad`): padded pixel ``(r, c)`` is image pixel ``(rows[r - y0],
    cols[c - x0])``."""
    (h, w), m = plan.image_shape, plan.margin
    return (_reflect_index(h, tile.height, tile.y0 - m),
            _reflect_index(w, tile.width, tile.x0 - m))


def read_tile(window: np.ndarray, origin: tuple[int, int], plan: TilePlan,
              tile: Tile) -> np.ndarray:
    """The reflection-padded patch of ``tile`` (C-contiguous copy), cut from ``window``:
    a 2D array holding the image's pixels from ``origin = (row, column)`` on. Equals
    ``Tiler.iter_tiles``'s patch for the same tile (reflect padding).

    Raises
    ------
    ConfigError
        If the tile needs image pixels outside ``window`` (the window, e.g. a dask chunk
        with its overlap, is too small for the tile).
    """
    rows, cols = tile_source_rows(plan, tile)
    rows, cols = rows - origin[0], cols - origin[1]
    height, width = window.shape[-2:]
    if rows.min() < 0 or cols.min() < 0 or rows.max() >= height or cols.max() >= width:
        raise ConfigError(
            f"{tile} needs image rows {rows.min() + origin[0]}..{rows.max() + origin[0]} and "
            f"columns {cols.min() + origin[1]}..{cols.max() + origin[1]}, outside the "
            f"{height} x {width} window at {origin}: use larger chunks or a smaller tile")
    return np.ascontiguousarray(window[..., rows[:, None], cols[None, :]])


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
    region : (slice, slice), optional
        Rows and columns of the padded image to keep (default: all of it); tiles are
        blended into it where they overlap it and :meth:`finalize` returns the image
        pixels inside it. A dask chunk keeps only its own pixels this way.

    Notes
    -----
    Each pixel's result is ``sum(w * v) / sum(w)`` over the tiles covering it, per
    entry of the stack, in float64, summed in the order the tiles were added. Where a
    ramp makes one tile's weight small, a neighbour's weight is large: two ramps facing
    each other add up to 1 and the summed weight never falls below about 0.5.
    """

    def __init__(self, plan: TilePlan, *, blend: BlendMode | str = BlendMode.HANN,
                 region: tuple[slice, slice] | None = None) -> None:
        self.plan = plan
        self.blend = _choice(BlendMode, blend, "blend mode")
        ph, pw = plan.padded_shape
        rows, cols = region if region is not None else (slice(0, ph), slice(0, pw))
        if not (0 <= rows.start < rows.stop <= ph and 0 <= cols.start < cols.stop <= pw):
            raise InputError(f"region {rows}, {cols} is not inside the padded image {ph} x {pw}")
        self._y0, self._x0 = rows.start, cols.start
        self._shape = (rows.stop - rows.start, cols.stop - cols.start)
        self._sum: np.ndarray | None = None  # (*stack, *region), allocated by the first add
        self._weight = np.zeros(self._shape, dtype=np.float64)
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

    def overlaps(self, tile: Tile) -> bool:
        """True if ``tile`` covers any pixel of this merger's region."""
        return self._cut(tile) is not None

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
            self._sum = np.zeros((*stack, *self._shape), dtype=np.float64)
        cut = self._cut(tile)
        if cut is not None:
            (dst, src), win = cut, self.window(tile)
            self._sum[(..., *dst)] += win[src] * values[(..., *src)]
            self._weight[dst] += win[src]
        self._pending.discard(tile)

    def _cut(self, tile: Tile) -> tuple[tuple[slice, slice], tuple[slice, slice]] | None:
        """(region slices, tile slices) of the part of ``tile`` inside the region."""
        (h, w), cut = self._shape, []
        for start, size, origin, extent in ((tile.y0, tile.height, self._y0, h),
                                            (tile.x0, tile.width, self._x0, w)):
            lo, hi = max(start, origin), min(start + size, origin + extent)
            if lo >= hi:
                return None
            cut.append((slice(lo - origin, hi - origin), slice(lo - start, hi - start)))
        return (cut[0][0], cut[1][0]), (cut[0][1], cut[1][1])

    def _crop(self, rows: slice | None = None) -> tuple[slice, slice]:
        """Region slices of the image pixels inside the region (``rows``: of those rows
        of the region only)."""
        crop, out = self.plan.crop, []
        limits = ((self._y0, rows or slice(0, self._shape[0])), (self._x0, slice(0, self._shape[1])))
        for (origin, part), image in zip(limits, crop):
            lo = max(image.start, origin + part.start)
            hi = max(lo, min(image.stop, origin + part.stop))
            out.append(slice(lo - origin, hi - origin))
        return out[0], out[1]

    def image_region(self) -> tuple[slice, slice]:
        """Image rows and columns :meth:`finalize` returns."""
        rows, cols = self._crop()
        m = self.plan.margin
        return (slice(rows.start + self._y0 - m, rows.stop + self._y0 - m),
                slice(cols.start + self._x0 - m, cols.stop + self._x0 - m))

    def finalize(self, *, allow_partial: bool = False) -> np.ndarray:
        """Blended stack, float64 ``(*stack, height, width)`` cropped to the image (to the
        image pixels of the region, see :meth:`image_region`).

        With ``allow_partial=True`` pixels no added tile covers are NaN; otherwise
        missing tiles raise InputError.
        """
        if self._pending and not allow_partial:
            missing = [t for t in self._pending if self.overlaps(t)]
            if missing:
                raise InputError(
                    f"{len(missing)} of {len(self.plan.tiles)} tiles were not added; "
                    "add them all or call finalize(allow_partial=True)"
                )
        if self._sum is None:
            raise InputError("no tile was added; add tiles before finalize()")
        crop = self._crop()
        with np.errstate(invalid="ignore", divide="ignore"):
            return self._sum[(..., *crop)] / self._weight[crop]


class StreamingMerger(TileMerger):
    """A :class:`TileMerger` that holds one row of tiles: tiles must come in plan order
    (row-major), and as soon as a row of tiles is complete the image rows no later tile
    touches are blended, handed to ``sink(rows, block)`` and dropped. ``rows`` is a slice
    of image rows, ``block`` float64 ``(*stack, len(rows), width)``. Memory: the stack of
    one tile height across the padded width. Blocks hold the same bytes as the rows of
    ``TileMerger.finalize()`` (same additions in the same order, same division).

    Raises
    ------
    InputError
        From :meth:`add` for a tile out of plan order; from :meth:`finalize` when tiles
        are missing.
    """

    def __init__(self, plan: TilePlan, sink: Callable[[slice, np.ndarray], None], *,
                 blend: BlendMode | str = BlendMode.HANN) -> None:
        ph, pw = plan.padded_shape
        height = max(t.height for t in plan.tiles)
        super().__init__(plan, blend=blend, region=(slice(0, min(height, ph)), slice(0, pw)))
        self._sink = sink
        self._next = 0

    def add(self, tile: Tile, values: np.ndarray) -> None:
        tiles = self.plan.tiles
        if self._next >= len(tiles) or tile != tiles[self._next]:
            expected = tiles[self._next] if self._next < len(tiles) else "no more tiles"
            raise InputError(f"{tile} added out of plan order (expected {expected}); a "
                             "StreamingMerger takes the tiles row by row, in plan order")
        super().add(tile, values)
        self._next += 1
        if self._next == len(tiles):
            self._flush(self.plan.padded_shape[0])
        elif tiles[self._next].y0 != tile.y0:
            self._flush(tiles[self._next].y0)

    def _flush(self, until: int) -> None:
        """Hand padded rows ``[y0, until)`` (those in the image) to the sink, then shift
        the buffer so that it starts at ``until``."""
        n = until - self._y0
        rows, cols = self._crop(slice(0, n))
        if rows.stop > rows.start:
            with np.errstate(invalid="ignore", divide="ignore"):
                block = self._sum[..., rows, cols] / self._weight[rows, cols]
            m = self.plan.margin
            self._sink(slice(rows.start + self._y0 - m, rows.stop + self._y0 - m), block)
        keep = self._shape[0] - n
        for buf in (self._sum, self._weight):
            buf[..., :keep, :] = buf[..., n:, :].copy()
            buf[..., keep:, :] = 0.0
        self._y0 = until

    def finalize(self, *, allow_partial: bool = False) -> None:  # type: ignore[override]
        """Check that every tile was added (the rows went to the sink already)."""
        if self._pending and not allow_partial:
            raise InputError(f"{len(self._pending)} of {len(self.plan.tiles)} tiles were not "
                             "added; every row of tiles must be complete")
