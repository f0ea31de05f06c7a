"""Add a distilled direct denoiser (``hdn-deploy distill``) to a model package.

The student is exported to ``direct.onnx`` (input ``image`` (1, 1, H, W), output ``mmse``
(1, 1, H, W), normalised units, dynamic H and W), checked with onnx.checker and against
PyTorch (max abs difference <= 1e-4), and listed in the manifest (``graphs.direct`` and
``direct``; ``format_version`` 3). The sampler's graphs are copied unchanged.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import torch

from hdn_deploy.atomic import staged_folder
from hdn_deploy.errors import PackageError
from hdn_deploy.manifest import (
    DIRECT_FORMAT_VERSION,
    DirectInfo,
    GraphEntry,
    manifest_to_json,
)
from hdn_deploy.package import DIRECT_FILE, MANIFEST_FILE, ModelPackage, load_package, sha256_file
from hdn_deploy.schema import freeze

from ..training.distill import DirectUNet, load_direct
from .onnx_export import DEFAULT_OPSET, VERIFY_TOLERANCE, _export


def export_direct_graph(student: DirectUNet, path: Path, *, opset: int = DEFAULT_OPSET) -> None:
    """Write ``student`` as an ONNX graph ``image -> mmse`` with dynamic H and W."""
    size = 4 * student.config.spatial_multiple
    example = torch.zeros(1, 1, size, size)
    spatial = {2: "height", 3: "width"}
    _export(student, (example,), path, ["image"], ["mmse"],
            {"image": spatial, "mmse": spatial}, opset)


def verify_direct(path: Path, student: DirectUNet, *, size: int, seed: int = 0,
                  tolerance: float = VERIFY_TOLERANCE) -> float:
    """Max abs difference of onnxruntime and PyTorch on a random (1, 1, size, size) image
    (normalised units); PackageError above ``tolerance``."""
    import onnx
    import onnxruntime as ort

    onnx.checker.check_model(str(path), full_check=True)
    image = np.random.default_rng(seed).standard_normal((1, 1, size, size), dtype=np.float32)
    with torch.no_grad():
        expected = student(torch.from_numpy(image)).numpy()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    got = session.run(None, {"image": image})[0]
    diff = float(np.abs(got - expected).max())
    if not diff <= tolerance:
        raise PackageError(f"direct graph verification failed: onnxruntime differs from "
                           f"PyTorch by {diff:.3g} (normalised units), above {tolerance:g}")
    return diff


def check_compatible(package: ModelPackage, ckpt, source: Path) -> None:
    """PackageError unless the direct denoiser was distilled from this package's model (same
    weights hash and normalisation) and fits its tiling (spatial multiple divides)."""
    m = package.manifest
    if ckpt.teacher_sha256 != m.weights_sha256:
        raise PackageError(
            f"{source}: this direct denoiser was distilled from the HDN with weights "
            f"{ckpt.teacher_sha256[:12]}..., but {package.path} holds {m.weights_sha256[:12]}...; "
            "distill from this package's checkpoint")
    norm = m.normalization
    if not (np.isclose(ckpt.normalization.mean, norm.mean, rtol=1e-6)
            and np.isclose(ckpt.normalization.std, norm.std, rtol=1e-6)):
        raise PackageError(f"{source}: normalisation differs from {package.path}'s")
    if package.spatial_multiple % ckpt.config.spatial_multiple:
        raise PackageError(f"{source}: the direct denoiser needs sides that are multiples of "
                           f"{ckpt.config.spatial_multiple}, which the package's tiles "
                           f"(multiples of {package.spatial_multiple}) are not")


def write_direct(package: ModelPackage, direct: str | Path, staging: Path, *,
                 opset: int = DEFAULT_OPSET, verify: bool = True):
    """Export the direct denoiser ``direct`` (distill run folder or checkpoint) into
    ``staging`` (a copy of ``package``); return the updated manifest (not written)."""
    ckpt = load_direct(direct)
    check_compatible(package, ckpt, Path(direct))
    student = ckpt.build()
    export_direct_graph(student, staging / DIRECT_FILE, opset=opset)
    size = max(package.spatial_multiple, package.manifest.training_patch_size or 0)
    diff = verify_direct(staging / DIRECT_FILE, student, size=size) if verify else None
    source = Path(direct) / "best.safetensors" if Path(direct).is_dir() else Path(direct)
    m = package.manifest
    return dataclasses.replace(
        m, format_version=DIRECT_FORMAT_VERSION,
        graphs=dataclasses.replace(m.graphs, direct=GraphEntry(
            file=DIRECT_FILE, sha256=sha256_file(staging / DIRECT_FILE))),
        direct=DirectInfo(weights_sha256=sha256_file(source), teacher_sha256=ckpt.teacher_sha256,
                          spatial_multiple=ckpt.config.spatial_multiple,
                          verified_max_abs_diff=diff,
                          provenance=freeze({**ckpt.provenance,
                                             "architecture": ckpt.config.to_dict()})))


def copy_package(package: ModelPackage, staging: Path) -> None:
    """Copy the package's files (not sub-folders) into ``staging``."""
    for item in package.path.iterdir():
        if item.is_file():
            shutil.copy2(item, staging / item.name)


def add_direct(package_dir: str | Path, direct: str | Path, output: str | Path, *,
               opset: int = DEFAULT_OPSET, verify: bool = True, overwrite: bool = False) -> Path:
    """Copy the package at ``package_dir`` to ``output`` with the direct denoiser added.

    Raises
    ------
    PackageError
        ``output`` exists (without ``overwrite``); the direct denoiser does not belong to
        this package's model (see :func:`check_compatible`); verification failed.
    """
    package = load_package(package_dir)
    output = Path(output)
    if output.exists() and not overwrite:
        raise PackageError(f"{output} exists already; remove it or pass --overwrite")
    with staged_folder(output) as staging:
        copy_package(package, staging)
        manifest = write_direct(package, direct, staging, opset=opset, verify=verify)
        (staging / MANIFEST_FILE).write_text(json.dumps(manifest_to_json(manifest), indent=2))
    return output
