"""`hdn-deploy distill`: train a direct (one-pass) denoiser on the HDN's posterior samples
(needs the [train] extra). Export it into a package with ``hdn-deploy export --direct``."""
from __future__ import annotations

from pathlib import Path

import click

from ..errors import ConfigError
from .heavy import load
from .main import handle_errors, main


@main.command("distill")
@click.argument("source", required=False, type=click.Path(path_type=Path))
@click.argument("data", nargs=-1)
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path),
              help="Run folder to create (distill.json, metrics.csv, best/last.safetensors).")
@click.option("--resume", type=click.Path(file_okay=False, path_type=Path),
              help="Continue the run in this folder (SOURCE and DATA are not given).")
@click.option("--steps", type=int, default=None, help="Training steps (default 2000; with "
              "--resume: raise the total).")
@click.option("--batch-size", type=int, default=8, show_default=True)
@click.option("--patch-size", type=int, default=64, show_default=True)
@click.option("--lr", type=float, default=1e-3, show_default=True,
              help="Adam learning rate (cosine decay to 1 %).")
@click.option("--channels", type=int, default=16, show_default=True,
              help="U-Net channels at full resolution (doubled per level).")
@click.option("--depth", type=int, default=3, show_default=True, help="U-Net downsamplings.")
@click.option("--val-patches", type=int, default=32, show_default=True)
@click.option("--val-samples", type=int, default=16, show_default=True,
              help="Antithetic samples of the validation patches' reference MMSE.")
@click.option("--validate-every", type=int, default=100, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--threads", type=int, default=None, help="CPU threads for torch.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@handle_errors
def distill_command(source, data, output, resume, steps, batch_size, patch_size, lr, channels,
                    depth, val_patches, val_samples, validate_every, seed, threads, quiet):
    """Distill the HDN of SOURCE (a training checkpoint, or a folder holding
    checkpoint.safetensors) into a direct denoiser trained on patches of DATA (the HDN's
    training TIFFs: never the images you evaluate on).

    Targets are posterior samples (antithetic pairs) of the HDN: their expectation is the
    MMSE, so the L2-trained network learns the MMSE in one pass (COSDD's direct denoiser).
    """
    distill = load("training.distill", purpose="`hdn-deploy distill`", extra="train")
    if threads:
        distill.set_threads(threads)
    if resume is not None:
        if source is not None or data or output is not None:
            raise ConfigError("--resume RUN takes no SOURCE, DATA or -o")
        result = distill.resume_distill(resume, steps=steps, progress=not quiet)
    else:
        if source is None or not data or output is None:
            raise ConfigError("give SOURCE, at least one DATA path and -o RUN (or --resume RUN)")
        config = distill.DistillConfig(
            steps=steps or 2000, batch_size=batch_size, patch_size=patch_size, lr=lr,
            val_patches=val_patches, val_samples=val_samples, validate_every=validate_every,
            seed=seed)
        result = distill.distill(source, data, output, config=config,
                                 direct_config=distill.DirectConfig(channels, depth),
                                 progress=not quiet)
    last = result["history"][-1]
    click.echo(f"distilled {result['steps']} steps into {result['run_dir']}: best validation "
               f"MSE to the HDN MMSE {result['best_val_mse']:.4g} (normalised units; the noisy "
               f"input scores {last['val_mse_input']:.4g})")
