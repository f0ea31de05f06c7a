"""`hdn-deploy noise-model`: fit a noise model from a calibration stack or by bootstrapping.

Writes the model file (GMM interchange ``.npz``, or a histogram ``.npy``/``.npz``)
atomically and a ``<stem>.png`` plot of the fit beside it. Needs the [train] extra.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import click
import numpy as np

from .._optional import require
from ..errors import InputError
from ..io import read_image
from ..options import NoiseModelKind
from .heavy import load
from .main import handle_errors, main

_KINDS = (NoiseModelKind.GMM.value, NoiseModelKind.HISTOGRAM.value)  # fitted from data
_SUFFIXES = {"gmm": (".npz",), "histogram": (".npz", ".npy")}


def _fit_options(func: Callable) -> Callable:
    """Options shared by `calibrate` and `bootstrap` (one-to-one with library keywords)."""
    options = [
        click.option("-o", "--output", required=True,
                     type=click.Path(dir_okay=False, path_type=Path),
                     help="Model file to write (.npz; .npy also for --kind histogram). "
                          "A plot of the fit goes to <stem>.png beside it."),
        click.option("--kind", type=click.Choice(_KINDS), default="gmm", show_default=True,
                     help="gmm: Gaussian mixture (DivNoising/PPN2V layout); "
                          "histogram: 2D histogram."),
        click.option("--n-gaussian", type=click.IntRange(min=1), default=3, show_default=True,
                     help="GMM: mixture components."),
        click.option("--n-coeff", type=click.IntRange(min=1), default=2, show_default=True,
                     help="GMM: polynomial coefficients per parameter (2 = linear in the signal)."),
        click.option("--iterations", type=click.IntRange(min=1), default=2000, show_default=True,
                     help="GMM: Adam steps."),
        click.option("--batch-size", type=click.IntRange(min=1), default=250_000, show_default=True,
                     help="GMM: pixel pairs per step."),
        click.option("--min-sigma", type=click.FloatRange(min=0.0), default=None,
                     help="GMM: floor of each component's variance (raw units squared; "
                          "default 1e-4 x the mean squared residual)."),
        click.option("--bins", type=click.IntRange(min=2), default=256, show_default=True,
                     help="Histogram: bins per axis."),
        click.option("--seed", type=int, default=0, show_default=True,
                     help="Seed of the GMM initialisation and shuffling."),
        click.option("--device", default="auto", show_default=True,
                     help="Torch device for the GMM fit: auto (cuda if available), cpu, "
                          "cuda, cuda:1..."),
        click.option("--threads", type=click.IntRange(min=1), default=None,
                     help="CPU threads for torch (default: torch's choice)."),
        click.option("--quiet", is_flag=True, help="No progress bar."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@main.group("noise-model")
def noise_model() -> None:
    """Fit a noise model p(x|s) (for `hdn-deploy train --noise-model`)."""


@noise_model.command()
@click.argument("stack", type=click.Path(path_type=Path))
@_fit_options
@handle_errors
def calibrate(stack: Path, **options: Any) -> None:
    """Fit from STACK.tif: a static sample imaged many times (frames, Y, X).

    The signal is the mean over frames; every frame is an observation of it (its
    residual scaled by sqrt(N/(N-1)) so that the noise variance is not underestimated).
    """
    _check_output(options["output"], options["kind"], inputs=[stack])
    data = read_image(stack).array
    if data.ndim != 3:
        raise InputError(
            f"'{stack}' is a single 2-D image (shape {data.shape}); calibration needs a "
            "stack of frames of a static sample (frames, Y, X), ideally ~100 frames"
        )
    signal, observation = _training("noise_pairs").calibration_pairs(data, source=f"'{stack}'")
    _fit_and_write(signal, observation, **options)


@noise_model.command()
@click.argument("noisy", type=click.Path(path_type=Path))
@click.option("--signal", "signal_path", required=True, type=click.Path(path_type=Path),
              help="Denoised estimate of NOISY (same shape), e.g. from a self-supervised denoiser.")
@_fit_options
@handle_errors
def bootstrap(noisy: Path, signal_path: Path, **options: Any) -> None:
    """Fit from NOISY.tif and a first denoiser's output --signal DENOISED.tif.

    The signal is clipped to its 0.5-99.5 percentiles.
    """
    _check_output(options["output"], options["kind"], inputs=[noisy, signal_path])
    noisy_data = read_image(noisy).array
    signal_data = read_image(signal_path).array
    signal, observation = _training("noise_pairs").bootstrap_pairs(
        noisy_data, signal_data, source=f"'{noisy}'", signal_source=f"'{signal_path}'"
    )
    _fit_and_write(signal, observation, **options)


def _training(module: str):
    """``hdn_deploy.training.<module>``, after checking torch and matplotlib."""
    return load(f"training.{module}", purpose="`hdn-deploy noise-model`",
                requires=("torch", "matplotlib"))


def _check_output(output: Path, kind: str, *, inputs: list[Path]) -> None:
    """Reject an unusable output path before any work is done."""
    allowed = _SUFFIXES[kind]
    if output.suffix.lower() not in allowed:
        raise InputError(
            f"output '{output}': a {kind} noise model is written as {' or '.join(allowed)}; "
            f"e.g. -o {output.with_suffix(allowed[0])}"
        )
    targets = {output.resolve(), output.with_suffix(".png").resolve()}
    for path in inputs:
        if path.exists() and path.resolve() in targets:
            raise InputError(f"output '{output}' would overwrite the input '{path}'")


def _torch_device(name: str):
    torch = require("torch", purpose="`hdn-deploy noise-model`")
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise InputError(f"unknown torch device '{name}': {exc}; use auto, cpu or cuda") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {name}: no CUDA GPU is available to torch; use cpu or auto")
    return device


def _fit_and_write(signal: np.ndarray, observation: np.ndarray, *, output: Path, kind: str,
                   n_gaussian: int, n_coeff: int, iterations: int, batch_size: int,
                   min_sigma: float | None, bins: int, seed: int, device: str,
                   threads: int | None, quiet: bool) -> None:
    noise_models = _training("noise_models")
    GMMNoiseModel = noise_models.GMMNoiseModel
    HistogramNoiseModel = noise_models.HistogramNoiseModel
    plot_noise_model_fit = _training("noise_plot").plot_noise_model_fit

    if threads is not None:
        require("torch", purpose="`hdn-deploy noise-model`").set_num_threads(threads)

    if kind == "gmm":
        model = GMMNoiseModel.fit(
            signal, observation, n_gaussian=n_gaussian, n_coeff=n_coeff, min_sigma=min_sigma,
            iterations=iterations, batch_size=batch_size, seed=seed,
            device=_torch_device(device), progress=not quiet,
        )
    else:
        model = HistogramNoiseModel.fit(signal, observation, bins=bins)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the folder of output '{output}': {exc}") from exc
    plot = output.with_suffix(".png")
    model.save(output)
    try:
        plot_noise_model_fit(model, signal, observation, plot)
    except BaseException:
        output.unlink(missing_ok=True)  # all or nothing
        raise
    levels = np.percentile(signal, [5, 50, 95])
    stds = np.sqrt(model.variance(levels))
    click.echo(
        f"wrote {kind} noise model to {output} (fit plot: {plot}); noise std at signal "
        + ", ".join(f"{lvl:.4g}: {std:.4g}" for lvl, std in zip(levels, stds))
        + f" (5th/50th/95th percentile of the signal; {signal.size} pixel pairs)"
    )
