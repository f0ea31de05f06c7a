"""Lazy imports of optional heavy dependencies with an install hint."""
from __future__ import annotations

import importlib
from types import ModuleType

from .errors import MissingDependencyError

_EXTRA_FOR = {
    "torch": "train",
    "onnx": "export",
    "onnxscript": "export",
    "safetensors": "train",
    "yaml": "train",
    "matplotlib": "train",
    "onnxruntime": "cpu",
    "tensorrt": "tensorrt",
    "bioimageio": "bmz",
    "napari": "napari",
    "dask": "big",
    "distributed": "big",
    "zarr": "big",
    "ome_zarr": "big",
}


def require(module: str, *, purpose: str, extra: str | None = None) -> ModuleType:
    """Import ``module`` or raise MissingDependencyError saying how to install it.

    ``extra`` names the pip extra to suggest (default: the usual extra of ``module``).
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        extra = extra or _EXTRA_FOR.get(module.split(".")[0], "dev")
        raise MissingDependencyError(
            f"{purpose} needs the Python package '{module}', which is not installed "
            f"({exc}). Install it with: pip install 'hdn-deploy[{extra}]'"
        ) from exc
