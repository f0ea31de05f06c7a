"""Model packages: the folder the runtime loads.

Layout (``format_version`` 2; version 1 is read too, see :mod:`hdn_deploy.manifest`)::

    MODEL/
      manifest.json   format, normalisation, latent levels, tiling hints, intensity range,
                      hashes, provenance (schema: hdn_deploy.manifest.Manifest)
      encoder.onnx    image (1,1,H,W) -> bu_<i> (1,F_i,H/2^(i+1),W/2^(i+1)) per sampled level
      decoder.onnx    bu_<i>, eps_<i> (N,C_i,H/2^(i+1),W/2^(i+1)) -> samples (N,1,H,W)
      direct.onnx     optional (format_version 3): image (1,1,H,W) -> mmse (1,1,H,W), the
                      distilled direct denoiser (``mode="direct"``)

H and W must be multiples of ``spatial_multiple`` (2**levels). Values are in normalised
units: x_norm = (x - mean) / std with the manifest's normalisation. Every graph's inputs
and outputs are checked against the manifest at load (:mod:`hdn_deploy.graph_check`).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import PackageError
from .manifest import (
    FORMAT_NAME,
    FORMAT_VERSION,
    LevelInfo,
    Manifest,
    manifest_from_json,
    manifest_to_json,
)

__all__ = ["DECODER_FILE", "DIRECT_FILE", "ENCODER_FILE", "FORMAT_NAME", "FORMAT_VERSION", "MANIFEST_FILE",
           "LevelInfo", "Manifest", "ModelPackage", "load_package", "sha256_file"]

MANIFEST_FILE = "manifest.json"
ENCODER_FILE = "encoder.onnx"
DECODER_FILE = "decoder.onnx"
DIRECT_FILE = "direct.onnx"


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes (64 characters)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class ModelPackage:
    """A validated model package: its folder and typed manifest (no sessions)."""

    path: Path
    manifest: Manifest

    def graph_path(self, graph: str) -> Path:
        """Path of graph ``graph`` ('encoder' or 'decoder'); PackageError otherwise."""
        return self.path / self.manifest.graphs.entry(graph).file

    @property
    def encoder_path(self) -> Path:
        return self.graph_path("encoder")

    @property
    def decoder_path(self) -> Path:
        return self.graph_path("decoder")

    @property
    def has_direct(self) -> bool:
        """Whether the package holds a direct denoiser graph (``direct.onnx``)."""
        return self.manifest.graphs.direct is not None

    @property
    def direct_path(self) -> Path:
        """Path of the direct graph; PackageError when the package has none."""
        return self.graph_path("direct")

    @property
    def mean(self) -> float:
        return self.manifest.normalization.mean

    @property
    def std(self) -> float:
        return self.manifest.normalization.std

    @property
    def spatial_multiple(self) -> int:
        return self.manifest.spatial_multiple

    @property
    def levels(self) -> tuple[LevelInfo, ...]:
        return self.manifest.levels

    @property
    def sampled_levels(self) -> tuple[LevelInfo, ...]:
        return self.manifest.sampled_levels

    @property
    def model_hash(self) -> str:
        return self.manifest.weights_sha256

    @property
    def recommended_tile(self) -> int:
        return self.manifest.recommended_tile

    @property
    def recommended_overlap(self) -> int:
        return self.manifest.recommended_overlap

    def summary(self) -> dict[str, Any]:
        """What ``hdn-deploy info`` prints (plain JSON)."""
        m = manifest_to_json(self.manifest)
        return {
            "path": str(self.path),
            "format_version": m["format_version"],
            "created": m["created"],
            "model_sha256": self.model_hash,
            "levels": len(m["levels"]),
            "latent_channels": [lv["channels"] for lv in m["levels"]],
            "uncond_levels": list(self.manifest.uncond_levels),
            "spatial_multiple": self.spatial_multiple,
            "training_patch_size": m["training_patch_size"],
            "recommended_tile": self.recommended_tile,
            "recommended_overlap": self.recommended_overlap,
            "normalization": m["normalization"],
            "intensity_range": m["intensity_range"],
            "likelihood": m["likelihood"],
            "noise_description": m["noise_description"],
            "model_config": m["model_config"],
            "provenance": m["provenance"],
            "export": m["export"],
            "precision": self.manifest.graph_precision.value,
            "direct": m.get("direct"),
        }


def read_manifest(path: str | Path) -> Manifest:
    """The validated manifest of package folder ``path`` (graph files not checked).

    Raises
    ------
    PackageError
        Missing folder or manifest, corrupt JSON, or any schema problem (see
        :func:`hdn_deploy.manifest.manifest_from_json`).
    """
    path = Path(path)
    manifest_path = path / MANIFEST_FILE
    if not path.is_dir():
        raise PackageError(f"{path}: model package folder not found")
    if not manifest_path.is_file():
        raise PackageError(f"{path}: not a model package (no {MANIFEST_FILE}); "
                           "create one with `hdn-deploy export CHECKPOINT -o MODEL`")
    try:
        data = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PackageError(f"{manifest_path}: corrupt manifest ({exc})") from exc
    return manifest_from_json(data, manifest_path)


def load_package(path: str | Path, *, check_hashes: bool = True) -> ModelPackage:
    """Open and validate a model package folder.

    Raises
    ------
    PackageError
        Missing folder or manifest, unsupported format version, unknown, missing or
        malformed keys, missing graph files, graph files whose sha256 does not match the
        manifest (corruption), or graphs whose inputs/outputs do not match the manifest.
    """
    from .graph_check import check_graphs

    path = Path(path)
    package = ModelPackage(path=path, manifest=read_manifest(path))
    for name in ("encoder", "decoder") + (("direct",) if package.has_direct else ()):
        entry = package.manifest.graphs.entry(name)
        graph = path / entry.file
        if not graph.is_file():
            raise PackageError(f"{path}: graph file {entry.file} is missing")
        if check_hashes and sha256_file(graph) != entry.sha256:
            raise PackageError(
                f"{graph}: sha256 does not match the manifest: the file is corrupt or was "
                "changed after export; re-export or re-copy the package"
            )
    check_graphs(package)
    return package
