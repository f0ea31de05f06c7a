"""The HDN training loop: Adamax, ReduceLROnPlateau, early stopping, exact resume.

A run folder holds ``run.json`` (settings), ``metrics.csv`` (one row per epoch),
``last.safetensors`` (full training state, for ``--resume``) and ``best.safetensors``
(the weights with the lowest validation loss: the result to export).
"""
from __future__ import annotations

import csv
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from hdn_deploy._version import __version__
from hdn_deploy.atomic import atomic_path, atomic_write_text
from hdn_deploy.errors import ConfigError, InputError, TrainingError

from .checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from .config import ModelConfig, TrainConfig
from .data import Normalization, PatchSampler, compute_normalization, load_frames, split_frames
from .model import LadderVAE, TopDownResult
from .tile_check import tile_check

log = logging.getLogger("hdn_deploy.training")

RUN_FILE = "run.json"
LAST = "last.safetensors"
BEST = "best.safetensors"
METRICS = "metrics.csv"
CHECK_FRAMES = 4  # frames kept for the end-of-run tile check


@dataclass
class TrainResult:
    """Summary of a finished (or stopped) run."""

    run_dir: Path
    best_checkpoint: Path
    steps: int
    epochs: int
    best_val_loss: float
    history: list[dict[str, float]] = field(default_factory=list)
    stopped_early: bool = False
    collapse_warning: bool = False
    #: the best weights' tile check (see :mod:`training.tile_check`); None without best weights
    tile_check: dict[str, Any] | None = None


def hdn_loss(
    model: LadderVAE,
    batch: torch.Tensor,
    result: TopDownResult,
    noise_model,
    norm: Normalization,
    kl_weight: float = 1.0,
) -> dict[str, torch.Tensor]:
    """Reference HDN objective: mean pixel NLL + free-bits KL per pixel.

    KL is analytic per sample and level (``result.kl[i]`` has shape (N,), nats summed over
    channels and space); each per-sample value is clamped from below by the free bits
    (``model.config.free_bits`` nats per level per patch) *before* the batch average, as in
    the reference HDN (Prakash et al., ICLR 2022, ``free_bits`` in its ``lvae.py``). The
    sum over levels is divided by the pixels of one patch. ``kl_raw`` and ``kl_levels``
    are the unclamped values, for logging.
    """
    signal = result.signal * norm.std + norm.mean
    observation = batch * norm.std + norm.mean
    recon = -noise_model.log_likelihood(observation, signal).mean()
    per_level = torch.stack([kl.mean() for kl in result.kl])  # batch-averaged, per level
    clamped = torch.stack([kl.clamp(min=model.config.free_bits).mean() for kl in result.kl])
    n_pixels = batch.shape[-1] * batch.shape[-2]
    kl_loss = clamped.sum() / n_pixels
    return {
        "loss": recon + kl_weight * kl_loss,
        "recon": recon,
        "kl": kl_loss,
        "kl_raw": per_level.sum() / n_pixels,
        "kl_levels": per_level / n_pixels,
    }


COLLAPSE_ADVICE = (
    "Try: a KL warm-up (--kl-warmup-steps 1000), more free bits, or fewer unconditional "
    "levels; `hdn-deploy explain` on a pixel-mode model shows which levels carry an artefact. "
    "A collapsed model's checkpoints are refused by export")


def collapse_diagnosis(kl_per_patch: Sequence[float], free_bits: float,
                       output_var_ratio: float) -> str | None:
    """Why a model looks collapsed, or None.

    Parameters
    ----------
    kl_per_patch
        Raw KL(q || p) per latent level, nats per patch (finest first).
    free_bits
        The free-bits floor of each level, nats per patch.
    output_var_ratio
        Variance of a posterior sample / variance of the signal in the data.

    Collapsed means the latents carry (almost) no information about the input: every
    level's KL sits at its floor (<= 1.05 x free bits), or the output is nearly flat
    (< 10 % of the signal variance) while the total KL is within 4x the total floor. A
    flat output with a large KL is a model that has not learned yet, not a collapse.
    """
    floor = free_bits * len(kl_per_patch)
    if all(kl <= 1.05 * free_bits for kl in kl_per_patch):
        return (f"every latent level's KL ({', '.join(f'{k:.2f}' for k in kl_per_patch)} nats per "
                f"patch) sits at its free-bits floor ({free_bits:g}): the output ignores the input")
    if output_var_ratio < 0.1 and sum(kl_per_patch) <= 4 * floor:
        return (f"the output keeps {100 * output_var_ratio:.1f} % of the signal variance "
                f"(a flat image) and the latents hold {sum(kl_per_patch):.1f} nats per patch")
    return None


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The optimiser ``cfg.optimizer`` names, at ``cfg.lr``."""
    params = model.parameters()
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=1e-4)
    return torch.optim.Adamax(params, lr=cfg.lr)


def init_weights(model: LadderVAE, source: str | Path) -> None:
    """Load the weights of a checkpoint (or of a folder holding ``checkpoint.safetensors``,
    e.g. a model package exported with its checkpoint) into ``model``, for fine-tuning.

    Raises
    ------
    InputError
        If ``source`` holds no checkpoint.
    ConfigError
        If the checkpoint's architecture differs from ``model``'s (names the first
        mismatching tensors and the settings that differ).
    """
    path = Path(source)
    if path.is_dir():
        path = path / "checkpoint.safetensors"
        if not path.is_file():
            raise InputError(
                f"{source}: no checkpoint.safetensors in this folder; pass a training checkpoint "
                "(best.safetensors of a run) or a package exported with --include-checkpoint")
    ckpt = load_checkpoint(path)
    own = model.state_dict()
    theirs = ckpt.model_state
    mismatched = [k for k in own if k not in theirs or tuple(theirs[k].shape) != tuple(own[k].shape)]
    mismatched += [k for k in theirs if k not in own]
    if mismatched:
        ours, other = model.config.to_dict(), ckpt.model_config.to_dict()
        differ = {k: (other.get(k), ours[k]) for k in ours if other.get(k) != ours[k]}
        raise ConfigError(
            f"{path}: its weights do not fit this model ({len(mismatched)} tensors differ, "
            f"e.g. {mismatched[:3]}); settings that differ (checkpoint, this run): {differ}. "
            "Train with the checkpoint's architecture and patch size to fine-tune it.")
    model.load_state_dict(theirs)


def _flatten_optimizer(state: dict) -> tuple[dict, dict[str, torch.Tensor]]:
    tensors, plain = {}, {}
    for idx, entries in state["state"].items():
        plain[str(idx)] = {}
        for key, value in entries.items():
            if torch.is_tensor(value):
                tensors[f"optim.{idx}.{key}"] = value
            else:
                plain[str(idx)][key] = value
    return {"param_groups": state["param_groups"], "plain": plain}, tensors


def _unflatten_optimizer(meta: dict, tensors: dict[str, torch.Tensor]) -> dict:
    state: dict[int, dict[str, Any]] = {int(k): dict(v) for k, v in meta["plain"].items()}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    return {"state": state, "param_groups": meta["param_groups"]}


class TrainingRun:
    """One training run: data, model, optimiser and the bookkeeping to resume it."""

    def __init__(
        self,
        *,
        run_dir: Path,
        data: Sequence[str],
        model_config: ModelConfig,
        train_config: TrainConfig,
        noise_model,
    ):
        self.run_dir = Path(run_dir)
        self.data = [str(d) for d in data]
        self.model_config = model_config
        self.cfg = train_config
        self.noise_model = noise_model
        frames, self.files = load_frames(self.data, model_config.patch_size)
        train, val = split_frames(frames, train_config.val_fraction, model_config.patch_size)
        self.norm = compute_normalization(train)
        # whole frames (training and validation regions) for the tile check at the end
        self.check_frames = [self.norm.apply(f) for f in frames[:CHECK_FRAMES]]
        torch.manual_seed(train_config.seed)
        self.model = LadderVAE(model_config)
        if train_config.init:
            init_weights(self.model, train_config.init)
        self.optimizer = make_optimizer(self.model, train_config)
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer, mode="min", factor=train_config.lr_factor,
            patience=train_config.lr_patience,
        )
        self.sampler = PatchSampler([self.norm.apply(f) for f in train],
                                    model_config.patch_size, train_config.seed)
        val_sampler = PatchSampler([self.norm.apply(f) for f in val],
                                   model_config.patch_size, train_config.seed + 1)
        self.val_batch = torch.from_numpy(val_sampler.batch(train_config.val_patches, augmented=False))
        self.step = 0
        self.epoch = 0
        self.best_val = math.inf
        self.bad_epochs = 0
        self.history: list[dict[str, float]] = []
        self.collapse_warning = False
        self.train_seconds = 0.0  # training steps only, across resumes
        # structured warm-up: pixel mode until the switch (see TrainConfig)
        self.switched = not (model_config.uncond_levels and train_config.structured_warmup_steps)
        if not self.switched and train_config.structured_warmup_steps >= self.total_steps():
            raise ConfigError(
                f"structured_warmup_steps ({train_config.structured_warmup_steps}) must be below "
                f"the run's total steps ({self.total_steps()}): the run would end in pixel mode")
        self.model.uncond_enabled = self.switched

    # ------------------------------------------------------------- persistence
    def settings(self) -> dict[str, Any]:
        return {
            "data": self.data,
            "model": self.model_config.to_dict(),
            "train": self.cfg.to_dict(),
            "likelihood": self.noise_model.state()[0],
        }

    def _checkpoint(self, with_state: bool, collapse: str | None = None) -> Checkpoint:
        """``collapse``: the diagnosis of the validation at these weights (recorded in the
        provenance, so that export refuses a collapsed model)."""
        meta, arrays = self.noise_model.state()
        ckpt = Checkpoint(
            model_config=self.model_config,
            normalization=self.norm,
            model_state=self.model.state_dict(),
            likelihood=meta,
            likelihood_arrays=arrays,
            provenance={
                "hdn_deploy_version": __version__,
                "torch_version": torch.__version__,
                "data": self.files,
                "step": self.step,
                "epoch": self.epoch,
                "best_val_loss": self.best_val,
                "train_config": self.cfg.to_dict(),
                **({"collapse": f"step {self.step}: {collapse}"} if collapse else {}),
            },
        )
        if with_state:
            opt_meta, opt_tensors = _flatten_optimizer(self.optimizer.state_dict())
            ckpt.training_state = {
                "optimizer": opt_meta,
                "scheduler": self.scheduler.state_dict(),
                "step": self.step,
                "epoch": self.epoch,
                "best_val": self.best_val,
                "bad_epochs": self.bad_epochs,
                "sampler_rng": self.sampler.get_state(),
                "history": self.history,
                "collapse_warning": self.collapse_warning,
                "structured_switched": self.switched,
            }
            ckpt.training_tensors = {**opt_tensors, "rng.torch": torch.get_rng_state()}
        return ckpt

    def restore(self, path: Path) -> None:
        ckpt = load_checkpoint(path)
        state = ckpt.training_state
        if state is None:
            raise ConfigError(f"{path}: checkpoint holds no training state; cannot resume from it")
        self.model.load_state_dict(ckpt.model_state)
        self.optimizer.load_state_dict(_unflatten_optimizer(state["optimizer"], ckpt.training_tensors))
        self.scheduler.load_state_dict(state["scheduler"])
        self.sampler.set_state(state["sampler_rng"])
        torch.set_rng_state(ckpt.training_tensors["rng.torch"])
        self.step, self.epoch = state["step"], state["epoch"]
        self.best_val, self.bad_epochs = state["best_val"], state["bad_epochs"]
        self.history = list(state["history"])
        self.train_seconds = self.history[-1].get("train_seconds", 0.0) if self.history else 0.0
        self.collapse_warning = bool(state.get("collapse_warning", False))
        self.switched = bool(state.get("structured_switched", True))
        self.model.uncond_enabled = self.switched

    def _write_metrics(self) -> None:
        if not self.history:
            return
        path = self.run_dir / METRICS
        with atomic_path(path) as tmp, tmp.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(self.history[-1]))
            writer.writeheader()
            writer.writerows(self.history)

    # ---------------------------------------------------------------- steps
    def kl_weight(self) -> float:
        """KL weight of the current step: ramps from 0 to 1 over ``kl_warmup_steps``, from
        the first step and again from the switch of a structured warm-up."""
        if self.cfg.kl_warmup_steps <= 0:
            return 1.0
        warm = self.cfg.structured_warmup_steps
        since = self.step - warm if self.model_config.uncond_levels and 0 < warm <= self.step else self.step
        return min(1.0, (since + 1) / self.cfg.kl_warmup_steps)

    def lr_at(self, step: int) -> float | None:
        """The scheduled learning rate at ``step``; None where ReduceLROnPlateau rules."""
        cfg = self.cfg
        warm = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0
        if cfg.lr_schedule == "cosine":
            progress = min(1.0, step / max(1, self.total_steps()))
            floor = cfg.final_lr_fraction
            return cfg.lr * warm * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))
        return cfg.lr * warm if step < cfg.warmup_steps else None

    def _switch_to_structured(self) -> None:
        """End of the pixel-mode warm-up: uncond levels become unconditional, their
        posterior heads start as copies of their prior heads, and the best checkpoint is
        chosen anew (a pixel-mode validation loss is not comparable)."""
        self.model.make_uncond_posteriors_priors()
        self.model.uncond_enabled = self.switched = True
        self.best_val, self.bad_epochs = math.inf, 0
        log.info("step %d: structured warm-up done; levels %s are unconditional from now on",
                 self.step, list(self.model_config.uncond_levels))

    def train_step(self) -> dict[str, torch.Tensor]:
        if not self.switched and self.step >= self.cfg.structured_warmup_steps:
            self._switch_to_structured()
        self.model.train()
        batch = torch.from_numpy(self.sampler.batch(self.cfg.batch_size))
        lr = self.lr_at(self.step)
        if lr is not None:
            for group in self.optimizer.param_groups:
                group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        chunks = torch.split(batch, self.cfg.virtual_batch_size or batch.shape[0])
        totals: dict[str, torch.Tensor] = {}
        for chunk in chunks:
            losses = hdn_loss(self.model, chunk, self.model(chunk), self.noise_model, self.norm,
                              self.kl_weight())
            share = chunk.shape[0] / batch.shape[0]
            (losses["loss"] * share).backward()
            for key, value in losses.items():
                totals[key] = totals.get(key, 0) + value.detach() * share
        if self.cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        self.step += 1
        return totals

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Validation losses plus the collapse diagnostics: raw KL per level (nats per patch,
        ``kl_patch_<i>``) and ``output_var_ratio``, the variance of one posterior sample over
        the validation patches divided by the signal variance the data imply (variance of
        the observations less the noise model's mean noise variance)."""
        self.model.eval()
        generator = torch.Generator().manual_seed(self.cfg.seed + 2)
        totals: dict[str, float] = {}
        levels = np.zeros(self.model_config.n_levels)
        signals = []
        chunks = torch.split(self.val_batch, self.cfg.batch_size)
        for chunk in chunks:
            eps = self.model.draw_eps(chunk.shape[0], chunk.shape[2], chunk.shape[3], generator)
            result = self.model(chunk, eps)
            losses = hdn_loss(self.model, chunk, result, self.noise_model, self.norm)
            for key in ("loss", "recon", "kl", "kl_raw"):
                totals[key] = totals.get(key, 0.0) + float(losses[key]) * chunk.shape[0]
            levels += np.array([float(kl.sum()) for kl in result.kl])
            signals.append(result.signal.numpy() * self.norm.std + self.norm.mean)
        n = self.val_batch.shape[0]
        out = {k: v / n for k, v in totals.items()}
        out.update({f"kl_patch_{i}": v / n for i, v in enumerate(levels)})
        out["output_var_ratio"] = self._output_var_ratio(np.concatenate(signals))
        return out

    def _output_var_ratio(self, signal: np.ndarray) -> float:
        observed = self.val_batch.numpy() * self.norm.std + self.norm.mean
        noise_var = float(np.mean(self.noise_model.variance(signal)))
        signal_var = max(float(observed.var()) - noise_var, 1e-3 * float(observed.var()), 1e-12)
        return float(signal.var()) / signal_var

    def _check_collapse(self, val: dict[str, float]) -> str | None:
        kls = [val[f"kl_patch_{i}"] for i in range(self.model_config.n_levels)]
        problem = collapse_diagnosis(kls, self.model_config.free_bits, val["output_var_ratio"])
        if problem is not None:
            self.collapse_warning = True
            log.warning("posterior collapse at step %d: %s. %s", self.step, problem, COLLAPSE_ADVICE)
        return problem

    def end_epoch(self, train_sums: dict[str, float], n_steps: int, seconds: float) -> bool:
        """Validate, step the LR scheduler, checkpoint; return True to stop early."""
        val = self.validate()
        full_epoch = n_steps == self.cfg.steps_per_epoch
        if full_epoch:
            self.epoch += 1
            if self.cfg.lr_schedule == "plateau" and self.step >= self.cfg.warmup_steps:
                self.scheduler.step(val["loss"])
        row = {
            "step": self.step,
            "epoch": self.epoch,
            "lr": self.optimizer.param_groups[0]["lr"],
            **{f"train_{k}": v / max(n_steps, 1) for k, v in train_sums.items()},
            **{f"val_{k}": v for k, v in val.items()},
            "patches_per_s": n_steps * self.cfg.batch_size / max(seconds, 1e-9),
        }
        self.train_seconds += seconds
        row["train_seconds"] = self.train_seconds
        self.history.append(row)
        problem = self._check_collapse(val)
        row["collapse"] = int(problem is not None)
        every = self.cfg.snapshot_every
        if every and self.step // every > (self.step - n_steps) // every:
            save_checkpoint(self.run_dir / f"step_{self.step}.safetensors",
                            self._checkpoint(with_state=False, collapse=problem))
        improved = val["loss"] < self.best_val
        if improved:
            self.best_val = val["loss"]
            self.bad_epochs = 0
            save_checkpoint(self.run_dir / BEST, self._checkpoint(with_state=False,
                                                                  collapse=problem))
        elif full_epoch:
            self.bad_epochs += 1
        save_checkpoint(self.run_dir / LAST, self._checkpoint(with_state=True, collapse=problem))
        self._write_metrics()
        if problem is not None and self.cfg.stop_on_collapse:
            raise TrainingError(f"{self.run_dir}: stopped at step {self.step}: posterior collapse: "
                                f"{problem}. {COLLAPSE_ADVICE}")
        return self.bad_epochs >= self.cfg.early_stop_patience

    def total_steps(self) -> int:
        limits = []
        if self.cfg.max_steps is not None:
            limits.append(self.cfg.max_steps)
        if self.cfg.max_epochs is not None:
            limits.append(self.cfg.max_epochs * self.cfg.steps_per_epoch)
        return min(limits)

    def run(self, *, progress: bool = True) -> TrainResult:
        total = self.total_steps()
        stopped_early = False
        bar = tqdm(total=total, initial=self.step, disable=not progress, unit="step", desc="train")
        try:
            while self.step < total and not stopped_early:
                sums = {"loss": 0.0, "recon": 0.0, "kl": 0.0, "kl_raw": 0.0}
                level_sums = np.zeros(self.model_config.n_levels)
                start, n = time.perf_counter(), 0
                while n < self.cfg.steps_per_epoch and self.step < total:
                    losses = self.train_step()
                    n += 1
                    values = {key: float(losses[key].detach()) for key in sums}
                    for key, value in values.items():
                        sums[key] += value
                    level_sums += losses["kl_levels"].detach().numpy()
                    bar.update(1)
                    bar.set_postfix(loss=f"{values['loss']:.4f}", recon=f"{values['recon']:.4f}",
                                    kl=f"{values['kl_raw']:.4f}")
                sums.update({f"kl_level_{i}": v for i, v in enumerate(level_sums)})
                stopped_early = self.end_epoch(sums, n, time.perf_counter() - start)
                if self.history[-1]["collapse"]:
                    bar.set_description("train (COLLAPSE: see log)")
        finally:
            bar.close()
        return TrainResult(
            run_dir=self.run_dir, best_checkpoint=self.run_dir / BEST, steps=self.step,
            epochs=self.epoch, best_val_loss=self.best_val, history=self.history,
            stopped_early=stopped_early, collapse_warning=self.collapse_warning,
            tile_check=self.record_tile_check(),
        )

    def record_tile_check(self) -> dict[str, Any] | None:
        """Measure the best weights' drift per tile size (:func:`tile_check.tile_check`) and
        store it in ``best.safetensors``' provenance as ``tile_check`` (export recommends its
        ``safe_tile``). None when there are no best weights yet."""
        path = self.run_dir / BEST
        if not path.is_file():
            return None
        ckpt = load_checkpoint(path)
        record = tile_check(ckpt.build_model(), self.check_frames, seed=self.cfg.seed)
        ckpt.provenance = {**ckpt.provenance, "tile_check": record}
        save_checkpoint(path, ckpt)
        if record["safe_tile"] is None:
            log.warning("the best weights' MMSE is offset from the input even in tiles of %s px "
                        "(drift %s, limit %s): train longer", min(map(int, record["drift"])),
                        record["drift"], record["limit"])
        else:
            log.info("tile check: drift per tile size %s; recommended tile %s",
                     record["drift"], record["safe_tile"])
        return record


def train(
    data: Sequence[str | Path],
    run_dir: str | Path,
    *,
    model_config: ModelConfig,
    train_config: TrainConfig,
    noise_model,
    progress: bool = True,
) -> TrainResult:
    """Train a new HDN model; the run folder must not hold a run already.

    Every input is validated before anything is written to ``run_dir``.
    """
    run_dir = Path(run_dir)
    if (run_dir / RUN_FILE).exists():
        raise ConfigError(f"{run_dir} already holds a run; use --resume {run_dir} or another folder")
    if train_config.num_threads:
        torch.set_num_threads(train_config.num_threads)
    run = TrainingRun(run_dir=run_dir, data=[str(d) for d in data], model_config=model_config,
                      train_config=train_config, noise_model=noise_model)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / RUN_FILE, json.dumps(run.settings(), indent=2))
    return run.run(progress=progress)


def resume(run_dir: str | Path, *, overrides: dict[str, Any] | None = None,
           progress: bool = True) -> TrainResult:
    """Continue a run from its last checkpoint; ``overrides`` may raise max_steps/epochs."""
    from .noise_models import noise_model_from_state

    run_dir = Path(run_dir)
    settings_path = run_dir / RUN_FILE
    if not settings_path.is_file() or not (run_dir / LAST).is_file():
        raise InputError(f"{run_dir}: no resumable run here (needs {RUN_FILE} and {LAST})")
    settings = json.loads(settings_path.read_text())
    train_cfg = TrainConfig.from_dict({**settings["train"], **(overrides or {})})
    if train_cfg.num_threads:
        torch.set_num_threads(train_cfg.num_threads)
    last = load_checkpoint(run_dir / LAST)
    run = TrainingRun(
        run_dir=run_dir, data=settings["data"], model_config=ModelConfig.from_dict(settings["model"]),
        train_config=train_cfg, noise_model=noise_model_from_state(last.likelihood, last.likelihood_arrays),
    )
    run.restore(run_dir / LAST)
    if overrides:
        settings["train"] = train_cfg.to_dict()
        atomic_write_text(run_dir / RUN_FILE, json.dumps(settings, indent=2))
    return run.run(progress=progress)
