"""Reading TIFF inputs: series, axes, companion files of OME data sets, memory checks.

A file may hold several series (tifffile's word for an image of its own shape); reduced-
resolution series (thumbnails, flagged by the TIFF NewSubfileType tag) are listed but are
not images to denoise. Each series is checked before its pixels are read: its size
against the memory available, and, for multi-file OME-TIFF, that every file it lists is
present (tifffile would fill the planes of a missing file with zeros).
"""
from __future__ import annotations

import os
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import tifffile

from ..errors import InputError
from .axes import Layout, layout_from_file
from .metadata import PhysicalMetadata, physical_metadata

__all__ = ["ImageData", "SeriesInfo", "list_series", "read_image", "open_image_lazy", "available_memory",
           "check_memory", "ome_companions", "ome_companions_of"]

_READ_ERRORS = (tifffile.TiffFileError, OSError, ValueError, IndexError, KeyError)
_UUID_FILE = re.compile(r"<(?:\w+:)?UUID\b[^>]*\bFileName\s*=\s*\"([^\"]+)\"")


@dataclass(frozen=True)
class SeriesInfo:
    """One series of a TIFF, as listed before its pixels are read.

    Attributes
    ----------
    index : int
        Position in the file (``--series``).
    shape : tuple of int
        As tifffile reports it, with its ``axes``.
    axes : str
        tifffile's axes letters.
    dtype : numpy.dtype
    reduced : bool
        True for a thumbnail / reduced-resolution copy (not denoised).
    """

    index: int
    shape: tuple[int, ...]
    axes: str
    dtype: np.dtype
    reduced: bool

    @property
    def nbytes(self) -> int:
        """Bytes of the series' data as stored type."""
        return int(np.prod(self.shape, dtype=np.float64)) * self.dtype.itemsize

    def describe(self) -> str:
        kind = "reduced-resolution thumbnail" if self.reduced else "image"
        return f"series {self.index}: {kind}, shape {self.shape}, axes {self.axes}, {self.dtype}"


@dataclass(frozen=True, eq=False)
class ImageData:
    """An image read for denoising.

    Attributes
    ----------
    array : numpy.ndarray
        float32 planes to denoise: ``(Y, X)`` if :attr:`axes` is ``'YX'``, else
        ``(n, Y, X)`` where n runs over every axis of :attr:`axes` but Y and X (C order).
    dtype : numpy.dtype
        dtype stored in the file (outputs can be cast back to it).
    axes : str
        Canonical axes: the file's non-plane axes in file order, then ``YX``
        (e.g. ``'YX'``, ``'ZYX'``, ``'CYX'``, ``'TCZYX'``; ``Q``: a stack of unknown kind).
    path : pathlib.Path
        The source file.
    shape : tuple of int
        Shape of the image in :attr:`axes` order (``array.reshape(shape)``).
    layout : Layout
        The file's axes order (:attr:`Layout.file_axes`); outputs are written in it.
    series : int
        Index of the series read.
    physical : PhysicalMetadata
        Pixel size, units, spacing, channel names ... of the input.
    """

    array: np.ndarray
    dtype: np.dtype
    axes: str
    path: Path
    shape: tuple[int, ...] = ()
    layout: Layout | None = None
    series: int = 0
    physical: PhysicalMetadata = field(default_factory=PhysicalMetadata)

    @property
    def file_axes(self) -> str:
        """Axes in the file's order (outputs are written in it)."""
        return self.layout.file_axes if self.layout else self.axes

    def to_file_order(self, planes: np.ndarray, *, leading: int = 0) -> np.ndarray:
        """Planes shaped like :attr:`array` (after ``leading`` extra axes, e.g. samples)
        back to the file's shape and axes order."""
        lead = planes.shape[:leading]
        full = planes.reshape(*lead, *self.shape)
        if self.layout is None:
            return full
        order = tuple(range(leading)) + tuple(leading + i for i in self.layout.to_file)
        return full.transpose(order)


def _open(path: Path) -> tifffile.TiffFile:
    if not path.is_file():
        raise InputError(f"'{path}' does not exist or is not a file")
    try:
        return tifffile.TiffFile(path)
    except _READ_ERRORS as exc:
        raise InputError(f"cannot read '{path}' as a TIFF image: {exc}") from exc


def _series_info(tif: tifffile.TiffFile) -> list[SeriesInfo]:
    infos = []
    for i, s in enumerate(tif.series):
        reduced = (bool(int(s.keyframe.subfiletype) & int(tifffile.FILETYPE.REDUCEDIMAGE))
                   or str(s.name).lower() == "thumbnail")  # e.g. Aperio SVS
        infos.append(SeriesInfo(i, tuple(int(n) for n in s.shape), s.axes, np.dtype(s.dtype),
                                reduced))
    return infos


def list_series(path: str | Path) -> list[SeriesInfo]:
    """The series of a TIFF (pixels are not read).

    Raises
    ------
    InputError
        If the file is missing, not a TIFF, or has no series.
    """
    path = Path(path)
    with _open(path) as tif:
        try:
            infos = _series_info(tif)
        except _READ_ERRORS as exc:
            raise InputError(f"cannot read '{path}' as a TIFF image: {exc}") from exc
    if not infos:
        raise InputError(f"'{path}' holds no image")
    return infos


def ome_companions(tif: tifffile.TiffFile, path: Path) -> list[Path]:
    """Files named in the OME-XML of a multi-file OME-TIFF (``UUID FileName``), resolved
    beside ``path``; empty for a single-file TIFF."""
    if not tif.is_ome:
        return []
    names = dict.fromkeys(_UUID_FILE.findall(tif.ome_metadata or ""))
    return [path.parent / name for name in names]


def ome_companions_of(path: str | Path) -> list[Path]:
    """:func:`ome_companions` of the file at ``path`` (empty if it cannot be read)."""
    path = Path(path)
    try:
        with tifffile.TiffFile(path) as tif:
            return ome_companions(tif, path)
    except _READ_ERRORS:
        return []


def _check_companions(tif: tifffile.TiffFile, path: Path, series: tifffile.TiffPageSeries) -> None:
    missing = [p for p in ome_companions(tif, path) if not p.is_file()]
    if missing:
        names = ", ".join(f"'{p.name}'" for p in missing)
        raise InputError(
            f"'{path}' is part of a multi-file OME-TIFF whose file(s) {names} are missing "
            f"from '{path.parent}'; their planes would be read as zeros. Copy every file of "
            "the data set into one folder and rerun"
        )
    if any(page is None for page in series.pages):
        raise InputError(f"'{path}' series lists planes that cannot be found (a file of a "
                         "multi-file data set is missing or unreadable); nothing was denoised")


def available_memory() -> int:
    """Bytes of memory available to a new allocation (psutil's ``available``)."""
    import psutil

    return int(psutil.virtual_memory().available)


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def check_memory(path: Path, info: SeriesInfo, needed: int) -> None:
    """Refuse a series whose processing needs more than the memory available.

    Raises
    ------
    InputError
        Naming the file, the series' shape and type, the bytes needed and available.
    """
    free = available_memory()
    if needed > free:
        raise InputError(
            f"'{path}' series {info.index} is {' x '.join(map(str, info.shape))} {info.dtype} "
            f"({_gib(info.nbytes)} as stored); reading and denoising it needs about "
            f"{_gib(needed)} of memory but {_gib(free)} is available. Denoise it out of core, "
            "tile by tile: hdn-deploy denoise does so for TIFF series above "
            "--out-of-core-above pixels whose Y and X are the last axes (without "
            "--keep-samples and --dask-*); else convert it to OME-Zarr (e.g. with "
            "bioformats2raw) and give the .zarr folder, or use Denoiser.denoise(..., "
            "out=ArrayOutputs(...)) on tifffile.imread(path, aszarr=True) (see the README, "
            "'Big images and clusters')"
        )


def read_bytes_needed(info: SeriesInfo) -> int:
    """Memory to read a series: the stored data plus two float32 copies."""
    return info.nbytes + 2 * 4 * int(np.prod(info.shape, dtype=np.float64))


def _decode(path: Path, series: tifffile.TiffPageSeries) -> np.ndarray:
    try:
        return series.asarray()
    except RuntimeError as exc:  # imagecodecs' errors (DeflateError, ImcdError ...) derive from it
        compression = getattr(series.keyframe.compression, "name", "?")
        raise InputError(f"cannot decode the pixel data of '{path}' (compression {compression}): "
                         f"{exc}; the file is damaged or truncated") from exc


def _pick_series(path: Path, infos: list[SeriesInfo], series: int | None) -> SeriesInfo:
    if series is not None:
        if not 0 <= series < len(infos):
            raise InputError(f"'{path}' has {len(infos)} series (0 to {len(infos) - 1}); "
                             f"series {series} does not exist")
        return infos[series]
    images = [s for s in infos if not s.reduced]
    if len(images) == 1:
        return images[0]
    listing = "; ".join(s.describe() for s in infos)
    raise InputError(f"'{path}' has {len(images)} image series ({listing}); pick one with "
                     "series=N (CLI: --series N, or omit it to denoise every series)")


def _one_channel(source: str, info: SeriesInfo, layout: Layout) -> None:
    axes, shape = layout.file_axes, info.shape
    if "C" in axes:
        raise InputError(
            f"{source} has several channels (axes {info.axes}, shape {shape}); HDN expects one "
            "channel here; split channels first (a stack of 3 or 4 planes saved as RGB by "
            "mistake: re-save it with photometric='minisblack')"
        )
    if len(axes) > 3:
        raise InputError(
            f"{source} has axes {axes} with shape {shape} after dropping singleton axes; "
            "expected YX or one stack axis before YX (ZYX, TYX); split it into 2-D or 3-D files"
        )


def _check_values(path: Path, data: np.ndarray) -> None:
    if data.size == 0:
        raise InputError(f"'{path}' is empty (shape {data.shape})")
    if np.iscomplexobj(data) or not (np.issubdtype(data.dtype, np.number) or data.dtype == bool):
        raise InputError(f"'{path}' has data type {data.dtype}; expected integers or real floats")


def _series_layout(tif: tifffile.TiffFile, path: Path, series: int | None,
                   axes: str | None) -> tuple[SeriesInfo, str, Layout]:
    """The chosen series of an open TIFF, its name for messages and its axes layout."""
    info = _pick_series(path, _series_info(tif), series)
    source = f"'{path}' series {info.index}" if len(tif.series) > 1 else f"'{path}'"
    return info, source, layout_from_file(info.shape, info.axes, source=source, axes=axes)


def read_image(path: str | Path, *, series: int | None = None, axes: str | None = None,
               allow_channels: bool = False) -> ImageData:
    """Read one series of a TIFF as float32 planes.

    Parameters
    ----------
    path : str or Path
        TIFF file (ImageJ, OME-TIFF incl. multi-file, or plain; any compression
        imagecodecs decodes).
    series : int, optional
        Series to read; default: the only series that is not a reduced-resolution
        thumbnail.
    axes : str, optional
        The series' axes (``YX``, ``ZYX``, ``YXC``, ``TZYX``, ...; see
        :mod:`hdn_deploy.io.axes`), overriding the file's metadata.
    allow_channels : bool
        Also accept several channels (``C``, incl. RGB) and several stack axes (e.g.
        ``TZYX``, ``TCZYX``); each plane is then one entry of ``array``. False
        (default) refuses them, as one-channel consumers (noise-model calibration,
        training) need; ``hdn-deploy denoise`` passes True.

    Returns
    -------
    ImageData

    Raises
    ------
    InputError
        Naming the file: missing or unreadable; several image series and no ``series``;
        a companion file of a multi-file OME-TIFF missing; larger than the memory
        available; axes unknown and implausible (or ``axes`` not fitting); empty,
        complex, or holding NaN/infinite values.
    """
    path = Path(path)
    with _open(path) as tif:
        try:
            info, source, layout = _series_layout(tif, path, series, axes)
            if not allow_channels:
                _one_channel(source, info, layout)
            check_memory(path, info, read_bytes_needed(info))
            tseries = tif.series[info.index]
            _check_companions(tif, path, tseries)
            data = _decode(path, tseries)
            physical = physical_metadata(tif, info.index)
        except InputError:
            raise
        except _READ_ERRORS as exc:
            raise InputError(f"cannot read '{path}' as a TIFF image: {exc}") from exc
    _check_values(path, data)
    return _to_image(path, data, layout, info.index, physical)


def _to_image(path: Path, data: np.ndarray, layout: Layout, index: int,
              physical: PhysicalMetadata) -> ImageData:
    data = data.reshape([data.shape[i] for i in layout.keep]).transpose(layout.to_canonical)
    with np.errstate(over="ignore"):  # values beyond float32 become inf, reported below
        array = np.ascontiguousarray(data, dtype=np.float32)
    if not np.isfinite(array).all():
        bad = int(np.count_nonzero(~np.isfinite(array)))
        raise InputError(
            f"'{path}' has {bad} NaN or infinite values (after conversion to float32); "
            "replace them before denoising"
        )
    shape = array.shape
    planes = array if array.ndim == 2 else array.reshape(-1, *shape[-2:])
    return ImageData(array=planes, dtype=data.dtype, axes=layout.axes, path=path, shape=shape,
                     layout=layout, series=index, physical=physical)


@contextmanager
def open_image_lazy(path: str | Path, *, series: int, axes: str | None = None
                    ) -> Iterator[ImageData | None]:
    """One series of a TIFF opened for out-of-core denoising, without reading its pixels.

    Yields an :class:`ImageData` whose ``array`` is a lazy array-like ``(Y, X)`` or
    ``(n, Y, X)`` that reads only the rows sliced: for an uncompressed contiguous series
    (tifffile's default) the rows' bytes with ``os.pread`` (no memory map, whose pages
    would count in the RSS); otherwise tifffile's zarr store of the full-resolution level
    (only the tiles or strips sliced are decoded), seen as planes by
    :func:`hdn_deploy.outofcore.flat`. The file stays open inside the block. Yields None where only
    :func:`read_image` can read the series: axes that need a transpose to put Y and X
    last (e.g. ``YXC``/RGB), singleton axes dropped, a non-numeric or bool dtype, or zarr
    (the ``[big]`` extra) missing. Values (NaN, infinities) are not checked here: the
    denoiser checks them band by band.

    Raises
    ------
    InputError
        As :func:`read_image` (file, series, axes, companion files), memory aside.
    """
    from .. import outofcore

    try:
        import zarr
    except ImportError:
        zarr = None
    path = Path(path)
    with _open(path) as tif:
        try:
            info, source, layout = _series_layout(tif, path, series, axes)
            tseries = tif.series[info.index]
            _check_companions(tif, path, tseries)
            physical = physical_metadata(tif, info.index)
            simple = (layout.keep == tuple(range(len(info.shape))) and layout.file_axes == layout.axes
                      and info.dtype.kind in "uif" and 0 not in info.shape)
            if not simple:
                array = None
            elif tseries.dataoffset is not None:
                array = _ContiguousPixels(path, tseries.dataoffset, info.shape,
                                          np.dtype(info.dtype).newbyteorder(tif.byteorder))
            else:
                array = zarr.open_array(tseries.aszarr(level=0), mode="r") if zarr else None
        except InputError:
            raise
        except _READ_ERRORS as exc:
            raise InputError(f"cannot read '{path}' as a TIFF image: {exc}") from exc
        if array is None or tuple(array.shape) != info.shape:
            yield None
            return
        try:
            yield ImageData(array=outofcore.flat(array), dtype=info.dtype, axes=layout.axes,
                            path=path, shape=info.shape, layout=layout, series=info.index,
                            physical=physical)
        finally:
            if isinstance(array, _ContiguousPixels):
                array.close()


class _ContiguousPixels:
    """Read-only rows of an uncompressed contiguous TIFF series ``shape`` (C order from
    byte ``offset``), read with ``os.pread``: ``a[r0:r1, c]`` / ``a[i, j, r0:r1, c]``
    (integer indices before the row slice) -> native-endian numpy arrays."""

    def __init__(self, path: Path, offset: int, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)
        self._offset = int(offset)
        self._fd = os.open(path, os.O_RDONLY)

    def __getitem__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        nlead = len(self.shape) - 2
        lead, rest = key[:nlead], key[nlead:] + (slice(None),) * (2 - len(key[nlead:]))
        height, width = self.shape[-2:]
        start, stop, step = rest[0].indices(height) if isinstance(rest[0], slice) else (
            int(rest[0]), int(rest[0]) + 1, 1)
        plane = int(np.ravel_multi_index(tuple(int(i) for i in lead), self.shape[:-2])) if nlead else 0
        row_bytes = width * self.dtype.itemsize
        first = self._offset + (plane * height + start) * row_bytes
        data = os.pread(self._fd, max(stop - start, 0) * row_bytes, first)
        rows = np.frombuffer(data, self.dtype).reshape(-1, width)[::step]
        rows = rows[0] if not isinstance(rest[0], slice) else rows
        return rows[..., rest[1]].astype(self.dtype.newbyteorder("="), copy=True)

    def close(self) -> None:
        os.close(self._fd)
