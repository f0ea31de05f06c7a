"""Model packages: the folder the runtime loads.

Layout (``format_version`` 1)::

    MODEL/
      manifest.json   format, normalisation, latent levels, tiling hints, hashes, provenance
      encoder.onnx    image (1,1,H,W) -> bu_<i> (1,C,H/2^(i+1),W/2^(i+1)) per sampled level
      decoder.onnx    bu_<i>, eps_<i> (N,C_i,H/2^(i+1),W/2^(i+1)) -> samples (N,1,H,W)

H and W must be multiples of ``spatial_multiple`` (2**levels). Values are in normalised
units: x_norm = (x - mean) / std with the manifest's normalisation.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from .errors import PackageError

FORMAT_NAME = "hdn-deploy-model"
FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
ENCODER_FILE = "encoder.onnx"
DECODER_FILE = "decoder.onnx"


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class LevelInfo:
    index: int
    channels: int
    downsample: int
    sampled: bool


@dataclass(frozen=True)
class ModelPackage:
    """A validated model package (paths and manifest; no sessions)."""

    path: Path
    manifest: dict[str, Any]

    @property
    def encoder_path(self) -> Path:
        return self.path / self.manifest["graphs"]["encoder"]["file"]

    @property
    def decoder_path(self) -> Path:
        return self.path / self.manifest["graphs"]["decoder"]["file"]

    @property
    def mean(self) -> float:
        return float(self.manifest["normalization"]["mean"])

    @property
    def std(self) -> float:
        return float(self.manifest["normalization"]["std"])

    @property
    def spatial_multiple(self) -> int:
        return int(self.manifest["spatial_multiple"])

    @property
    def levels(self) -> list[LevelInfo]:
        return [LevelInfo(**lv) for lv in self.manifest["levels"]]

    @property
    def sampled_levels(self) -> list[LevelInfo]:
        return [lv for lv in self.levels if lv.sampled]

    @property
    def model_hash(self) -> str:
        return str(self.manifest["weights_sha256"])

    @property
    def recommended_tile(self) -> int:
        return int(self.manifest["recommended_tile"])

    @property
    def recommended_overlap(self) -> int:
        return int(self.manifest["recommended_overlap"])

    def summary(self) -> dict[str, Any]:
        """What ``hdn-deploy info`` prints."""
        m = self.manifest
        return {
            "path": str(self.path),
            "format_version": m["format_version"],
            "created": m.get("created"),
            "model_sha256": self.model_hash,
            "levels": len(m["levels"]),
            "latent_channels": [lv["channels"] for lv in m["levels"]],
            "uncond_levels": m.get("uncond_levels", []),
            "spatial_multiple": self.spatial_multiple,
            "training_patch_size": m.get("training_patch_size"),
            "recommended_tile": self.recommended_tile,
            "recommended_overlap": self.recommended_overlap,
            "normalization": m["normalization"],
            "likelihood": m.get("likelihood"),
            "noise_description": m.get("noise_description"),
            "model_config": m.get("model_config"),
            "provenance": m.get("provenance"),
            "export": m.get("export"),
        }


_REQUIRED = ("format", "format_version", "normalization", "spatial_multiple", "levels",
             "graphs", "weights_sha256", "recommended_tile", "recommended_overlap")


_LEVEL_KEYS = frozenset(f.name for f in fields(LevelInfo))


def _check_entries(manifest_path: Path, manifest: dict[str, Any]) -> None:
    """The nested entries the runtime reads: graphs and levels (PackageError if malformed)."""
    graphs = manifest["graphs"]
    for name in ("encoder", "decoder"):
        entry = graphs.get(name) if isinstance(graphs, dict) else None
        if not isinstance(entry, dict) or not {"file", "sha256"} <= set(entry):
            raise PackageError(
                f"{manifest_path}: graphs.{name} must be an object with 'file' and 'sha256'; "
                "re-export the model"
            )
    norm = manifest["normalization"]
    values = [norm.get(k) for k in ("mean", "std")] if isinstance(norm, dict) else [None]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
               for v in values) or not values[1] > 0:
        raise PackageError(
            f"{manifest_path}: normalization must hold a finite 'mean' and a 'std' > 0, got "
            f"{norm!r}; re-export the model"
        )
    levels = manifest["levels"]
    if not isinstance(levels, list) or not levels or not all(
        isinstance(lv, dict) and set(lv) == _LEVEL_KEYS for lv in levels
    ):
        raise PackageError(
            f"{manifest_path}: levels must be a non-empty list of objects with keys "
            f"{sorted(_LEVEL_KEYS)}; re-export the model"
        )


def load_package(path: str | Path, *, check_hashes: bool = True) -> ModelPackage:
    """Open and validate a model package folder.

    Raises
    ------
    PackageError
        Missing folder or manifest, unknown format version, missing or malformed keys,
        missing graph
        files, or graph files whose sha256 does not match the manifest (corruption).
    """
    path = Path(path)
    manifest_path = path / MANIFEST_FILE
    if not path.is_dir():
        raise PackageError(f"{path}: model package folder not found")
    if not manifest_path.is_file():
        raise PackageError(f"{path}: not a model package (no {MANIFEST_FILE}); "
                           "create one with `hdn-deploy export CHECKPOINT -o MODEL`")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PackageError(f"{manifest_path}: corrupt manifest ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise PackageError(f"{manifest_path}: not an hdn-deploy model manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise PackageError(
            f"{manifest_path}: package format version {manifest.get('format_version')!r} is not "
            f"supported (this hdn-deploy reads version {FORMAT_VERSION}); re-export the model "
            "with a matching hdn-deploy or upgrade hdn-deploy"
        )
    missing = [k for k in _REQUIRED if k not in manifest]
    if missing:
        raise PackageError(f"{manifest_path}: manifest lacks keys {missing}")
    _check_entries(manifest_path, manifest)
    package = ModelPackage(path=path, manifest=manifest)
    for name in ("encoder", "decoder"):
        entry = manifest["graphs"][name]
        graph = path / entry["file"]
        if not graph.is_file():
            raise PackageError(f"{path}: graph file {entry['file']} is missing")
        if check_hashes and sha256_file(graph) != entry["sha256"]:
            raise PackageError(
                f"{graph}: sha256 does not match the manifest: the file is corrupt or was "
                "changed after export; re-export or re-copy the package"
            )
    return package
