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


OPTIMIZERS = ("adamax", "adam", "adamw")
LR_SCHEDULES = ("plateau", "cosine")


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training run (all overridable from the CLI).

    Defaults reproduce the reference HDN (Adamax, lr 3e-4, ReduceLROnPlateau); the
    ``cpu`` preset (:data:`PRESETS`) is the measured recipe for short CPU budgets.

    Parameters (beyond the self-explaining ones)
    ----------
    optimizer
        ``adamax`` (reference), ``adam`` or ``adamw`` (weight decay 1e-4).
    lr_schedule
        ``plateau``: halve (``lr_factor``) after ``lr_patience`` epochs without a better
        validation loss (reference). ``cosine``: cosine decay from ``lr`` to
        ``lr * final_lr_fraction`` over the run's total steps (needs a step or epoch limit).
    warmup_steps
        Linear learning-rate warm-up from ``lr / warmup_steps`` to ``lr`` (either schedule).
    grad_clip
        Clip the global gradient norm to this value (None: no clipping).
    virtual_batch_size
        Split each batch into chunks of this many patches and accumulate their gradients
        (the reference uses 8: BatchNorm statistics over 8 patches). None: whole batch.
    init
        Start from the weights of this checkpoint (fine-tuning); the architecture must match.
    snapshot_every
        Also keep the weights every this many steps as ``step_<N>.safetensors`` (at the end of
        the epoch where the step count reaches a multiple), for quality-vs-time curves.
    structured_warmup_steps
        For a structured model (``uncond_levels``): train the first this many steps in pixel
        mode (every level reads the input), then make the uncond levels unconditional, with
        each one's posterior head starting as a copy of its prior head (KL 0 at the switch);
        the best checkpoint is chosen among validations after the switch, and a KL warm-up
        (``kl_warmup_steps``) starts again at the switch. 0: unconditional from the first
        step (the reference). Experimental: on a tiny synthetic task it did worse than no
        warm-up (benchmarks/results/structured).
    stop_on_collapse
        End the run with :class:`~hdn_deploy.errors.TrainingError` when a validation finds a
        posterior collapse (see ``trainer.collapse_diagnosis``); otherwise only warn.
    """

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
    optimizer: str = "adamax"
    lr_schedule: str = "plateau"
    warmup_steps: int = 0
    final_lr_fraction: float = 0.01
    grad_clip: float | None = None
    virtual_batch_size: int | None = None
    init: str | None = None
    snapshot_every: int | None = None
    stop_on_collapse: bool = False
    structured_warmup_steps: int = 0

    def __post_init__(self) -> None:
        if self.structured_warmup_steps < 0:
            raise ConfigError("structured_warmup_steps must be >= 0, got "
                              f"{self.structured_warmup_steps}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer {self.optimizer!r} unknown; choose one of {OPTIMIZERS}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(
                f"lr_schedule {self.lr_schedule!r} unknown; choose one of {LR_SCHEDULES}")
        if self.virtual_batch_size is not None and not 1 <= self.virtual_batch_size <= self.batch_size:
            raise ConfigError(
                f"virtual_batch_size must be in [1, batch_size={self.batch_size}], "
                f"got {self.virtual_batch_size}")
        if self.lr <= 0 or self.warmup_steps < 0 or not 0 <= self.final_lr_fraction <= 1:
            raise ConfigError("lr must be > 0, warmup_steps >= 0, final_lr_fraction in [0, 1]")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.max_steps is None and self.max_epochs is None:
            object.__setattr__(self, "max_epochs", 100)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TrainConfig":
        return _from_mapping(cls, data, "training config")


#: Named recipes for ``hdn-deploy train --preset NAME``: model and training settings that a
#: config file and flags override. ``cpu``: a reduced architecture (16 filters, 3 blocks per
#: level, 6 x 32 latents, 64x64 patches, no dropout; the reference's CPU runs use 32 filters,
#: which learn alike per step at 2.65x the time per step; the reference's Dropout2d of 0.2
#: drops ~3 of 16 channels and cost 0.6 dB at equal time) with a short-budget schedule
#: (Adamax at 1e-3, 100 warm-up steps, cosine decay); measured in benchmarks/quality
#: (see README).
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "cpu": {
        "model": {"z_dims": [32] * 6, "n_filters": 16, "blocks_per_level": 3, "patch_size": 64,
                  "dropout": 0.0},
        "train": {"batch_size": 16, "optimizer": "adamax", "lr": 1e-3, "lr_schedule": "cosine",
                  "warmup_steps": 100, "steps_per_epoch": 100, "val_patches": 128,
                  "early_stop_patience": 1000, "max_steps": 3000, "val_fraction": 0.0},
    },
}
