"""Inference backends. ``create_backend(name, package, ...)`` picks one by name.

Names: ``cpu`` / ``cuda`` / ``ort-tensorrt`` (onnxruntime with that execution provider),
``auto`` (CUDA when onnxruntime-gpu sees a GPU, else CPU), ``tensorrt`` (native TensorRT
engines with cupy buffers; ``pip install 'hdn-deploy[tensorrt]'``, see ``backends.tensorrt``).
"""
from __future__ import annotations

from .._optional import require
from ..options import BackendName, parse, values
from ..package import ModelPackage
from .base import Backend

BACKENDS = values(BackendName)


def create_backend(name: BackendName | str, package: ModelPackage, *, threads: int | None = None,
                   **options) -> Backend:
    """Instantiate the backend ``name`` for ``package``; ConfigError for an unknown name."""
    name = parse(BackendName, name, "backend").value
    if name == "tensorrt":  # imports tensorrt and cupy lazily, in the constructor
        from .tensorrt import TensorRTBackend

        return TensorRTBackend(package, threads=threads, **options)
    from .onnxrt import OnnxRuntimeBackend

    if name == "auto":
        ort = require("onnxruntime", purpose="the onnxruntime backend")
        name = "cuda" if "CUDAExecutionProvider" in ort.get_available_providers() else "cpu"
    device = {"cpu": "cpu", "cuda": "cuda", "ort-tensorrt": "tensorrt"}[name]
    return OnnxRuntimeBackend(package, device=device, threads=threads, **options)


__all__ = ["Backend", "BACKENDS", "create_backend"]
