"""Frozen, JSON-round-tripping configurations of the HDN model and of training."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any, Mapping

from hdn_deploy.errors import ConfigError


def _from_mapping(cls, data: Mapping[str, Any], what: str):
    known = {f.name for f in fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise ConfigError(
            f"unknown {what} key(s) {sorted(unknown)}; expected a subset of {sorted(known)}"
        )
    kwargs = {}
    for f in fields(cls):
        if f.name in data:
            value = data[f.name]
            if isinstance(value, list):
                value = tuple(value)
            kwargs[f.name] = value
    return cls(**kwargs)


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of the ladder VAE. Defaults reproduce the reference HDN.

    Parameters
    ----------
    z_dims
        Latent channels per level, finest level first; its length is the number of levels.
    n_filters
        Feature channels everywhere in the network.
    blocks_per_level
        Residual blocks per level (the first one of each level resamples).
    dropout
        Dropout2d probability inside residual blocks.
    batchnorm, gated
        BatchNorm in residual blocks; gated (GLU-like) residual blocks.
    free_bits
        KL free bits per level per patch (nats).
    uncond_levels
        Levels whose posterior ignores the bottom-up input and which use their mean
        at prediction (structured-noise mode; the reference's ``use_uncond_mode_at``).
    stochastic_skip, learn_top_prior
        As in the reference.
    patch_size
        Training patch size; sets the spatial shape of the learned top prior.
    logvar_clip
        Log-variances of prior and posterior are clamped to [-logvar_clip, logvar_clip].
    """

    z_dims: tuple[int, ...] = (32,) * 6
    n_filters: int = 64
    blocks_per_level: int = 5
    dropout: float = 0.2
    batchnorm: bool = True
    gated: bool = True
    free_bits: float = 1.0
    uncond_levels: tuple[int, ...] = ()
    stochastic_skip: bool = True
    learn_top_prior: bool = True
    patch_size: int = 64
    logvar_clip: float = 20.0

    def __post_init__(self) -> None:
        if len(self.z_dims) < 1:
            raise ConfigError("z_dims must name at least one level")
        if any(int(z) < 1 for z in self.z_dims):
            raise ConfigError(f"z_dims must be positive, got {self.z_dims}")
        if self.n_filters < 1 or self.blocks_per_level < 1:
            raise ConfigError("n_filters and blocks_per_level must be >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        bad = [lv for lv in self.uncond_levels if not 0 <= lv < self.n_levels - 1]
        if bad:
            raise ConfigError(
                f"uncond_levels {bad} out of range: must be in [0, {self.n_levels - 2}] "
                "(the top level always conditions on the input)"
            )
        if self.patch_size % self.spatial_multiple:
            raise ConfigError(
                f"patch_size {self.patch_size} must be a multiple of 2**n_levels = "
                f"{self.spatial_multiple}"
            )

    @property
    def n_levels(self) -> int:
        return len(self.z_dims)

    @property
    def spatial_multiple(self) -> int:
        return 2 ** self.n_levels

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["z_dims"] = list(self.z_dims)
        d["uncond_levels"] = list(self.uncond_levels)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ModelConfig":
        return _from_mapping(cls, data, "model config")


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training run (all overridable from the CLI)."""

    batch_size: int = 64
    lr: float = 3e-4
    max_steps: int | None = None
    max_epochs: int | None = None
    steps_per_epoch: int = 200
    val_fraction: float = 0.1
    val_patches: int = 256
    lr_patience: int = 10
    lr_factor: float = 0.5
    early_stop_patience: int = 30
    kl_warmup_steps: int = 0
    seed: int = 0
    num_threads: int | None = None
    checkpoint_every: int = 200

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.max_steps is None and self.max_epochs is None:
            object.__setattr__(self, "max_epochs", 100)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TrainConfig":
        return _from_mapping(cls, data, "training config")
