"""Writing results: TIFFs in the input's axes order with its physical metadata, atomically.

Format by case: an OME input gives OME-TIFF outputs (physical sizes, time increment,
channel names kept; our run metadata in the image description); otherwise an ImageJ TIFF
(resolution + unit, spacing, frame interval; our run metadata in the ImageJ ``Info``
property) when ImageJ can hold the axes order and dtype; otherwise a plain TIFF with the
axes and our metadata in tifffile's JSON description. All outputs of one input are
written to temporaries and renamed together (:func:`hdn_deploy.atomic.atomic_paths`).

Out of core, the pixels of an output are first collected in a :class:`RowFile` (a raw
hidden temporary written row band by row band) and then streamed into the TIFF by
tifffile from an iterator of blocks: the same tags, metadata and pixel layout as an
in-memory array gives, without holding the image.
"""
from __future__ import annotations

import errno
import itertools
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import tifffile

from ..atomic import atomic_path, atomic_paths, create_temp_beside
from ..errors import ConfigError, DiskSpaceError, InputError
from .metadata import PhysicalMetadata

__all__ = ["RowFile", "TiffOutput", "write_tiff_atomic", "write_outputs_atomic", "cast_to_dtype",
           "imagej_axes", "check_disk_space", "tiff_bytes"]

_AXES_LETTERS = frozenset("STCZQYX")
_IMAGEJ_ORDER = "TZCYX"
_IMAGEJ_DTYPES = frozenset(np.dtype(d) for d in ("uint8", "uint16", "int16", "float32"))
_MICRON = ("um", "µm", "micron", "microns", "\\u00B5m")
#: Free space kept beyond the estimate (file system metadata, rounding).
SPACE_MARGIN = 16 * 2**20
#: Bytes per block read back from a :class:`RowFile` while writing its TIFF.
ROW_BLOCK_BYTES = 16 * 2**20


class RowFile:
    """Pixels of an output too big for memory: a raw C-order file of ``shape`` x ``dtype``
    (a hidden temporary beside ``target``, so a killed run leaves only a stale temporary
    that :func:`hdn_deploy.atomic.remove_stale_temps` removes), written by row bands.

    It is an ``out=`` target of :meth:`hdn_deploy.Denoiser.iter_denoise` (``rowfile[r0:r1, :]
    = rows`` for ``(Y, X)``, ``rowfile[z, r0:r1, :] = rows`` for ``(n, Y, X)``; full rows
    only) and the ``array`` of a :class:`TiffOutput`, which then holds the same bytes as
    the array reshaped to ``file_shape``. ``cast`` (e.g. :func:`cast_to_dtype`) converts the
    float32 rows written to ``dtype``. Use it as a context manager; it removes its file.
    Memory: none beyond the rows being written or read.
    """

    def __init__(self, target: str | Path, shape: Sequence[int], dtype: np.dtype | str, *,
                 file_shape: Sequence[int] | None = None, cast=None) -> None:
        self.shape = tuple(int(n) for n in shape)
        self.file_shape = tuple(int(n) for n in (file_shape or shape))
        self.dtype = np.dtype(dtype)
        if int(np.prod(self.shape)) != int(np.prod(self.file_shape)) or len(self.shape) not in (2, 3):
            raise ConfigError(f"RowFile: shape {self.shape} (2D or 3D) and file_shape "
                              f"{self.file_shape} must hold as many pixels")
        self._cast = cast
        self.path = create_temp_beside(target)
        self._fd = os.open(self.path, os.O_RDWR)
        os.ftruncate(self._fd, int(np.prod(self.shape)) * self.dtype.itemsize)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * self.dtype.itemsize

    def __setitem__(self, key, value) -> None:
        key = key if isinstance(key, tuple) else (key,)
        plane, rows = (0, key[0]) if len(self.shape) == 2 else key[:2]
        height, width = self.shape[-2:]
        start, stop, step = rows.indices(height)
        if step != 1 or key[-1] != slice(None) and key[-1] != slice(0, width):
            raise ConfigError("RowFile takes whole rows: rowfile[r0:r1, :] = rows")
        values = np.asarray(value)
        values = self._cast(values) if self._cast else values
        data = np.ascontiguousarray(np.broadcast_to(values, (stop - start, width)), self.dtype)
        offset = (int(plane) * height + start) * width * self.dtype.itemsize
        _pwrite_all(self._fd, data.tobytes(), offset)

    def blocks(self, block_bytes: int = ROW_BLOCK_BYTES):
        """The file's values in order, as 1-D arrays of about ``block_bytes``."""
        step = max(self.dtype.itemsize, block_bytes - block_bytes % self.dtype.itemsize)
        for offset in range(0, self.nbytes, step):
            data = os.pread(self._fd, min(step, self.nbytes - offset), offset)
            yield np.frombuffer(data, self.dtype)

    def close(self) -> None:
        """Close and remove the file (idempotent)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> "RowFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


@dataclass(frozen=True, eq=False)
class TiffOutput:
    """One file to write: ``array`` with ``axes`` (one letter per dimension), run
    ``metadata`` (JSON-serialisable) and the input's ``physical`` metadata."""

    path: Path
    array: "np.ndarray | RowFile"
    axes: str
    metadata: dict[str, Any]
    physical: PhysicalMetadata | None = None


def _writable_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create output folder '{folder}': {exc}") from exc
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"output folder '{folder}' is not writable; choose another folder")


def imagej_axes(axes: str) -> str | None:
    """ImageJ's name for ``axes`` (``S``/``Q`` stack axes become free ``Z``/``T``), or None
    when ImageJ cannot hold that order (it knows ``TZCYX``, in that order)."""
    unknown = sum(a in "QS" for a in axes)
    free = [a for a in "ZT" if a not in axes]
    for choice in itertools.permutations(free, unknown):
        letters = iter(choice)
        mapped = "".join(next(letters) if a in "QS" else a for a in axes)
        order = iter(_IMAGEJ_ORDER)
        if all(a in order for a in mapped):  # subsequence test
            return mapped
    return None


def _check(path: Path, array: "np.ndarray | RowFile", axes: str,
           metadata: dict[str, Any]) -> tuple["np.ndarray | RowFile", str]:
    if not isinstance(array, RowFile):
        array = np.asarray(array)
    shape = _shape(array)
    repeated = len(set(axes.replace("Q", ""))) != len(axes.replace("Q", ""))
    if (len(axes) != len(shape) or set(axes) - _AXES_LETTERS or "Y" not in axes
            or "X" not in axes or repeated or axes.index("Y") > axes.index("X")):
        raise ConfigError(
            f"axes {axes!r} do not fit an array of shape {shape}; expected one letter "
            f"per dimension from {''.join(sorted(_AXES_LETTERS))}, with Y before X"
        )
    try:
        info = json.dumps(metadata)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"metadata for '{path}' is not JSON-serialisable: {exc}") from exc
    if isinstance(array, RowFile):
        if array.dtype.kind not in "iuf" or array.dtype.kind == "f" and array.dtype != np.float32:
            raise ConfigError(f"cannot write data type {array.dtype} from a RowFile to '{path}'")
        return array, info
    if array.dtype == bool:
        array = array.astype(np.uint8)
    elif np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float32, copy=False)
    elif not np.issubdtype(array.dtype, np.integer):
        raise ConfigError(f"cannot write data type {array.dtype} to '{path}'; use float32 or integers")
    return array, info


def _ome_metadata(axes: str, shape: tuple[int, ...], info: str, phys: PhysicalMetadata) -> dict:
    meta: dict[str, Any] = {"axes": axes, "Description": info}
    if phys.name:
        meta["Name"] = phys.name
    if phys.pixel_size:
        for key, value in zip("XY", phys.pixel_size):
            meta[f"PhysicalSize{key}"] = value
            if phys.unit:
                meta[f"PhysicalSize{key}Unit"] = phys.unit
    if phys.z_spacing and "Z" in axes:
        meta["PhysicalSizeZ"] = phys.z_spacing
        if phys.unit:
            meta["PhysicalSizeZUnit"] = phys.unit
    if phys.time_interval and "T" in axes:
        meta["TimeIncrement"] = phys.time_interval
        if phys.time_unit:
            meta["TimeIncrementUnit"] = phys.time_unit
    if "C" in axes and len(phys.channel_names) == shape[axes.index("C")]:
        meta["Channel"] = {"Name": list(phys.channel_names)}
    return meta


def _imagej_kwargs(ij_axes: str, info: str, phys: PhysicalMetadata | None,
                   labels: Sequence[str] | None = None) -> dict:
    meta: dict[str, Any] = {"axes": ij_axes, "Info": info}
    if labels:
        meta["Labels"] = list(labels)
    kwargs: dict[str, Any] = {"imagej": True, "metadata": meta}
    if phys is None:
        return kwargs
    if phys.pixel_size:
        kwargs["resolution"] = (1.0 / phys.pixel_size[0], 1.0 / phys.pixel_size[1])
        unit = phys.unit or "pixel"
        meta["unit"] = "micron" if unit in _MICRON and unit != "um" else unit
    if phys.z_spacing and "Z" in ij_axes:
        meta["spacing"] = phys.z_spacing
    if phys.time_interval and "T" in ij_axes and phys.time_unit in (None, "s"):
        meta["finterval"] = phys.time_interval
    return kwargs


def _shape(array: "np.ndarray | RowFile") -> tuple[int, ...]:
    return array.file_shape if isinstance(array, RowFile) else tuple(array.shape)


def _data(array: "np.ndarray | RowFile") -> dict[str, Any]:
    """tifffile.imwrite's data arguments: the array, or a RowFile's blocks with its shape
    and dtype (contiguous writing: the same file layout as the array)."""
    if isinstance(array, RowFile):
        return {"data": array.blocks(), "shape": array.file_shape, "dtype": array.dtype}
    return {"data": array}


def _write(tmp: Path, array: "np.ndarray | RowFile", axes: str, info: str,
           phys: PhysicalMetadata | None, labels: Sequence[str] | None = None) -> None:
    ome_ok = set(axes) <= set("TZCQYX") and axes.endswith("YX") and "Q" not in axes.replace("Q", "", 1)
    if phys is not None and phys.source == "ome" and ome_ok:
        tifffile.imwrite(tmp, **_data(array), ome=True, photometric="minisblack",
                         metadata=_ome_metadata(axes, _shape(array), info, phys))
        return
    ij_axes = imagej_axes(axes)
    if ij_axes is not None and array.dtype in _IMAGEJ_DTYPES:
        tifffile.imwrite(tmp, **_data(array), **_imagej_kwargs(ij_axes, info, phys, labels))
        return
    kwargs: dict[str, Any] = {}
    if phys is not None and phys.pixel_size and phys.unit in _MICRON:
        kwargs = {"resolution": (1e4 / phys.pixel_size[0], 1e4 / phys.pixel_size[1]),
                  "resolutionunit": "CENTIMETER"}
    tifffile.imwrite(tmp, **_data(array), photometric="minisblack",
                     metadata={"axes": axes.replace("S", "Q"), "Info": info}, **kwargs)


def tiff_bytes(shape: Sequence[int], dtype: np.dtype | str) -> int:
    """Estimated size in bytes of an uncompressed TIFF holding ``shape`` x ``dtype``."""
    planes = int(np.prod(shape[:-2], dtype=np.float64)) if len(shape) > 2 else 1
    return int(np.prod(shape, dtype=np.float64)) * np.dtype(dtype).itemsize + 512 * planes + 65_536


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**28 else f"{n / 2**20:.1f} MiB"


def check_disk_space(folder: Path, needed: int) -> None:
    """Raise :class:`DiskSpaceError` if ``folder`` (or its nearest existing parent) has less
    than ``needed`` + :data:`SPACE_MARGIN` bytes free."""
    probe = Path(folder)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < needed + SPACE_MARGIN:
        raise DiskSpaceError(_space_message(folder, needed, free))


def _space_message(folder: Path, needed: int, free: int | None) -> str:
    have = f"; {_gib(free)} free" if free is not None else ""
    return (f"not enough space in output folder '{folder}': the outputs of this input need "
            f"about {_gib(needed)}{have}. Free space (or choose another -o) and rerun: "
            "completed outputs are kept and skipped")


def _is_disk_full(exc: OSError) -> bool:
    text = str(exc)
    return exc.errno in (errno.ENOSPC, errno.EDQUOT) or ("requested and" in text and "written" in text)


def write_outputs_atomic(outputs: Sequence[TiffOutput]) -> list[Path]:
    """Write several TIFFs that appear together or not at all.

    Free space is checked first; every file is written to a hidden temporary beside
    its target, then all are renamed (see :func:`hdn_deploy.atomic.atomic_paths`).

    Returns
    -------
    list of Path
        The targets.

    Raises
    ------
    DiskSpaceError
        Not enough space (before writing, or ENOSPC/EDQUOT while writing): names the
        output folder and the bytes needed; nothing of the group is left.
    InputError
        A folder cannot be created or written.
    ConfigError
        Axes that do not fit an array, metadata that is not JSON, unsupported dtype.
    """
    checked = [(o, *_check(Path(o.path), o.array, o.axes, o.metadata)) for o in outputs]
    folders = list(dict.fromkeys(Path(o.path).parent for o in outputs))
    for folder in folders:
        _writable_folder(folder)
    needed = sum(tiff_bytes(_shape(a), a.dtype) for _, a, _ in checked)
    check_disk_space(folders[0], needed)
    try:
        with atomic_paths([o.path for o in outputs]) as temps:
            for tmp, (out, array, info) in zip(temps, checked):
                _write(tmp, array, out.axes, info, out.physical)
    except OSError as exc:
        if _is_disk_full(exc):
            raise DiskSpaceError(_space_message(folders[0], needed, None)) from exc
        raise
    return [Path(o.path) for o in outputs]


def write_tiff_atomic(path: str | Path, array: np.ndarray, *, metadata: dict[str, Any],
                      axes: str, physical: PhysicalMetadata | None = None,
                      labels: Sequence[str] | None = None) -> Path:
    """Write ``array`` as a TIFF, atomically.

    The data go to a hidden temporary file (``.<name>.<random>.tmp``) in the target
    folder, which then replaces ``path`` with :func:`os.replace`; a failure removes
    the temporary file and leaves any existing ``path`` untouched. The folder is
    created if missing.

    Parameters
    ----------
    path : str or Path
        Target file.
    array : numpy.ndarray
        Float data (written as float32) or integer data.
    metadata : dict
        JSON-serialisable run metadata (ImageJ ``Info``, tifffile JSON or OME
        description; :func:`read_hdn_metadata` reads it back).
    axes : str
        One letter per dimension from ``STCZQYX`` with Y and X, e.g. ``'YX'``,
        ``'ZYX'``, ``'SYX'`` (samples; ImageJ ``ZYX``/``TZYX``), ``'YXC'``.
    physical : PhysicalMetadata, optional
        Pixel size, units ... to write (from the input; see module doc for formats).
    labels : sequence of str, optional
        One label per plane (ImageJ ``Labels``, shown as slice labels in Fiji), for
        ImageJ TIFFs; ConfigError if the count is not the number of planes.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    InputError
        If the folder cannot be created or written.
    ConfigError
        If ``axes`` does not fit ``array``, ``metadata`` is not JSON-serialisable or the
        dtype cannot be written.
    """
    path = Path(path)
    array, info = _check(path, np.asarray(array), axes, metadata)
    planes = int(np.prod(array.shape[:-2]))
    if labels is not None and len(labels) != planes:
        raise ConfigError(f"{path}: {len(labels)} labels for {planes} planes")
    _writable_folder(path.parent)
    with atomic_path(path) as tmp:
        _write(tmp, array, axes, info, physical, labels)
    return path


def cast_to_dtype(array: np.ndarray, dtype: np.dtype | type | str) -> np.ndarray:
    """Cast to ``dtype``; integers are rounded and clipped to the type's range.

    NaN becomes 0 for integer types. Float types are a plain cast.
    """
    dtype = np.dtype(dtype)
    array = np.asarray(array)
    if np.issubdtype(dtype, np.floating):
        return array.astype(dtype)
    if dtype == bool or not np.issubdtype(dtype, np.integer):
        raise ConfigError(f"cannot cast to data type {dtype}; expected an integer or float type")
    info = np.iinfo(dtype)
    if np.issubdtype(array.dtype, np.integer):
        return np.clip(array, info.min, info.max).astype(dtype)
    low, high = float(info.min), float(info.max)
    if high > info.max:  # 64-bit types: float(max) rounds up to 2**63 or 2**64
        high = float(np.nextafter(high, 0.0))
    rounded = np.rint(np.nan_to_num(array.astype(np.float64, copy=False), nan=0.0))
    return np.clip(rounded, low, high).astype(dtype)
