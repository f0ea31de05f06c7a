"""TIFF input and output: find inputs, read one-channel images, write results atomically.

Results are written as ImageJ-compatible TIFF (Fiji and napari open them) with the
run's metadata as JSON in the ImageJ ``Info`` property; :func:`read_hdn_metadata`
reads it back.
"""
from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import tifffile

from .atomic import atomic_path, create_temp_beside, staged_folder  # noqa: F401 (re-exported)
from .errors import ConfigError, InputError

__all__ = [
    "ImageData",
    "expand_inputs",
    "read_image",
    "write_tiff_atomic",
    "read_hdn_metadata",
    "cast_to_dtype",
    "output_path",
    "create_temp_beside",
]

TIFF_SUFFIXES = (".tif", ".tiff")
_GLOB_CHARS = frozenset("*?[")
# Stack axes we name; any other non-channel tifffile axis letter becomes 'Q' (unknown).
_STACK_AXES = frozenset("ZTQ")
# What ImageJ calls each stack axis (it knows T, Z and C only; C is never a stack here).
_IMAGEJ_AXES = {
    "YX": "YX", "ZYX": "ZYX", "TYX": "TYX", "SYX": "ZYX", "QYX": "ZYX", "TZYX": "TZYX"
}
# dtypes ImageJ stores as they are; other integers are written as plain TIFF.
_IMAGEJ_DTYPES = frozenset(np.dtype(d) for d in ("uint8", "uint16", "int16", "float32"))
_COLOR_PHOTOMETRIC = frozenset(
    {tifffile.PHOTOMETRIC.RGB, tifffile.PHOTOMETRIC.YCBCR, tifffile.PHOTOMETRIC.SEPARATED}
)


@dataclass(frozen=True, eq=False)
class ImageData:
    """An image read for denoising.

    Attributes
    ----------
    array : numpy.ndarray
        float32 data, shape ``(Y, X)`` or ``(n, Y, X)``.
    dtype : numpy.dtype
        dtype stored in the file (outputs can be cast back to it).
    axes : str
        ``'YX'``, ``'ZYX'``, ``'TYX'`` or ``'QYX'`` (a stack of unknown kind).
    path : pathlib.Path
        The source file.
    """

    array: np.ndarray
    dtype: np.dtype
    axes: str
    path: Path


# -- finding inputs -----------------------------------------------------------------


def _is_tiff(path: Path) -> bool:
    return path.suffix.lower() in TIFF_SUFFIXES and not path.name.startswith(".")


def _expand_one(item: str | Path) -> list[Path]:
    path = Path(item)
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.is_file() and _is_tiff(p))
        if not found:
            raise InputError(f"folder '{path}' contains no .tif/.tiff files")
        return found
    if path.is_file():
        return [path]
    if _GLOB_CHARS & set(str(item)):
        found = sorted(Path(p) for p in glob.glob(str(item), recursive=True) if Path(p).is_file())
        if not found:
            raise InputError(f"pattern '{item}' matches no files")
        return found
    raise InputError(f"input '{path}' does not exist; give a TIFF file, a folder or a glob pattern")


def expand_inputs(inputs: Sequence[str | Path]) -> list[Path]:
    """Files named by ``inputs``: files, folders (their TIFFs) and glob patterns.

    Folders contribute their ``*.tif``/``*.tiff`` files (not recursive, sorted,
    hidden files skipped); patterns are expanded with :func:`glob.glob` (``**``
    recurses) and sorted. Duplicates are dropped, first occurrence kept.

    Raises
    ------
    InputError
        If a path does not exist, a folder has no TIFF, a pattern matches nothing
        or nothing is given.
    """
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    out: list[Path] = []
    seen: set[Path] = set()
    for item in inputs:
        for path in _expand_one(item):
            key = path.resolve()
            if key not in seen:
                seen.add(key)
                out.append(path)
    if not out:
        raise InputError("no input files given")
    return out


# -- reading --------------------------------------------------------------------------


def _read_series(path: Path) -> tuple[np.ndarray, str, int]:
    if not path.is_file():
        raise InputError(f"'{path}' does not exist or is not a file")
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            photometric = tif.pages[0].photometric
            return series.asarray(), series.axes, photometric
    except (tifffile.TiffFileError, OSError, ValueError, IndexError) as exc:
        raise InputError(f"cannot read '{path}' as a TIFF image: {exc}") from exc


def _normalise_axes(
    path: Path, data: np.ndarray, axes: str, photometric: int
) -> tuple[np.ndarray, str]:
    """Check channels, squeeze singleton axes and name the result 'YX' or '?YX'."""
    if len(axes) != data.ndim:  # tifffile gives one letter per dimension; be safe
        axes = "Q" * (data.ndim - 2) + "YX" if data.ndim >= 2 else "X" * data.ndim
    sizes = dict(zip(axes, data.shape))
    if photometric in _COLOR_PHOTOMETRIC or any(sizes.get(a, 1) > 1 for a in "CS"):
        raise InputError(
            f"'{path}' has several channels (axes {axes}, shape {data.shape}); "
            "HDN expects one channel; split channels first (a stack of 3 or 4 planes "
            "saved as RGB by mistake: re-save it with photometric='minisblack')"
        )
    keep = [i for i, (a, n) in enumerate(zip(axes, data.shape)) if n > 1 or a in "YX"]
    data = data.reshape([data.shape[i] for i in keep])
    axes = "".join(axes[i] for i in keep)
    if data.ndim < 2:
        raise InputError(f"'{path}' is {data.ndim}-D (shape {data.shape}); expected a 2-D image")
    if data.ndim > 3 or axes[-2:] != "YX":
        raise InputError(
            f"'{path}' has axes {axes} with shape {data.shape} after dropping singleton axes; "
            "expected YX or one stack axis before YX (ZYX, TYX); split it into 2-D or 3-D files"
        )
    if data.ndim == 3:
        axes = (axes[0] if axes[0] in _STACK_AXES else "Q") + "YX"
    return data, axes


def read_image(path: str | Path) -> ImageData:
    """Read a one-channel 2-D image or stack of 2-D images from a TIFF.

    Parameters
    ----------
    path : str or Path
        TIFF file; its first series is read.

    Returns
    -------
    ImageData

    Raises
    ------
    InputError
        Naming the file, if it is missing or not a readable TIFF, empty, complex,
        has several channels (RGB or C/S axes), is not 2-D/3-D after dropping
        singleton axes, or holds NaN or infinite values.
    """
    path = Path(path)
    data, axes, photometric = _read_series(path)
    if data.size == 0:
        raise InputError(f"'{path}' is empty (shape {data.shape})")
    if np.iscomplexobj(data) or not (np.issubdtype(data.dtype, np.number) or data.dtype == bool):
        raise InputError(f"'{path}' has data type {data.dtype}; expected integers or real floats")
    data, axes = _normalise_axes(path, data, axes, photometric)
    with np.errstate(over="ignore"):  # values beyond float32 become inf, reported below
        array = np.ascontiguousarray(data, dtype=np.float32)
    if not np.isfinite(array).all():
        bad = int(np.count_nonzero(~np.isfinite(array)))
        raise InputError(
            f"'{path}' has {bad} NaN or infinite values (after conversion to float32); "
            "replace them before denoising"
        )
    return ImageData(array=array, dtype=data.dtype, axes=axes, path=path)


# -- writing --------------------------------------------------------------------------


def _writable_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create output folder '{folder}': {exc}") from exc
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"output folder '{folder}' is not writable; choose another folder")


def write_tiff_atomic(
    path: str | Path, array: np.ndarray, *, metadata: dict[str, Any], axes: str
) -> Path:
    """Write ``array`` as an ImageJ-compatible TIFF, atomically.

    The data go to a hidden temporary file (``.<name>.<random>.tmp``) in the target
    folder, which then replaces ``path`` with :func:`os.replace`; a failure removes
    the temporary file and leaves any existing ``path`` untouched. The folder is
    created if missing.

    Parameters
    ----------
    path : str or Path
        Target file.
    array : numpy.ndarray
        Float data (written as float32) or integer data. uint8, uint16 and int16
        are written as ImageJ TIFF; other integer types (which ImageJ cannot store)
        as plain TIFF, with the metadata in tifffile's JSON description.
    metadata : dict
        JSON-serialisable; stored in the ImageJ ``Info`` property.
    axes : str
        ``'YX'``, ``'ZYX'``, ``'TYX'``, ``'SYX'``, ``'QYX'`` (``SYX`` and ``QYX``
        are saved as ImageJ's ``'ZYX'``) or ``'TZYX'`` (e.g. samples of a stack).

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    InputError
        If the folder cannot be created or written.
    ConfigError
        If ``axes`` does not fit ``array`` or ``metadata`` is not JSON-serialisable.
    """
    path = Path(path)
    array = np.asarray(array)
    if axes not in _IMAGEJ_AXES or len(axes) != array.ndim:
        raise ConfigError(
            f"axes {axes!r} do not fit an array of shape {array.shape}; "
            f"expected one of {', '.join(_IMAGEJ_AXES)} with one letter per dimension"
        )
    try:
        info = json.dumps(metadata)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"metadata for '{path}' is not JSON-serialisable: {exc}") from exc
    if array.dtype == bool:
        array = array.astype(np.uint8)
    elif np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float32, copy=False)
    elif not np.issubdtype(array.dtype, np.integer):
        raise ConfigError(
            f"cannot write data type {array.dtype} to '{path}'; use float32 or integers"
        )
    folder = path.parent
    _writable_folder(folder)
    ij_axes = _IMAGEJ_AXES[axes]
    with atomic_path(path) as tmp:
        if array.dtype in _IMAGEJ_DTYPES:
            tifffile.imwrite(tmp, array, imagej=True, metadata={"axes": ij_axes, "Info": info})
        else:
            tifffile.imwrite(tmp, array, metadata={"axes": ij_axes, "Info": info})
    return path


def read_hdn_metadata(path: str | Path) -> dict[str, Any] | None:
    """The JSON metadata dict written by :func:`write_tiff_atomic`, or None.

    None when the file cannot be read, has no ``Info`` or it is not a JSON object.
    """
    try:
        with tifffile.TiffFile(path) as tif:
            info = (tif.imagej_metadata or {}).get("Info")
            if info is None and tif.shaped_metadata:
                info = tif.shaped_metadata[0].get("Info")
    except (tifffile.TiffFileError, OSError, ValueError):
        return None
    if not isinstance(info, str):
        return None
    try:
        value = json.loads(info)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


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
    if np.issubdtype(array.dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(array, info.min, info.max).astype(dtype)
    info = np.iinfo(dtype)
    low, high = float(info.min), float(info.max)
    if high > info.max:  # 64-bit types: float(max) rounds up to 2**63 or 2**64
        high = float(np.nextafter(high, 0.0))
    rounded = np.rint(np.nan_to_num(array.astype(np.float64, copy=False), nan=0.0))
    return np.clip(rounded, low, high).astype(dtype)


def output_path(input_path: str | Path, out_dir: str | Path, suffix: str) -> Path:
    """``out_dir / f"{stem}_{suffix}.tif"`` for an input file.

    The stem drops ``.tif``/``.tiff`` (and an ``.ome`` before it).

    Raises
    ------
    InputError
        If the result would be the input file itself.
    """
    input_path = Path(input_path)
    name = input_path.name
    for ext in (".ome.tiff", ".ome.tif", ".tiff", ".tif"):
        if name.lower().endswith(ext):
            name = name[: -len(ext)]
            break
    out = Path(out_dir) / (f"{name}_{suffix}.tif" if suffix else f"{name}.tif")
    if out.resolve() == input_path.resolve():
        raise InputError(
            f"output '{out}' would overwrite the input '{input_path}'; "
            "choose another output folder or suffix"
        )
    return out
