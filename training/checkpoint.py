"""Safe checkpoints: one safetensors file whose header carries the JSON config.

No pickled objects anywhere. Layout of a checkpoint file:

- tensors ``model.<name>``: the LadderVAE state dict;
- tensors ``noise_model.<key>``: arrays of the noise model (if any);
- tensors ``optim.<i>.<key>`` and ``rng.torch``: training state (``last`` checkpoints only);
- header metadata ``hdn`` (a JSON string): format name and version, model config,
  normalisation, likelihood (noise-model metadata), training provenance and, for resume,
  optimiser param groups, scheduler state, step/epoch counters and the numpy RNG state.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from hdn_deploy.errors import PackageError
from hdn_deploy.atomic import atomic_path

from .config import ModelConfig
from .data import Normalization
from .model import LadderVAE

FORMAT_NAME = "hdn-deploy-checkpoint"
FORMAT_VERSION = 1


@dataclass
class Checkpoint:
    """Everything a checkpoint holds, as plain Python objects."""

    model_config: ModelConfig
    normalization: Normalization
    model_state: dict[str, torch.Tensor]
    likelihood: dict[str, Any]  # noise-model metadata
    likelihood_arrays: dict[str, np.ndarray] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    training_state: dict[str, Any] | None = None  # JSON part of the resume state
    training_tensors: dict[str, torch.Tensor] = field(default_factory=dict)

    def build_model(self) -> LadderVAE:
        """A LadderVAE in eval mode with the checkpoint's weights."""
        model = LadderVAE(self.model_config)
        model.load_state_dict(self.model_state)
        return model.eval()

    def build_noise_model(self):
        from .noise_models import noise_model_from_state

        return noise_model_from_state(self.likelihood, self.likelihood_arrays)


def save_checkpoint(path: str | Path, ckpt: Checkpoint) -> Path:
    """Write ``ckpt`` atomically to ``path`` (a .safetensors file)."""
    path = Path(path)
    tensors: dict[str, torch.Tensor] = {
        f"model.{k}": v.detach().cpu().contiguous() for k, v in ckpt.model_state.items()
    }
    for key, arr in ckpt.likelihood_arrays.items():
        tensors[f"noise_model.{key}"] = torch.from_numpy(np.ascontiguousarray(arr))
    tensors.update({k: v.detach().cpu().contiguous() for k, v in ckpt.training_tensors.items()})
    header = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "model_config": ckpt.model_config.to_dict(),
        "normalization": ckpt.normalization.to_dict(),
        "likelihood": ckpt.likelihood,
        "provenance": ckpt.provenance,
        "training_state": ckpt.training_state,
    }
    with atomic_path(path) as tmp:
        mode = tmp.stat().st_mode & 0o777  # 0666 less the umask, as for any new file
        save_file(tensors, str(tmp), metadata={"hdn": json.dumps(header)})
        os.chmod(tmp, mode)  # safetensors creates its files with mode 0600
    return path


def _read_header(path: Path) -> dict[str, Any]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise PackageError(f"{path}: not a readable hdn-deploy checkpoint ({exc})") from exc
    if "hdn" not in meta:
        raise PackageError(f"{path}: safetensors file without hdn-deploy metadata")
    try:
        header = json.loads(meta["hdn"])
    except json.JSONDecodeError as exc:
        raise PackageError(f"{path}: corrupt checkpoint metadata ({exc})") from exc
    if header.get("format") != FORMAT_NAME:
        raise PackageError(f"{path}: not an hdn-deploy checkpoint (format {header.get('format')!r})")
    version = header.get("format_version")
    if version != FORMAT_VERSION:
        raise PackageError(
            f"{path}: checkpoint format version {version!r} is not supported by this "
            f"hdn-deploy (it reads version {FORMAT_VERSION}); use a matching hdn-deploy release"
        )
    return header


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`; PackageError if unusable."""
    path = Path(path)
    if not path.is_file():
        raise PackageError(f"{path}: checkpoint file not found")
    header = _read_header(path)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise PackageError(f"{path}: corrupt checkpoint tensors ({exc})") from exc
    groups: dict[str, dict[str, torch.Tensor]] = {"model": {}, "noise_model": {}, "other": {}}
    for key, value in tensors.items():
        prefix, _, rest = key.partition(".")
        if prefix in ("model", "noise_model"):
            groups[prefix][rest] = value
        else:
            groups["other"][key] = value
    try:
        model_config = ModelConfig.from_dict(header["model_config"])
        normalization = Normalization.from_dict(header["normalization"], path)
    except (KeyError, TypeError) as exc:
        raise PackageError(f"{path}: checkpoint metadata is incomplete ({exc})") from exc
    return Checkpoint(
        model_config=model_config,
        normalization=normalization,
        model_state=groups["model"],
        likelihood=header.get("likelihood") or {},
        likelihood_arrays={k: v.numpy() for k, v in groups["noise_model"].items()},
        provenance=header.get("provenance") or {},
        training_state=header.get("training_state"),
        training_tensors=groups["other"],
    )
