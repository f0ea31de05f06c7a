"""`hdn-deploy demo`: the bundled model on the bundled sample, with PSNRs and timing."""
from __future__ import annotations

from pathlib import Path

import click

from .aliases import AliasOption
from .main import handle_errors, main


@main.command()
@click.option("-o", "--output", default="demo_output", show_default=True,
              type=click.Path(file_okay=False, path_type=Path))
@click.option("--n-samples", "samples", cls=AliasOption, aliases=("--samples",), default=100,
              show_default=True, help="Posterior samples.")
@click.option("--seed", default=0, show_default=True)
@click.option("--threads", type=int, help="CPU threads (default: all cores).")
@handle_errors
def demo(output, samples, seed, threads):
    """Denoise the bundled noisy sample with the bundled default model."""
    from ..demo import run_demo

    report = run_demo(output, n_samples=samples, seed=seed, threads=threads)
    click.echo(f"samples: {report.n_samples}   time: {report.seconds:.1f} s")
    click.echo(f"PSNR noisy input : {report.psnr_noisy:6.2f} dB")
    click.echo(f"PSNR one sample  : {report.psnr_sample:6.2f} dB")
    click.echo(f"PSNR MMSE        : {report.psnr_mmse:6.2f} dB")
    for name, path in report.outputs.items():
        click.echo(f"{name:>8}: {path}")
