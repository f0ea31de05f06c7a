"""`hdn-deploy export`: checkpoint -> model package, optionally with a distilled direct
denoiser and an int8 decoder (needs the [export] extra)."""
from __future__ import annotations

import tempfile
from pathlib import Path

import click

from ..errors import ConfigError, PackageError
from .heavy import load
from .main import handle_errors, main


def _extras(export_direct, export_int8, source: Path, output: Path, *, direct, int8,
            calibration_data, int8_max_loss_db, opset, verify, overwrite) -> Path:
    """Add the direct graph and/or the int8 decoder to package ``source`` into ``output``."""
    if direct and int8:
        with tempfile.TemporaryDirectory(dir=output.parent, prefix=".export-") as tmp:
            staged = export_direct.add_direct(source, direct, Path(tmp) / "pkg", opset=opset,
                                              verify=verify)
            return export_int8.int8_package(staged, output, calibration_data,
                                            max_loss_db=int8_max_loss_db, overwrite=overwrite)
    if direct:
        return export_direct.add_direct(source, direct, output, opset=opset, verify=verify,
                                        overwrite=overwrite)
    return export_int8.int8_package(source, output, calibration_data,
                                    max_loss_db=int8_max_loss_db, overwrite=overwrite)


@main.command("export")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Model package folder to create.")
@click.option("--tile", type=int, help="Recommended tile size stored in the package.")
@click.option("--overlap", type=int, help="Recommended tile overlap stored in the package.")
@click.option("--opset", type=int, default=18, show_default=True, help="ONNX opset (>= 18).")
@click.option("--description", help="What noise/data the model is for (stored in the manifest).")
@click.option("--posterior-logvar-max", type=float, default=4.0, show_default=True,
              help="Upper clamp of posterior log-variances in the graphs (safety at inference).")
@click.option("--direct", type=click.Path(path_type=Path), default=None,
              help="Add the direct denoiser of this `hdn-deploy distill` run (folder or "
              "checkpoint) as direct.onnx (`denoise --mode direct`).")
@click.option("--int8", is_flag=True, help="Quantise the decoder to int8 (static, calibrated "
              "on --calibration-data); refused when the estimated PSNR loss on patches held out "
              "from calibration exceeds --int8-max-loss-db.")
@click.option("--calibration-data", multiple=True, help="Training TIFFs (files, folders, "
              "globs; repeatable) for --int8: never the images you evaluate on.")
@click.option("--int8-max-loss-db", type=float, default=0.1, show_default=True,
              help="Largest accepted estimated PSNR loss of the int8 decoder (dB).")
@click.option("--allow-collapsed", is_flag=True, help="Export even a checkpoint whose training "
              "found a posterior collapse (refused by default: it returns a flat image).")
@click.option("--no-verify", is_flag=True, help="Skip the onnxruntime-vs-PyTorch check.")
@click.option("--overwrite", is_flag=True, help="Replace an existing package folder.")
@handle_errors
def export_command(checkpoint, output, tile, overlap, opset, description, posterior_logvar_max,
                   direct, int8, calibration_data, int8_max_loss_db, allow_collapsed, no_verify,
                   overwrite):
    """Export CHECKPOINT (a training run's best.safetensors) to a model package.

    CHECKPOINT may also be an existing model package folder: with --direct and/or --int8
    its graphs are copied unchanged and the direct graph / int8 decoder are added.
    """
    from ..package import MANIFEST_FILE, load_package

    if int8 and not calibration_data:
        raise ConfigError("--int8 needs --calibration-data (the model's training images)")
    if calibration_data and not int8:
        raise ConfigError("--calibration-data is only used with --int8")
    is_package = checkpoint.is_dir() and (checkpoint / MANIFEST_FILE).is_file()
    if is_package and not (direct or int8):
        raise PackageError(f"{checkpoint} is a model package already; give --direct RUN and/or "
                           "--int8 to add to it, or export a training checkpoint")
    if output.exists() and not overwrite:
        raise PackageError(f"{output} exists already; remove it or pass --overwrite")
    export = load("export", purpose="`hdn-deploy export`", requires=("torch", "onnx"),
                  extra="export")
    export_direct = load("export.direct", purpose="`hdn-deploy export --direct`",
                         requires=("torch", "onnx"), extra="export") if direct else None
    export_int8 = load("export.int8", purpose="`hdn-deploy export --int8`",
                       requires=("onnx", "onnxruntime"), extra="export") if int8 else None
    kwargs = dict(direct=direct, int8=int8, calibration_data=calibration_data,
                  int8_max_loss_db=int8_max_loss_db, opset=opset, verify=not no_verify,
                  overwrite=overwrite)
    if is_package:
        path = _extras(export_direct, export_int8, checkpoint, output, **kwargs)
    elif direct or int8:
        output.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=output.parent, prefix=".export-") as tmp:
            base = export.package_from_checkpoint(
                checkpoint, Path(tmp) / "pkg", opset=opset, tile_size=tile, overlap=overlap,
                verify=not no_verify, description=description,
                posterior_logvar_max=posterior_logvar_max, allow_collapsed=allow_collapsed)
            path = _extras(export_direct, export_int8, base, output, **kwargs)
    else:
        path = export.package_from_checkpoint(
            checkpoint, output, opset=opset, tile_size=tile, overlap=overlap,
            verify=not no_verify, overwrite=overwrite, description=description,
            posterior_logvar_max=posterior_logvar_max, allow_collapsed=allow_collapsed)
    manifest = load_package(path).manifest
    diff = manifest.export.verified_max_abs_diff
    check = "not verified" if diff is None else f"verified, max abs diff {diff:.2e}"
    click.echo(f"wrote model package {path} ({check})")
    if manifest.direct is not None:
        d = manifest.direct.verified_max_abs_diff
        click.echo("  direct denoiser: direct.onnx (" + (
            "not verified" if d is None else f"verified, max abs diff {d:.2e}") + ")")
    if manifest.export.int8 is not None and manifest.export.int8.check is not None:
        c = manifest.export.int8.check
        click.echo(f"  int8 decoder: estimated PSNR loss {c.estimated_psnr_loss_db:.3f} dB on "
                   f"{c.patches} held-out patches (bound {c.max_loss_db:g} dB)")
