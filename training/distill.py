"""Distillation of the HDN MMSE into a direct (one-pass) denoiser.

The sampler's MMSE costs ~100 decoder passes per pixel; a small feed-forward U-Net trained
to output it costs about one. Targets follow COSDD's "direct denoiser" (Salmon & Krull,
*Unsupervised Denoising for Signal-Dependent and Row-Correlated Imaging Noise*, WACV 2025,
arXiv:2310.07887): train with an L2 loss against *posterior samples* of the generative model.
A posterior sample ``s ~ p(s | x)`` is an unbiased target for the MMSE ``E[s | x]``, and
the L2 minimiser of ``E ||f(x) - s||^2`` is that MMSE, so one HDN pass per patch suffices
instead of the ~100 an averaged target would need. We use an antithetic pair (eps, -eps)
and average it (still unbiased, each half is a valid sample): the target's variance drops
for one extra decoder pass, which is cheap next to the student's backward pass.

Validation measures what matters: the mean squared distance of the student to a
``val_samples``-sample antithetic MMSE of the teacher on fixed held-out patches (the
validation rows/frames of the data, never used for training patches).

A run folder holds ``distill.json`` (settings), ``metrics.csv``, ``last.safetensors``
(weights, optimiser and RNG state: ``resume`` continues exactly) and ``best.safetensors``
(the student with the lowest validation loss: what ``export --direct`` takes).
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from hdn_deploy._version import __version__
from hdn_deploy.atomic import atomic_path, atomic_write_text
from hdn_deploy.errors import ConfigError, InputError, PackageError

from .checkpoint import Checkpoint, load_checkpoint
from .config import _from_mapping
from .data import Normalization, PatchSampler, load_frames, split_frames
from .model import LadderVAE
from .trainer import _flatten_optimizer, _unflatten_optimizer

log = logging.getLogger("hdn_deploy.training")

FORMAT_NAME = "hdn-deploy-direct"
FORMAT_VERSION = 1
SETTINGS_FILE = "distill.json"
LAST = "last.safetensors"
BEST = "best.safetensors"
METRICS = "metrics.csv"


# --------------------------------------------------------------------------- student
@dataclass(frozen=True)
class DirectConfig:
    """Architecture of the direct denoiser (a U-Net sized for CPUs).

    Parameters
    ----------
    channels
        Feature channels at full resolution; doubled at each downsampling.
    depth
        Downsamplings (input sides must be multiples of ``2**depth``).
    """

    channels: int = 16
    depth: int = 3

    def __post_init__(self) -> None:
        if self.channels < 1 or not 1 <= self.depth <= 6:
            raise ConfigError(f"direct denoiser needs channels >= 1 and depth in [1, 6], got "
                              f"{self.channels}, {self.depth}")

    @property
    def spatial_multiple(self) -> int:
        return 2 ** self.depth

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "DirectConfig":
        return _from_mapping(cls, data, "direct denoiser config")


def _double_conv(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.LeakyReLU(0.1),
                         nn.Conv2d(c_out, c_out, 3, padding=1), nn.LeakyReLU(0.1))


class DirectUNet(nn.Module):
    """U-Net (Ronneberger et al., 2015) predicting the MMSE as input + residual.

    (B, 1, H, W) normalised noisy image -> (B, 1, H, W) normalised MMSE estimate; H and W
    multiples of ``2**depth``. No normalisation layers: one image is one batch at inference.
    """

    def __init__(self, config: DirectConfig = DirectConfig()):
        super().__init__()
        self.config = config
        widths = [config.channels * 2 ** i for i in range(config.depth + 1)]
        self.down = nn.ModuleList([_double_conv(1, widths[0])] + [
            _double_conv(widths[i], widths[i + 1]) for i in range(config.depth)])
        self.up = nn.ModuleList([
            nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2)
            for i in reversed(range(config.depth))])
        self.merge = nn.ModuleList([
            _double_conv(2 * widths[i], widths[i]) for i in reversed(range(config.depth))])
        self.head = nn.Conv2d(widths[0], 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        h = x
        for i, block in enumerate(self.down):
            h = block(h if i == 0 else nn.functional.max_pool2d(h, 2))
            skips.append(h)
        skips.pop()
        for up, merge in zip(self.up, self.merge):
            h = merge(torch.cat([up(h), skips.pop()], dim=1))
        return x + self.head(h)


# ---------------------------------------------------------------------- checkpoints
@dataclass
class DirectCheckpoint:
    """A direct denoiser: weights, architecture, the normalisation it works in and the
    teacher it was distilled from (sha256 of the HDN checkpoint file)."""

    config: DirectConfig
    normalization: Normalization
    teacher_sha256: str
    state: dict[str, torch.Tensor]
    provenance: dict[str, Any] = dataclasses.field(default_factory=dict)
    training_state: dict[str, Any] | None = None
    training_tensors: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)

    def build(self) -> DirectUNet:
        model = DirectUNet(self.config)
        model.load_state_dict(self.state)
        return model.eval()


def save_direct(path: str | Path, ckpt: DirectCheckpoint) -> Path:
    """Write ``ckpt`` atomically (safetensors; JSON header, no pickles)."""
    path = Path(path)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in ckpt.state.items()}
    tensors.update({k: v.detach().cpu().contiguous() for k, v in ckpt.training_tensors.items()})
    header = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION,
              "config": ckpt.config.to_dict(), "normalization": ckpt.normalization.to_dict(),
              "teacher_sha256": ckpt.teacher_sha256, "provenance": ckpt.provenance,
              "training_state": ckpt.training_state}
    with atomic_path(path) as tmp:
        mode = tmp.stat().st_mode & 0o777
        save_file(tensors, str(tmp), metadata={"hdn": json.dumps(header)})
        os.chmod(tmp, mode)
    return path


def load_direct(path: str | Path) -> DirectCheckpoint:
    """Read a direct-denoiser checkpoint; PackageError naming the file if unusable."""
    path = Path(path)
    if path.is_dir():
        path = path / BEST
    if not path.is_file():
        raise PackageError(f"{path}: direct-denoiser checkpoint not found (give a distill run "
                           f"folder or its {BEST})")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            header = json.loads((f.metadata() or {}).get("hdn", "{}"))
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise PackageError(f"{path}: not a readable direct-denoiser checkpoint ({exc})") from exc
    if header.get("format") != FORMAT_NAME or header.get("format_version") != FORMAT_VERSION:
        raise PackageError(f"{path}: not a direct-denoiser checkpoint of format "
                           f"{FORMAT_NAME} v{FORMAT_VERSION} (an HDN checkpoint? distill it "
                           "first with `hdn-deploy distill`)")
    state = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    other = {k: v for k, v in tensors.items() if not k.startswith("model.")}
    return DirectCheckpoint(
        config=DirectConfig.from_dict(header["config"]),
        normalization=Normalization.from_dict(header["normalization"], path),
        teacher_sha256=header["teacher_sha256"], state=state,
        provenance=header.get("provenance") or {}, training_state=header.get("training_state"),
        training_tensors=other)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def teacher_checkpoint(source: str | Path) -> tuple[Checkpoint, Path]:
    """The HDN checkpoint of ``source``: a checkpoint file, or a folder (e.g. a model
    package) holding ``checkpoint.safetensors``.

    Raises
    ------
    InputError
        A folder without ``checkpoint.safetensors`` (the ONNX graphs alone cannot be
        distilled from in PyTorch).
    PackageError
        Unreadable checkpoint.
    """
    path = Path(source)
    if path.is_dir():
        path = path / "checkpoint.safetensors"
        if not path.is_file():
            raise InputError(
                f"{source}: no checkpoint.safetensors in this folder; distillation needs the "
                "HDN's PyTorch weights: pass the training checkpoint (best.safetensors of the "
                "run the package was exported from)")
    return load_checkpoint(path), path


# -------------------------------------------------------------------------- training
@dataclass(frozen=True)
class DistillConfig:
    """Settings of a distillation run.

    Parameters (beyond the self-explaining ones)
    ----------
    patch_size
        Training patch side (a multiple of the teacher's ``2**levels``).
    val_patches, val_samples
        Fixed validation patches and the antithetic samples of their reference MMSE.
    validate_every
        Steps between validations (and checkpoints).
    """

    steps: int = 2000
    batch_size: int = 8
    patch_size: int = 64
    lr: float = 1e-3
    val_patches: int = 32
    val_samples: int = 16
    val_fraction: float = 0.1
    validate_every: int = 100
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.val_patches < 1:
            raise ConfigError("steps, batch_size and val_patches must be >= 1")
        if self.val_samples < 2 or self.val_samples % 2:
            raise ConfigError(f"val_samples must be even and >= 2 (antithetic pairs), got "
                              f"{self.val_samples}")
        if self.validate_every < 1 or self.lr <= 0:
            raise ConfigError("validate_every must be >= 1 and lr > 0")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "DistillConfig":
        return _from_mapping(cls, data, "distillation config")


@torch.no_grad()
def posterior_mean_target(teacher: LadderVAE, batch: torch.Tensor, n_samples: int,
                          generator: torch.Generator) -> torch.Tensor:
    """Mean of ``n_samples`` (even) antithetic posterior samples per patch, (B, 1, H, W).

    The bottom-up pass runs once; eps pairs (e, -e) are drawn from ``generator``.
    """
    bu = teacher.bottom_up(batch)
    total = torch.zeros_like(batch)
    b, _, h, w = batch.shape
    for _ in range(n_samples // 2):
        eps = teacher.draw_eps(b, h, w, generator)
        for sign in (1.0, -1.0):
            signed: list[torch.Tensor | None] = [sign * e for e in eps]
            total += teacher.top_down(bu, signed, prediction=True, compute_kl=False).signal
    return total / n_samples


class DistillRun:
    """One distillation run: teacher, student, data and the state to resume it."""

    def __init__(self, run_dir: Path, teacher_path: Path, data: Sequence[str],
                 config: DistillConfig, direct_config: DirectConfig):
        self.run_dir = Path(run_dir)
        self.cfg, self.direct_cfg = config, direct_config
        ckpt = load_checkpoint(teacher_path)
        # Absolute paths: a resume may start from another working directory.
        self.teacher_path = Path(teacher_path).resolve()
        self.teacher_sha = _sha256(self.teacher_path)
        multiple = ckpt.model_config.spatial_multiple
        if config.patch_size % max(multiple, direct_config.spatial_multiple):
            raise ConfigError(f"patch_size {config.patch_size} must be a multiple of the "
                              f"teacher's {multiple} and the student's "
                              f"{direct_config.spatial_multiple}")
        self.norm = ckpt.normalization
        self.teacher = ckpt.build_model()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        frames, files = load_frames(list(data), config.patch_size)
        self.files = [str(Path(f).resolve()) for f in files]
        train, val = split_frames(frames, config.val_fraction, config.patch_size)
        torch.manual_seed(config.seed)
        self.student = DirectUNet(direct_config)
        self.optimizer = torch.optim.Adam(self.student.parameters(), lr=config.lr)
        self.sampler = PatchSampler([self.norm.apply(f) for f in train], config.patch_size,
                                    config.seed)
        self.generator = torch.Generator().manual_seed(config.seed + 1)
        val_sampler = PatchSampler([self.norm.apply(f) for f in val], config.patch_size,
                                   config.seed + 2)
        self.val_x = torch.from_numpy(val_sampler.batch(config.val_patches, augmented=False))
        val_gen = torch.Generator().manual_seed(config.seed + 3)
        self.val_y = torch.cat([posterior_mean_target(self.teacher, chunk, config.val_samples,
                                                      val_gen)
                                for chunk in torch.split(self.val_x, 8)])
        self.step, self.best_val, self.seconds = 0, math.inf, 0.0
        self.history: list[dict[str, float]] = []

    def settings(self) -> dict[str, Any]:
        return {"teacher": str(self.teacher_path), "teacher_sha256": self.teacher_sha,
                "data": self.files, "distill": self.cfg.to_dict(),
                "direct": self.direct_cfg.to_dict()}

    def lr_at(self, step: int) -> float:
        """Cosine decay to 1 % of ``lr`` over the run."""
        progress = min(1.0, step / self.cfg.steps)
        return self.cfg.lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * progress)))

    def train_step(self) -> float:
        self.student.train()
        batch = torch.from_numpy(self.sampler.batch(self.cfg.batch_size))
        target = posterior_mean_target(self.teacher, batch, 2, self.generator)
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at(self.step)
        self.optimizer.zero_grad(set_to_none=True)
        loss = nn.functional.mse_loss(self.student(batch), target)
        loss.backward()
        self.optimizer.step()
        self.step += 1
        return float(loss.detach())

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """``val_mse``: student vs the reference MMSE (normalised units squared);
        ``val_mse_input``: the noisy input vs it (what doing nothing scores)."""
        self.student.eval()
        pred = torch.cat([self.student(c) for c in torch.split(self.val_x, 8)])
        return {"val_mse": float(nn.functional.mse_loss(pred, self.val_y)),
                "val_mse_input": float(nn.functional.mse_loss(self.val_x, self.val_y))}

    def _checkpoint(self, with_state: bool) -> DirectCheckpoint:
        ckpt = DirectCheckpoint(
            config=self.direct_cfg, normalization=self.norm, teacher_sha256=self.teacher_sha,
            state=self.student.state_dict(),
            provenance={"hdn_deploy_version": __version__, "torch_version": torch.__version__,
                        "data": self.files, "step": self.step, "best_val_mse": self.best_val,
                        "distill_config": self.cfg.to_dict(),
                        "target": "antithetic posterior-sample pairs (COSDD direct denoiser)"})
        if with_state:
            meta, tensors = _flatten_optimizer(self.optimizer.state_dict())
            tensors.update({"rng.torch": torch.get_rng_state(),
                            "rng.generator": self.generator.get_state()})
            ckpt.training_state = {**meta, "step": self.step, "best_val": self.best_val,
                                   "seconds": self.seconds, "history": self.history,
                                   "sampler_rng": self.sampler.get_state()}
            ckpt.training_tensors = tensors
        return ckpt

    def restore(self, path: Path) -> None:
        ckpt = load_direct(path)
        state = ckpt.training_state
        if state is None:
            raise ConfigError(f"{path}: holds no training state; cannot resume from it")
        self.student.load_state_dict(ckpt.state)
        self.optimizer.load_state_dict(_unflatten_optimizer(state, ckpt.training_tensors))
        torch.set_rng_state(ckpt.training_tensors["rng.torch"])
        self.generator.set_state(ckpt.training_tensors["rng.generator"])
        self.sampler.set_state(state["sampler_rng"])
        self.step, self.best_val = state["step"], state["best_val"]
        self.seconds, self.history = state["seconds"], list(state["history"])

    def _end_block(self, losses: list[float], seconds: float) -> None:
        self.seconds += seconds
        row = {"step": self.step, "lr": self.lr_at(self.step),
               "train_mse": float(np.mean(losses)) if losses else None, **self.validate(),
               "train_seconds": self.seconds}
        self.history.append(row)
        log.info("distill step %d: %s", self.step, row)
        if row["val_mse"] < self.best_val:
            self.best_val = row["val_mse"]
            save_direct(self.run_dir / BEST, self._checkpoint(with_state=False))
        save_direct(self.run_dir / LAST, self._checkpoint(with_state=True))
        with atomic_path(self.run_dir / METRICS) as tmp, tmp.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(row))
            writer.writeheader()
            writer.writerows(self.history)

    def run(self, progress: bool = True) -> dict[str, Any]:
        from tqdm.auto import tqdm

        if not self.history:  # the untrained student, so the curve starts at step 0
            self._end_block([], 0.0)
        bar = tqdm(total=self.cfg.steps, initial=self.step, disable=not progress, unit="step",
                   desc="distill")
        while self.step < self.cfg.steps:
            start, losses = time.perf_counter(), []
            while len(losses) < self.cfg.validate_every and self.step < self.cfg.steps:
                losses.append(self.train_step())
                bar.update(1)
                bar.set_postfix(mse=f"{losses[-1]:.4f}")
            self._end_block(losses, time.perf_counter() - start)
        bar.close()
        return {"run_dir": str(self.run_dir), "steps": self.step, "best_val_mse": self.best_val,
                "history": self.history}


def set_threads(threads: int) -> None:
    """Size torch's CPU thread pool (before the run starts)."""
    torch.set_num_threads(int(threads))


def distill(source: str | Path, data: Sequence[str | Path], run_dir: str | Path, *,
            config: DistillConfig = DistillConfig(),
            direct_config: DirectConfig = DirectConfig(), progress: bool = True) -> dict[str, Any]:
    """Train a direct denoiser on posterior samples of the HDN ``source`` (see the module
    docstring) over patches of ``data`` (the teacher's training images; TIFF files, folders
    or globs). ``run_dir`` must not hold a run (use :func:`resume_distill`).

    Returns a summary: ``run_dir``, ``steps``, ``best_val_mse`` (normalised units squared)
    and the metrics ``history``.

    Raises
    ------
    ConfigError
        ``run_dir`` holds a run; patch size not a multiple of both networks' multiples.
    InputError, PackageError
        Unusable data or teacher (see :func:`teacher_checkpoint`).
    """
    run_dir = Path(run_dir)
    if (run_dir / SETTINGS_FILE).exists():
        raise ConfigError(f"{run_dir} already holds a distillation run; resume it with "
                          f"--resume or choose another folder")
    _, teacher_path = teacher_checkpoint(source)
    run = DistillRun(run_dir, teacher_path, [str(d) for d in data], config, direct_config)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / SETTINGS_FILE, json.dumps(run.settings(), indent=2))
    return run.run(progress)


def resume_distill(run_dir: str | Path, *, steps: int | None = None,
                   progress: bool = True) -> dict[str, Any]:
    """Continue a distillation run from its ``last.safetensors`` (``steps`` may raise the
    total); InputError if ``run_dir`` holds no resumable run."""
    run_dir = Path(run_dir)
    settings_path = run_dir / SETTINGS_FILE
    if not settings_path.is_file() or not (run_dir / LAST).is_file():
        raise InputError(f"{run_dir}: no resumable distillation run here (needs "
                         f"{SETTINGS_FILE} and {LAST})")
    settings = json.loads(settings_path.read_text())
    cfg = DistillConfig.from_dict(settings["distill"])
    if steps is not None:
        cfg = dataclasses.replace(cfg, steps=steps)
        settings["distill"] = cfg.to_dict()
        atomic_write_text(settings_path, json.dumps(settings, indent=2))
    run = DistillRun(run_dir, Path(settings["teacher"]), settings["data"], cfg,
                     DirectConfig.from_dict(settings["direct"]))
    if _sha256(run.teacher_path) != settings["teacher_sha256"]:
        raise InputError(f"{run.teacher_path}: the teacher checkpoint changed since the run "
                         "started; start a new run")
    run.restore(run_dir / LAST)
    return run.run(progress)
