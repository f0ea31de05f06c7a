"""OME-Zarr (NGFF) input and output, read and written tile-wise (images larger than memory).

Reading (:func:`read_ome_zarr`) goes through ome-zarr-py's reader: the full-resolution
level as a lazy dask array, its axes (``t c z y x`` -> CSBDeep letters ``TCZYX``), the
physical scale and units of its ``coordinateTransformations`` and the channel names of
its ``omero`` metadata. A local path or any fsspec URL works (remote stores need their
fsspec package, e.g. s3fs).

Writing (:func:`create_ome_zarr` then :func:`finish_ome_zarr`): a zarr v3 float32 array
``0`` chunked ``(1, ..., 1, tile, tile)`` so that the rows the out-of-core denoiser emits
(bands of about one tile step) touch few chunks; then optional pyramid levels ``1, 2, ...``
(2 x 2 mean in Y and X, computed from level 0 by dask, chunk by chunk) and the NGFF
multiscales metadata written by ome-zarr-py (axes with units, scale per level), the
``omero`` channel names, and our run metadata under the ``hdn_deploy`` attribute.
napari opens the result with napari-ome-zarr (or ``hdn-deploy``'s reader for TIFFs).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._optional import require
from ..errors import InputError
from .metadata import PhysicalMetadata

__all__ = ["ZarrImage", "is_ome_zarr", "read_ome_zarr", "create_ome_zarr", "finish_ome_zarr",
           "read_zarr_metadata", "ZARR_SUFFIX"]

ZARR_SUFFIX = ".zarr"
_TYPES = {"T": "time", "C": "channel", "Z": "space", "Y": "space", "X": "space"}


@dataclass(frozen=True, eq=False)
class ZarrImage:
    """The full-resolution level of an OME-Zarr image.

    Attributes
    ----------
    array : dask.array.Array
        Lazy, in the file's axes order (``axes``), its dtype as stored.
    axes : str
        CSBDeep letters in file order, e.g. ``'YX'``, ``'CYX'``, ``'TCZYX'``.
    physical : PhysicalMetadata
        Pixel size (X, Y) and unit, Z spacing, time interval and unit, channel names.
    url : str
        Where it was read from.
    scale : tuple of float
        The level's scale per axis (1.0 where none is given).
    units : dict
        Unit per axis letter, as stored (``"micrometer"``, ``"second"`` ...).
    """

    array: Any
    axes: str
    physical: PhysicalMetadata
    url: str
    scale: tuple[float, ...] = ()
    units: dict[str, str] = field(default_factory=dict)


def is_ome_zarr(path: str | Path) -> bool:
    """True for a local folder holding an OME-Zarr image (zarr v2 or v3 with NGFF
    multiscales metadata)."""
    attrs = _local_attrs(Path(path))
    return "multiscales" in attrs or "multiscales" in attrs.get("ome", {})


def _local_attrs(path: Path) -> dict[str, Any]:
    for name, key in (("zarr.json", "attributes"), (".zattrs", None)):
        meta = path / name
        if meta.is_file():
            try:
                data = json.loads(meta.read_text())
            except (OSError, ValueError):
                return {}
            data = data.get(key, {}) if key else data
            return data if isinstance(data, dict) else {}
    return {}


def _node(url: str) -> Any:
    io = require("ome_zarr.io", purpose="reading OME-Zarr")
    reader = require("ome_zarr.reader", purpose="reading OME-Zarr")
    location = io.parse_url(url, mode="r")
    if location is None:
        raise InputError(f"'{url}' is not a zarr store (or cannot be opened)")
    for node in reader.Reader(location)():
        if node.data and node.metadata.get("axes"):
            return node
    raise InputError(f"'{url}' holds no OME-Zarr (NGFF multiscales) image")


def _level_scale(node: Any, ndim: int) -> tuple[float, ...]:
    transforms = (node.metadata.get("coordinateTransformations") or [[]])[0]
    for t in transforms:
        if t.get("type") == "scale" and len(t.get("scale", ())) == ndim:
            return tuple(float(s) for s in t["scale"])
    return (1.0,) * ndim


def _channel_names(url: str, node: Any) -> tuple[str, ...]:
    names = node.metadata.get("channel_names")
    if not names:
        attrs = dict(require("zarr", purpose="reading OME-Zarr").open_group(url, mode="r").attrs)
        omero = attrs.get("omero") or attrs.get("ome", {}).get("omero") or {}
        names = [c.get("label", "") for c in omero.get("channels", [])]
    return tuple(str(n) for n in names) if any(names) else ()


def read_ome_zarr(url: str | Path) -> ZarrImage:
    """Open an OME-Zarr image lazily: nothing but metadata is read.

    Raises
    ------
    InputError
        Naming the store: not a zarr store, no NGFF image, axes that are not a subset
        of ``t c z y x`` ending in ``y x``.
    """
    url = str(url)
    node = _node(url)
    array = node.data[0]
    axes = "".join(str(a["name"] if isinstance(a, dict) else a).upper()
                   for a in node.metadata["axes"])
    if not axes.endswith("YX") or set(axes) - set("TCZYX") or len(set(axes)) != len(axes):
        raise InputError(f"'{url}' has axes {axes!r}; expected a subset of TCZYX ending in YX")
    scale = _level_scale(node, array.ndim)
    units = {str(a["name"]).upper(): a["unit"] for a in node.metadata["axes"]
             if isinstance(a, dict) and a.get("unit")}
    by_axis = dict(zip(axes, scale))
    physical = PhysicalMetadata(
        source="ome-zarr", pixel_size=(by_axis["X"], by_axis["Y"]), unit=units.get("X"),
        z_spacing=by_axis.get("Z"), time_interval=by_axis.get("T"), time_unit=units.get("T"),
        channel_names=_channel_names(url, node), name=node.metadata.get("name"))
    return ZarrImage(array=array, axes=axes, physical=physical, url=url, scale=scale,
                     units=units)


def create_ome_zarr(path: str | Path, shape: tuple[int, ...], *, tile: int) -> Any:
    """A new zarr v3 group at ``path`` with an empty float32 array ``0`` of ``shape``,
    chunked ``(1, ..., 1, tile, tile)`` (clipped to the shape). Returns the array."""
    zarr = require("zarr", purpose="writing OME-Zarr")
    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    chunks = (1,) * (len(shape) - 2) + tuple(min(tile, s) for s in shape[-2:])
    return group.create_array("0", shape=tuple(shape), chunks=chunks, dtype="float32",
                              fill_value=np.nan)


def _axes(axes: str, units: dict[str, str]) -> list[dict[str, str]]:
    out = []
    for a in axes:
        entry = {"name": a.lower(), "type": _TYPES[a]}
        if units.get(a):
            entry["unit"] = units[a]
        out.append(entry)
    return out


def finish_ome_zarr(path: str | Path, *, axes: str, scale: tuple[float, ...],
                    units: dict[str, str], channel_names: tuple[str, ...] = (),
                    name: str | None = None, metadata: dict[str, Any] | None = None,
                    pyramid: int = 0) -> list[str]:
    """Add ``pyramid`` downsampled levels (2 x 2 mean in Y, X) to the group at ``path``
    whose level ``0`` is written, then the NGFF multiscales metadata (``axes`` letters
    with ``units``; ``scale`` of level 0 per axis), the channel names and our run
    ``metadata`` (attribute ``hdn_deploy``). Returns the level paths."""
    zarr = require("zarr", purpose="writing OME-Zarr")
    da = require("dask.array", purpose="writing an OME-Zarr pyramid")
    writer = require("ome_zarr.writer", purpose="writing OME-Zarr")
    group = zarr.open_group(str(path), mode="r+")
    level = da.from_zarr(group["0"])
    paths, scales = ["0"], [list(scale)]
    for k in range(1, pyramid + 1):
        if min(level.shape[-2:]) < 2:
            break
        factors = {level.ndim - 2: 2, level.ndim - 1: 2}
        level = da.coarsen(np.mean, level, factors, trim_excess=True).astype(np.float32)
        level = level.rechunk(group["0"].chunks)
        target = group.create_array(str(k), shape=level.shape, chunks=group["0"].chunks,
                                    dtype="float32")
        da.store(level, target, lock=False)
        level = da.from_zarr(target)
        paths.append(str(k))
        scales.append(list(scale[:-2]) + [s * 2**k for s in scale[-2:]])
    datasets = [{"path": p, "coordinateTransformations": [{"type": "scale", "scale": s}]}
                for p, s in zip(paths, scales)]
    writer.write_multiscales_metadata(group, datasets, axes=_axes(axes, units), name=name)
    ome = dict(group.attrs.get("ome", {}))
    if channel_names and "C" in axes:
        ome["omero"] = {"channels": [{"label": n, "active": True} for n in channel_names]}
        group.attrs["ome"] = ome
    if metadata is not None:
        group.attrs["hdn_deploy"] = metadata
    return paths


def read_zarr_metadata(path: str | Path) -> dict[str, Any] | None:
    """Our run metadata (attribute ``hdn_deploy``) of an OME-Zarr we wrote, or None."""
    value = _local_attrs(Path(path)).get("hdn_deploy")
    return value if isinstance(value, dict) else None


def denoise_ome_zarr(denoiser: Any, url: str | Path, outputs: dict[str, str | Path], *,
                     pyramid: int = 0, metadata: dict[str, Any] | None = None,
                     dask_client: Any = None, chunk: int = 4096, backend: str = "auto",
                     threads: int | None = 1, **options) -> dict[str, Any]:
    """Denoise an OME-Zarr image out of core into OME-Zarr outputs.

    Parameters
    ----------
    denoiser : hdn_deploy.Denoiser
    url : str or Path
        The input (local path or fsspec URL); read lazily, band by band.
    outputs : dict
        ``{"mmse": path, "std": path}`` (``std`` optional): local folders, each written
        in a hidden staging folder beside it and renamed when complete.
    pyramid : int
        Downsampled levels added to the MMSE (0: none).
    metadata : dict, optional
        Extra run metadata stored with ours (``hdn_deploy`` attribute).
    dask_client : distributed.Client, optional
        Denoise on this cluster instead (:func:`hdn_deploy.dask.denoise`): workers read
        the input and write the outputs' chunks themselves, so ``url`` and ``outputs``
        must be reachable from every worker. Same bytes as without it. ``backend`` and
        ``threads`` are then the workers' (see :func:`hdn_deploy.dask.denoise`).
    chunk : int
        With ``dask_client``: Y/X chunk size of the dask array (rounded to a multiple
        of the output's zarr chunks, so that no two tasks write one chunk).
    **options
        As :meth:`Denoiser.iter_denoise` (not ``keep_samples``/``checkpoints``).

    Returns
    -------
    dict
        The run metadata written.

    Raises
    ------
    InputError, ConfigError
        As :func:`read_ome_zarr` and ``Denoiser.iter_denoise``.
    """
    from contextlib import ExitStack

    from ..atomic import staged_folder
    from ..outofcore import ArrayOutputs, flat

    image = read_ome_zarr(url)
    tile = options.get("tile") or denoiser.package.recommended_tile
    with ExitStack() as stack:
        staging = {k: stack.enter_context(staged_folder(Path(p))) for k, p in outputs.items()}
        arrays = {k: create_ome_zarr(s, image.array.shape, tile=tile) for k, s in staging.items()}
        if dask_client is None:
            out = ArrayOutputs(flat(arrays["mmse"]),
                               flat(arrays["std"]) if "std" in arrays else None)
            run_meta = denoiser.denoise(flat(image.array), out=out, **options).metadata
        else:
            run_meta = _denoise_on_cluster(denoiser, image, arrays, dask_client, chunk, tile,
                                           backend=backend, threads=threads, **options)
        meta = {**run_meta, **(metadata or {}), "input": str(url), "axes": image.axes,
                "input_metadata": image.physical.to_json()}
        for kind, folder in staging.items():
            finish_ome_zarr(folder, axes=image.axes, scale=image.scale, units=image.units,
                            channel_names=image.physical.channel_names,
                            name=image.physical.name, metadata={**meta, "kind": kind},
                            pyramid=pyramid if kind == "mmse" else 0)
    return meta


def _denoise_on_cluster(denoiser: Any, image: ZarrImage, arrays: dict[str, Any], client: Any,
                        chunk: int, tile: int, *, backend: str, threads: int | None,
                        **options) -> dict[str, Any]:
    """hdn_deploy.dask.denoise of the image's planes, stored chunk-wise into ``arrays``."""
    da = require("dask.array", purpose="denoising on a dask cluster")
    from .. import dask as hdn_dask

    shape = image.array.shape
    step = -(-max(chunk, tile) // tile) * tile  # a multiple of the output's zarr chunks
    planes = image.array.reshape((-1, *shape[-2:]))
    planes = planes.rechunk((1, *(_axis_chunks(n, step, tile) for n in shape[-2:])))
    result = hdn_dask.denoise(planes, denoiser.package.path, backend=backend, threads=threads,
                              **options)
    lazy = {"mmse": result.mmse, "std": result.std}
    sources = [lazy[k].reshape(shape) for k in arrays]
    client.compute(da.store(sources, list(arrays.values()), lock=False, compute=False),
                   sync=True)
    return result.metadata


def _axis_chunks(size: int, step: int, tile: int) -> tuple[int, ...]:
    """Chunks of ``step`` along an axis of ``size``; a last remainder shorter than
    ``tile`` joins the chunk before it (every chunk must hold a tile)."""
    sizes = [step] * (size // step) + ([size % step] if size % step else [])
    if len(sizes) > 1 and sizes[-1] < tile:
        sizes[-2:] = [sizes[-2] + sizes[-1]]
    return tuple(sizes)
