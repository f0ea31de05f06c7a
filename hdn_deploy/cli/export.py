"""`hdn-deploy export`: checkpoint -> model package (needs the [export] extra)."""
from __future__ import annotations

from pathlib import Path

import click

from .heavy import load
from .main import handle_errors, main


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
@click.option("--no-verify", is_flag=True, help="Skip the onnxruntime-vs-PyTorch check.")
@click.option("--overwrite", is_flag=True, help="Replace an existing package folder.")
@handle_errors
def export_command(checkpoint, output, tile, overlap, opset, description, posterior_logvar_max,
                   no_verify, overwrite):
    """Export CHECKPOINT (a training run's best.safetensors) to a model package."""
    from ..package import load_package

    export = load("export", purpose="`hdn-deploy export`", requires=("torch", "onnx"),
                  extra="export")
    path = export.package_from_checkpoint(
        checkpoint, output, opset=opset, tile_size=tile, overlap=overlap, verify=not no_verify,
        overwrite=overwrite, description=description, posterior_logvar_max=posterior_logvar_max)
    diff = load_package(path).manifest.export.verified_max_abs_diff
    check = "not verified" if diff is None else f"verified, max abs diff {diff:.2e}"
    click.echo(f"wrote model package {path} ({check})")
