"""Checkpoint -> model package (ONNX) and ONNX -> TensorRT engines.

Installed as ``hdn_deploy.export``. The ONNX export needs the ``[export]`` extra (torch);
it is imported lazily so that ``hdn_deploy.export.tensorrt`` and ``.precision`` work on a
machine without torch.
"""
from __future__ import annotations

__all__ = ["package_from_checkpoint"]


def __getattr__(name: str):
    if name == "package_from_checkpoint":
        from .onnx_export import package_from_checkpoint

        return package_from_checkpoint
    raise AttributeError(f"module 'hdn_deploy.export' has no attribute {name!r}")
