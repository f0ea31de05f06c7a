"""Reader for the TIFFs hdn-deploy writes (MMSE, std, samples) and the bundled sample.

Only files whose ImageJ ``Info`` holds hdn-deploy's metadata are claimed, so other TIFFs
go to napari's own readers. The metadata (seed, model hash, settings, versions) ends up in
the layer's ``metadata["hdn_deploy"]``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import tifffile

from ..io import read_hdn_metadata

LayerData = tuple[np.ndarray, dict[str, Any], str]
_SAMPLE = Path(__file__).resolve().parents[1] / "sample_data" / "nuclei_noisy.tif"
_COLORMAPS = {"std": "magma"}


def _hdn_metadata(path: str | Path) -> dict[str, Any] | None:
    if Path(path).suffix.lower() not in (".tif", ".tiff"):
        return None
    meta = read_hdn_metadata(path)
    return meta if meta and meta.get("software") == "hdn-deploy" else None


def get_reader(path: str | list[str]) -> Callable[[str], list[LayerData]] | None:
    """napari reader hook: a reader for one hdn-deploy output TIFF, else None."""
    if isinstance(path, list) or _hdn_metadata(path) is None:
        return None
    return read_output


def read_output(path: str) -> list[LayerData]:
    """One image layer: float32 data (``(Y, X)``, ``(n, Y, X)``, samples ``(k, ...)``),
    named after the file, with the run's metadata under ``metadata["hdn_deploy"]``.

    Raises
    ------
    hdn_deploy.errors.InputError
        If the file holds no hdn-deploy metadata.
    """
    from ..errors import InputError

    meta = _hdn_metadata(path)
    if meta is None:
        raise InputError(f"'{path}' is not an hdn-deploy output (no hdn-deploy metadata)")
    data = tifffile.imread(path)
    kind = meta.get("kind", "")
    attrs = {"name": Path(path).stem, "metadata": {"hdn_deploy": meta},
             "colormap": _COLORMAPS.get(kind, "gray")}
    return [(data, attrs, "image")]


def sample_noisy() -> list[LayerData]:
    """The bundled noisy sample (256x256, 8-bit range, Poisson-Gaussian noise)."""
    return [(tifffile.imread(_SAMPLE).astype(np.float32), {"name": "nuclei_noisy"}, "image")]
