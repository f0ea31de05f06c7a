"""Checkpoint -> model package (ONNX) and ONNX -> TensorRT engines.

Installed as ``hdn_deploy.export``; needs the ``[export]`` extra (torch, onnx).
"""
from .onnx_export import package_from_checkpoint

__all__ = ["package_from_checkpoint"]
