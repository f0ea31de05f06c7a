"""Images larger than memory: lazy planes of array-like sources and output sinks.

:meth:`hdn_deploy.Denoiser.iter_denoise` with ``out=`` reads its input band by band
(:meth:`hdn_deploy.tiling.Tiler.iter_tiles_lazy`) and writes finished rows of the MMSE and
std into ``out`` (:class:`hdn_deploy.tiling.StreamingMerger`), so its memory depends on
the tile size and the image width, not the image height. Sources and targets are any
array-likes that slice like numpy: ``numpy.memmap``, ``zarr.Array`` (also tifffile's
zarr store of a TIFF), ``h5py.Dataset``; this module adds the plane view of a stack and
the checks of a source that never read it whole.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from .errors import InputError

__all__ = ["ArrayOutputs", "BAND_BYTES", "FlatPlanes", "Plane", "check_source", "flat",
           "iter_bands", "planes"]

#: Bytes of float32 pixels read per block by the checks of a lazy source.
BAND_BYTES = 32 * 2**20


@dataclass(frozen=True)
class ArrayOutputs:
    """Where out-of-core denoising writes: writable array-likes of the input's shape,
    float32 (numpy, ``numpy.memmap``, ``zarr.Array``, tifffile memory map).

    Attributes
    ----------
    mmse : array-like
        Receives the MMSE, in intensity units.
    std : array-like or None
        Receives the per-pixel standard deviation of the samples (None: not written).
    """

    mmse: Any
    std: Any = None

    def targets(self) -> dict[str, Any]:
        """``{"mmse": ..., "std": ...}`` of the targets that are set."""
        return {k: v for k, v in (("mmse", self.mmse), ("std", self.std)) if v is not None}


class Plane:
    """Plane ``index`` (a tuple over the leading axes) of an array-like, sliced lazily:
    ``Plane(a, (3,))[r0:r1, :]`` reads ``a[3, r0:r1, :]`` only; assignment writes."""

    def __init__(self, array: Any, index: int | tuple[int, ...]) -> None:
        self.array = array
        self.index = index if isinstance(index, tuple) else (index,)
        self.shape = tuple(array.shape[len(self.index):])
        self.dtype = np.dtype(array.dtype)

    def __getitem__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        return np.asarray(self.array[(*self.index, *key)])

    def __setitem__(self, key, value) -> None:
        key = key if isinstance(key, tuple) else (key,)
        self.array[(*self.index, *key)] = value


class FlatPlanes:
    """An N-D array-like ``(..., Y, X)`` seen as a stack ``(n, Y, X)`` of its planes in C
    order, lazily (plane ``z`` is ``array[numpy.unravel_index(z, leading shape)]``), for
    reading and writing; 2D and 3D arrays are returned as they are by :func:`flat`."""

    def __init__(self, array: Any) -> None:
        self.array = array
        self._lead = tuple(array.shape[:-2])
        self.shape = (int(np.prod(self._lead)), *array.shape[-2:])
        self.dtype = np.dtype(array.dtype)

    def plane(self, z: int) -> Plane:
        return Plane(self.array, tuple(int(i) for i in np.unravel_index(z, self._lead)))

    def __getitem__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        return self.plane(key[0])[key[1:]]

    def __setitem__(self, key, value) -> None:
        self.plane(key[0])[key[1:]] = value


def flat(array: Any) -> Any:
    """``array`` as 2D or 3D: N-D array-likes (N > 3) become a :class:`FlatPlanes`."""
    return FlatPlanes(array) if len(array.shape) > 3 else array


def planes(array: Any) -> list[Any]:
    """The 2D planes of a 2D or 3D array-like (views, nothing is read)."""
    if len(array.shape) == 2:
        return [array]
    if isinstance(array, FlatPlanes):
        return [array.plane(z) for z in range(array.shape[0])]
    return [Plane(array, z) for z in range(array.shape[0])]


def iter_bands(array: Any, band_bytes: int = BAND_BYTES) -> Iterator[np.ndarray]:
    """float32 bands of rows of every plane of a 2D/3D array-like, about ``band_bytes``
    each."""
    for plane in planes(array):
        height, width = plane.shape
        rows = max(1, band_bytes // (4 * max(width, 1)))
        for r0 in range(0, height, rows):
            yield np.asarray(plane[r0:r0 + rows, :]).astype(np.float32, copy=False)


def check_source(source: Any) -> Any:
    """Check an array-like input without reading it: real numeric dtype, 2D ``(Y, X)``
    or 3D ``(n, Y, X)``, not empty. Returns it.

    Raises
    ------
    InputError
        Naming what is wrong.
    """
    shape, dtype = getattr(source, "shape", None), getattr(source, "dtype", None)
    if shape is None or dtype is None or not hasattr(source, "__getitem__"):
        raise InputError(f"expected an array-like with shape, dtype and slicing, got "
                         f"{type(source).__name__}")
    if np.dtype(dtype).kind not in "uif":
        raise InputError(f"expected a numeric image array, got dtype {dtype}")
    if len(shape) not in (2, 3) or 0 in tuple(shape):
        raise InputError(f"expected a 2D image (Y, X) or a stack (n, Y, X), got shape "
                         f"{tuple(shape)}; split channels or extra axes first")
    return source


def check_finite(block: np.ndarray) -> np.ndarray:
    """``block`` if every value is finite; InputError otherwise (as the in-memory path)."""
    if not np.isfinite(block).all():
        raise InputError("image contains NaN or Inf values")
    return block


def check_targets(out: ArrayOutputs, shape: tuple[int, ...]) -> None:
    """Every target of ``out`` has the input's ``shape``; InputError otherwise."""
    for kind, target in out.targets().items():
        if tuple(target.shape) != tuple(shape):
            raise InputError(f"out.{kind} has shape {tuple(target.shape)}; expected the "
                             f"input's shape {tuple(shape)}")
