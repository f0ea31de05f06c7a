"""`hdn-deploy train`: train an HDN model from noisy TIFFs (needs the [train] extra)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import click

from ..errors import ConfigError, InputError
from .._optional import require
from .heavy import load
from .main import handle_errors, main

# CLI flag -> (section, key) in the config file / dataclasses.
_MODEL_FLAGS = {
    "filters": "n_filters", "blocks": "blocks_per_level", "dropout": "dropout",
    "free_bits": "free_bits", "patch_size": "patch_size", "batchnorm": "batchnorm",
    "gated": "gated",
}
_TRAIN_FLAGS = {
    "batch_size": "batch_size", "lr": "lr", "lr_patience": "lr_patience", "max_steps": "max_steps", "max_epochs": "max_epochs",
    "steps_per_epoch": "steps_per_epoch", "val_fraction": "val_fraction", "val_patches": "val_patches",
    "early_stop_patience": "early_stop_patience", "kl_warmup_steps": "kl_warmup_steps",
    "seed": "seed", "threads": "num_threads", "optimizer": "optimizer",
    "lr_schedule": "lr_schedule", "warmup_steps": "warmup_steps", "grad_clip": "grad_clip",
    "virtual_batch_size": "virtual_batch_size", "init": "init", "snapshot_every": "snapshot_every",
    "stop_on_collapse": "stop_on_collapse", "structured_warmup_steps": "structured_warmup_steps",
}


def read_config_file(path: Path) -> dict[str, Any]:
    """Settings from a YAML (.yaml/.yml) or TOML (.toml) file."""
    text = path.read_text()
    try:
        if path.suffix.lower() == ".toml":
            import tomllib

            data = tomllib.loads(text)
        elif path.suffix.lower() in (".yaml", ".yml"):
            data = require("yaml", purpose="reading a YAML config").safe_load(text) or {}
        else:
            raise ConfigError(f"{path}: config files must end in .yaml, .yml or .toml")
    except ConfigError:
        raise
    except Exception as exc:  # parser errors of either format
        raise ConfigError(f"{path}: cannot parse config file ({exc})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level")
    allowed = {"data", "output", "noise_model", "gaussian_sigma", "structured", "line_artefacts",
               "model", "train", "preset"}
    unknown = set(data) - allowed
    if unknown:
        raise ConfigError(f"{path}: unknown keys {sorted(unknown)}; allowed: {sorted(allowed)}")
    return data


def merge_settings(file_settings: dict[str, Any], flags: dict[str, Any]) -> dict[str, Any]:
    """Preset, then config-file settings, then command-line flags (those given) on top."""
    preset = _preset(flags.get("preset") or file_settings.get("preset"))
    settings = {k: v for k, v in file_settings.items() if k not in ("model", "train", "preset")}
    model = {**preset.get("model", {}), **(file_settings.get("model") or {})}
    train = {**preset.get("train", {}), **(file_settings.get("train") or {})}
    for flag, key in _MODEL_FLAGS.items():
        if flags.get(flag) is not None:
            model[key] = flags[flag]
    for flag, key in _TRAIN_FLAGS.items():
        if flags.get(flag) is not None:
            train[key] = flags[flag]
    if flags.get("levels") is not None or flags.get("latent_channels") is not None:
        n = flags.get("levels") or len(model.get("z_dims", [32] * 6))
        z = flags.get("latent_channels") or (model.get("z_dims") or [32])[0]
        model["z_dims"] = [z] * n
    for key in ("data", "output", "noise_model", "gaussian_sigma", "line_artefacts"):
        if flags.get(key):
            settings[key] = flags[key]
    if flags.get("structured"):
        settings["structured"] = True
    if settings.get("structured") and not settings.get("line_artefacts"):
        settings["line_artefacts"] = "both"
    if flags.get("uncond_levels") is not None:
        model["uncond_levels"] = _levels(flags["uncond_levels"])
    settings["model"], settings["train"] = model, train
    return settings


def _levels(text: str) -> list[int]:
    try:
        return [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise ConfigError(f"--uncond-levels takes comma-separated level numbers (e.g. 0,1), "
                          f"got {text!r}") from None


def _preset(name: str | None) -> dict[str, dict[str, Any]]:
    PRESETS = load("training.config", purpose="`hdn-deploy train --preset`").PRESETS  # noqa: N806

    if name is None:
        return {}
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]


def _noise_model(settings: dict[str, Any]):
    noise_models = load("training.noise_models", purpose="`hdn-deploy train`")
    GaussianNoiseModel = noise_models.GaussianNoiseModel
    load_noise_model = noise_models.load_noise_model

    has_nm, has_sigma = settings.get("noise_model"), settings.get("gaussian_sigma")
    if bool(has_nm) == bool(has_sigma):
        raise ConfigError(
            "give exactly one likelihood: --noise-model FILE (from `hdn-deploy noise-model`) "
            "or --gaussian-sigma SIGMA (known Gaussian noise, raw intensity units)"
        )
    pixel = (GaussianNoiseModel(float(has_sigma)) if has_sigma
             else load_noise_model(Path(has_nm)))
    lines = settings.get("line_artefacts")
    return _line_noise_model(settings, lines, pixel) if lines else pixel


def _line_noise_model(settings: dict[str, Any], lines: str, pixel):
    """The pixel noise model plus row/column offsets whose std is estimated from the data."""
    import warnings

    import numpy as np

    noise_models = load("training.noise_models", purpose="`hdn-deploy train`")
    if lines not in noise_models.LINE_AXES:
        raise ConfigError(f"line_artefacts must be one of {list(noise_models.LINE_AXES)}, "
                          f"got {lines!r}")
    data = load("training.data", purpose="`hdn-deploy train`")
    frames, _ = data.load_frames(settings["data"], settings["model"].get("patch_size", 64))
    with warnings.catch_warnings():  # all-NaN variance is reported below, not as a warning
        warnings.simplefilter("ignore", RuntimeWarning)
        noise_var = float(np.mean([np.nanmean(pixel.variance(f)) for f in frames]))
    if not np.isfinite(noise_var):
        raise ConfigError(f"{settings.get('noise_model')}: the noise model gives no variance over "
                          "the training data's intensities, so the line offsets cannot be "
                          "estimated; calibrate it on data covering that range")
    std = {axis: noise_models.estimate_line_std(frames, axis, noise_var)
           if lines in (axis, "both") else 0.0 for axis in ("rows", "columns")}
    click.echo(f"line artefacts: offset std estimated from the data: rows {std['rows']:.3g}, "
               f"columns {std['columns']:.3g} (raw units; pixel noise std "
               f"{noise_var ** 0.5:.3g} on average)")
    return noise_models.LineArtefactNoiseModel(pixel, std["rows"], std["columns"])


@main.command()
@click.argument("data", nargs=-1)
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path),
              help="Run folder (checkpoints, metrics.csv).")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="YAML or TOML settings; flags override it.")
@click.option("--resume", type=click.Path(file_okay=False, path_type=Path),
              help="Continue the run in this folder from its last checkpoint.")
@click.option("--noise-model", type=click.Path(dir_okay=False), help="Noise model file (.npz).")
@click.option("--gaussian-sigma", type=float, help="Known Gaussian noise std (raw units).")
@click.option("--structured", is_flag=True,
              help="Structured-noise mode for line artefacts: --line-artefacts both (row and "
                   "column offsets are noise to the likelihood, their std estimated from the "
                   "data).")
@click.option("--uncond-levels",
              help="Comma-separated latent levels made unconditional (the reference HDN's "
                   "structured switch, e.g. 0,1; measured not to remove line artefacts, see "
                   "README).")
@click.option("--structured-warmup-steps", type=click.IntRange(min=0),
              help="Experimental, with --uncond-levels: train this many steps in pixel mode, "
                   "then make those levels unconditional (default 0: from the start; measured "
                   "worse on a tiny task, see README).")
@click.option("--line-artefacts", type=click.Choice(["rows", "columns", "both"]),
              help="Line artefacts in the data (a random offset per row and/or column): "
                   "the likelihood treats them as noise, with their std estimated from the "
                   "data, so the model gains nothing by encoding them (see README for how "
                   "much of them the MMSE keeps).")
@click.option("--levels", type=int, help="Latent levels (default 6).")
@click.option("--latent-channels", type=int, help="Latent channels per level (default 32).")
@click.option("--filters", type=int, help="Feature channels (default 64).")
@click.option("--blocks", type=int, help="Residual blocks per level (default 5).")
@click.option("--dropout", type=float,
              help="Dropout2d probability (default 0.2 as the reference; 0 with --preset cpu).")
@click.option("--batchnorm/--no-batchnorm", default=None)
@click.option("--gated/--no-gated", default=None)
@click.option("--free-bits", type=float, help="KL free bits per level per patch (default 1).")
@click.option("--patch-size", type=int, help="Training patch size (default 64).")
@click.option("--batch-size", type=int, help="Patches per step (default 64).")
@click.option("--preset", type=click.Choice(["cpu"]),
              help="Named recipe (architecture + schedule) that flags and --config override; "
                   "'cpu': the measured recipe for a few CPU hours (see README).")
@click.option("--init", type=click.Path(exists=True, path_type=str),
              help="Fine-tune: start from this checkpoint's weights (or a package folder "
                   "holding checkpoint.safetensors); same architecture required.")
@click.option("--optimizer", type=click.Choice(["adamax", "adam", "adamw"]),
              help="Optimiser (default adamax, as the reference).")
@click.option("--lr-schedule", type=click.Choice(["plateau", "cosine"]),
              help="plateau: halve on stalled validation loss (default); cosine: decay over the run.")
@click.option("--warmup-steps", type=int, help="Linear learning-rate warm-up steps (default 0).")
@click.option("--grad-clip", type=float, help="Clip the gradient norm to this value (default off).")
@click.option("--virtual-batch-size", type=int,
              help="Accumulate gradients over chunks of this many patches (reference: 8).")
@click.option("--snapshot-every", type=int,
              help="Also keep the weights every N steps (step_<N>.safetensors).")
@click.option("--stop-on-collapse/--no-stop-on-collapse", default=None,
              help="End with an error (exit 2) when a validation detects posterior collapse.")
@click.option("--lr", type=float, help="Learning rate (default 3e-4).")
@click.option("--lr-patience", type=int, help="Epochs without improvement before halving the LR (default 10).")
@click.option("--max-steps", type=int, help="Stop after this many steps.")
@click.option("--max-epochs", type=int, help="Stop after this many epochs (default 100).")
@click.option("--steps-per-epoch", type=int, help="Steps between validations (default 200).")
@click.option("--val-fraction", type=float,
              help="Share of data held out for validation (default 0.1, at least one patch "
                   "high; 0 with --preset cpu); 0: none, validate on training patches (every "
                   "pixel trained on).")
@click.option("--val-patches", type=int, help="Fixed validation patches (default 256).")
@click.option("--early-stop-patience", type=int, help="Epochs without improvement (default 30).")
@click.option("--kl-warmup-steps", type=int, help="Ramp the KL weight from 0 to 1 (default 0).")
@click.option("--seed", type=int, help="Random seed (default 0).")
@click.option("--threads", type=int, help="CPU threads for torch.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@handle_errors
def train(data, output, config_file, resume, quiet, **flags):
    """Train an HDN model on noisy TIFF images DATA (files, folders, globs)."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    trainer = load("training.trainer", purpose="`hdn-deploy train`")

    if resume is not None:
        overrides = {k: flags[f] for f, k in (("max_steps", "max_steps"), ("max_epochs", "max_epochs"))
                     if flags.get(f) is not None}
        result = trainer.resume(resume, overrides=overrides, progress=not quiet)
    else:
        file_settings = read_config_file(config_file) if config_file else {}
        settings = merge_settings(file_settings, {**flags, "data": list(data), "output": output})
        if not settings.get("data"):
            raise InputError("no training data given: pass TIFF files, folders or globs")
        if not settings.get("output"):
            raise ConfigError("no run folder given: pass -o RUN_DIR (or `output` in the config)")
        config = load("training.config", purpose="`hdn-deploy train`")
        ModelConfig, TrainConfig = config.ModelConfig, config.TrainConfig

        result = trainer.train(
            settings["data"], settings["output"],
            model_config=ModelConfig.from_dict(settings["model"]),
            train_config=TrainConfig.from_dict(settings["train"]),
            noise_model=_noise_model(settings), progress=not quiet,
        )
    click.echo(
        f"trained {result.steps} steps ({result.epochs} epochs); best validation loss "
        f"{result.best_val_loss:.5f}; model: {result.best_checkpoint}"
    )
    _report_tile_check(result.tile_check)
    if result.collapse_warning:
        click.echo("warning: posterior collapse suspected (see metrics.csv, KL per level)", err=True)


def _report_tile_check(record: dict | None) -> None:
    """One line on the tile check of the best weights (training/tile_check.py)."""
    if not record:
        return
    drift = ", ".join(f"{size} px {ratio:.3f}" for size, ratio in record["drift"].items())
    if record["safe_tile"] is None:
        click.echo(f"warning: the MMSE is offset from the input in every tile size tried "
                   f"(drift {drift}; limit {record['limit']}): train longer", err=True)
    else:
        click.echo(f"tile check (MMSE offset / residual std): {drift}; export will recommend "
                   f"tile {record['safe_tile']}")

