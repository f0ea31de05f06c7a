"""Physical metadata carried from an input TIFF to its outputs, and our run metadata.

Read: ImageJ (pixel size from the resolution tags, ``unit``, ``spacing``, ``finterval``),
OME-XML (``PhysicalSizeX/Y/Z`` with units, ``TimeIncrement`` with unit, channel names,
image name and description) and the resolution tags of plain TIFFs (inch/centimetre).
Written: the same fields in the output's own format (see :mod:`.writing`), and all of
them in our run metadata (JSON) as ``input_metadata``.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import tifffile

__all__ = ["PhysicalMetadata", "physical_metadata", "read_hdn_metadata", "is_hdn_output",
           "OUTPUT_KINDS"]

#: The kinds of file ``hdn-deploy denoise`` writes (``"kind"`` in our run metadata).
OUTPUT_KINDS = ("mmse", "std", "samples")
_MAX_DESCRIPTION = 100_000
_UM_PER = {"CENTIMETER": 1e4, "INCH": 25_400.0}


@dataclass(frozen=True)
class PhysicalMetadata:
    """Physical calibration of an image (all optional).

    Attributes
    ----------
    source : str
        ``'imagej'``, ``'ome'`` or ``'tiff'``: where the input kept it.
    pixel_size : tuple of float or None
        (x, y) size of a pixel in ``unit``.
    unit : str or None
        Length unit of ``pixel_size`` and ``z_spacing`` (e.g. ``'um'``, ``'µm'``).
    z_spacing : float or None
        Distance between Z planes, in ``unit``.
    time_interval : float or None
        Time between T points, in ``time_unit`` (ImageJ ``finterval``: seconds).
    time_unit : str or None
    channel_names : tuple of str
        One name per channel (OME), empty if unknown.
    name : str or None
        OME image name.
    description : str or None
        The input's description (OME ``Image/Description``, else the TIFF
        ImageDescription), at most 100,000 characters.
    """

    source: str = "tiff"
    pixel_size: tuple[float, float] | None = None
    unit: str | None = None
    z_spacing: float | None = None
    time_interval: float | None = None
    time_unit: str | None = None
    channel_names: tuple[str, ...] = field(default_factory=tuple)
    name: str | None = None
    description: str | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict of the fields that are set."""
        return {k: (list(v) if isinstance(v, tuple) else v)
                for k, v in asdict(self).items() if v not in (None, ())}


def _positive(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def _resolution(page: tifffile.TiffPage) -> tuple[float, float] | None:
    try:
        xres, yres = page.get_resolution()
    except (KeyError, ValueError, ZeroDivisionError, TypeError):
        return None
    x, y = _positive(xres), _positive(yres)
    if x is None or y is None or (x == 1 and y == 1):
        return None
    return 1.0 / x, 1.0 / y


def _imagej(tif: tifffile.TiffFile, page: tifffile.TiffPage) -> PhysicalMetadata:
    ij = tif.imagej_metadata or {}
    return PhysicalMetadata(
        source="imagej", pixel_size=_resolution(page), unit=ij.get("unit"),
        z_spacing=_positive(ij.get("spacing")), time_interval=_positive(ij.get("finterval")),
        time_unit="s" if _positive(ij.get("finterval")) else None,
        description=_description(page),
    )


def _ome_image(tif: tifffile.TiffFile, index: int) -> dict[str, Any]:
    try:
        ome = tifffile.xml2dict(tif.ome_metadata or "")["OME"]
    except (ValueError, KeyError, TypeError):
        return {}
    images = ome.get("Image", [])
    images = images if isinstance(images, list) else [images]
    return images[index] if 0 <= index < len(images) else {}


def _ome(tif: tifffile.TiffFile, index: int) -> PhysicalMetadata:
    image = _ome_image(tif, index)
    pixels = image.get("Pixels", {})
    channels = pixels.get("Channel", [])
    channels = channels if isinstance(channels, list) else [channels]
    names = tuple(str(c.get("Name", "")) for c in channels if isinstance(c, dict))
    x, y = _positive(pixels.get("PhysicalSizeX")), _positive(pixels.get("PhysicalSizeY"))
    unit = pixels.get("PhysicalSizeXUnit") or ("µm" if x else None)
    return PhysicalMetadata(
        source="ome", pixel_size=(x, y) if x and y else None, unit=unit,
        z_spacing=_positive(pixels.get("PhysicalSizeZ")),
        time_interval=_positive(pixels.get("TimeIncrement")),
        time_unit=pixels.get("TimeIncrementUnit") or ("s" if pixels.get("TimeIncrement") else None),
        channel_names=names if any(names) else (), name=image.get("Name"),
        description=_text(image.get("Description")),
    )


def _text(value: Any) -> str | None:
    return value[:_MAX_DESCRIPTION] if isinstance(value, str) and value else None


def _description(page: tifffile.TiffPage) -> str | None:
    return _text(page.description)


def _plain(page: tifffile.TiffPage) -> PhysicalMetadata:
    unit = getattr(page.resolutionunit, "name", "NONE")
    size = _resolution(page) if unit in _UM_PER else None
    if size is not None:
        size = (size[0] * _UM_PER[unit], size[1] * _UM_PER[unit])
    description = _description(page)
    if description and description.startswith("{") and '"shape"' in description:
        description = None  # tifffile's own shape record, not the acquisition's
    return PhysicalMetadata(source="tiff", pixel_size=size, unit="um" if size else None,
                            description=description)


def physical_metadata(tif: tifffile.TiffFile, index: int) -> PhysicalMetadata:
    """The physical metadata of series ``index`` of an open TIFF (never raises)."""
    page = tif.series[index].keyframe
    if tif.is_ome:
        return _ome(tif, index)
    if tif.is_imagej:
        return _imagej(tif, page)
    return _plain(page)


def read_hdn_metadata(path: str | Path) -> dict[str, Any] | None:
    """The JSON run metadata hdn-deploy wrote into a TIFF, or None.

    Looked up in the ImageJ ``Info`` property, tifffile's JSON description (``Info``)
    and the OME ``Image/Description``. None when the file cannot be read, has none of
    them or it is not a JSON object.
    """
    try:
        with tifffile.TiffFile(path) as tif:
            info = (tif.imagej_metadata or {}).get("Info")
            if info is None and tif.shaped_metadata:
                info = tif.shaped_metadata[0].get("Info")
            if info is None and tif.is_ome:
                info = _ome_image(tif, 0).get("Description")
    except (tifffile.TiffFileError, OSError, ValueError, IndexError, KeyError):
        return None
    if not isinstance(info, str):
        return None
    try:
        value = json.loads(info)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def is_hdn_output(path: str | Path) -> bool:
    """True if ``path`` is a TIFF that ``hdn-deploy denoise`` wrote (judged by its run
    metadata: ``software`` is ``hdn-deploy`` and ``kind`` one of :data:`OUTPUT_KINDS`)."""
    meta = read_hdn_metadata(path)
    return bool(meta) and meta.get("software") == "hdn-deploy" and meta.get("kind") in OUTPUT_KINDS
