"""TIFF (and OME-Zarr) input and output for denoising.

- :mod:`.reading`: series, axes, multi-file OME companions, memory checks -> :class:`ImageData`.
- :mod:`.axes`: axes letters, ``axes=`` override, plausibility, planes.
- :mod:`.metadata`: physical metadata carried to outputs; our run metadata read back.
- :mod:`.writing`: outputs in the input's axes order and format, atomically, in groups.
- :mod:`.batch`: inputs, mirrored output paths, resume fingerprints, overwrite protection.
- :mod:`.omezarr`: OME-Zarr (NGFF) read lazily and written tile-wise (needs ``[big]``).
"""
from __future__ import annotations

import tifffile  # noqa: F401  (tests patch hdn_deploy.io.tifffile.imwrite)

from ..atomic import atomic_path, create_temp_beside, staged_folder  # noqa: F401 (re-exported)
from .axes import AXES_LETTERS, Layout, layout_from_file, parse_axes
from .batch import (TIFF_SUFFIXES, check_output_conflicts, common_root, expand_inputs,
                    fingerprint, is_complete, output_path, plan_outputs, split_own_outputs)
from .metadata import OUTPUT_KINDS, PhysicalMetadata, is_hdn_output, read_hdn_metadata
from .reading import (ImageData, SeriesInfo, available_memory, check_memory, list_series,
                      ome_companions_of, open_image_lazy, read_bytes_needed, read_image)
from .writing import (RowFile, TiffOutput, _writable_folder, cast_to_dtype, check_disk_space,  # noqa: F401
                      imagej_axes, tiff_bytes, write_outputs_atomic, write_tiff_atomic)

__all__ = [
    "ImageData", "SeriesInfo", "PhysicalMetadata", "Layout", "RowFile", "TiffOutput",
    "AXES_LETTERS", "OUTPUT_KINDS", "TIFF_SUFFIXES",
    "expand_inputs", "split_own_outputs", "common_root", "output_path", "plan_outputs",
    "fingerprint", "is_complete", "check_output_conflicts",
    "list_series", "ome_companions_of", "read_image", "open_image_lazy", "read_bytes_needed", "available_memory", "check_memory",
    "layout_from_file", "parse_axes",
    "write_tiff_atomic", "write_outputs_atomic", "check_disk_space", "tiff_bytes",
    "imagej_axes", "read_hdn_metadata", "is_hdn_output", "cast_to_dtype",
    "create_temp_beside",
]
