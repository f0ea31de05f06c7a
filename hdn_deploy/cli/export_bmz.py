"""`hdn-deploy export-bmz`: model package -> BioImage Model Zoo zip (needs [bmz]; no torch)."""
from __future__ import annotations

from pathlib import Path

import click

from .heavy import load
from .main import handle_errors, main


@main.command("export-bmz")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The bioimage.io model .zip to write.")
@click.option("--n-samples", "n_samples", default=8, show_default=True,
              help="Posterior samples inside the graph (even: antithetic pairs).")
@click.option("--seed", default=0, show_default=True, help="Seed of the in-graph latent noise.")
@click.option("--test-image", type=click.Path(dir_okay=False, path_type=Path),
              help="TIFF whose centre crop is the test input (default: the bundled sample).")
@click.option("--test-size", default=128, show_default=True,
              help="Largest side of the test input crop, in pixels.")
@click.option("--name", default="HDN denoiser (hdn-deploy)", show_default=True,
              help="Model name shown in the zoo.")
@click.option("--author", "authors", multiple=True, help="Author name (repeatable).")
@click.option("--license", "license_id", default="BSD-3-Clause", show_default=True,
              help="SPDX license identifier of the weights.")
@click.option("--test/--no-test", "run_test", default=True, show_default=True,
              help="Run bioimageio.core's test_model on the written zip.")
@click.option("--overwrite", is_flag=True, help="Replace an existing zip.")
@handle_errors
def export_bmz_command(model, output, n_samples, seed, test_image, test_size, name, authors,
                       license_id, run_test, overwrite):
    """Export MODEL (a model package folder) to a bioimage.io model zip (spec 0.5)."""
    bmz = load("export.bmz", purpose="`hdn-deploy export-bmz`",
               requires=("onnx", "bioimageio.spec"), extra="bmz")
    bmz_package_from_model, check_bmz_package = bmz.bmz_package_from_model, bmz.check_bmz_package

    path = bmz_package_from_model(model, output, n_samples=n_samples, seed=seed,
                                  test_image=test_image, test_size=test_size, name=name,
                                  authors=authors or ("hdn-deploy",), license_id=license_id,
                                  overwrite=overwrite)
    click.echo(f"wrote bioimage.io model {path}")
    if run_test:
        click.echo(f"bioimageio.core test_model: {check_bmz_package(path)}")
