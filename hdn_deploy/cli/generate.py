"""`hdn-deploy generate`: images drawn from a trained model's prior (needs the [train] extra)."""
from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from .main import handle_errors, main


@main.command()
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--size", nargs=2, type=click.IntRange(min=1), default=(256, 256), show_default=True,
              metavar="H W", help="Image size in pixels.")
@click.option("-n", "--n-images", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--temperature", type=float, default=1.0, show_default=True,
              help="Scale of the latent noise (below 1: smoother, more typical images).")
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path),
              default=Path("generated"), show_default=True, help="Output folder.")
@handle_errors
def generate(checkpoint, size, n_images, seed, temperature, output):
    """Draw images from the prior of CHECKPOINT; writes generated.tif (N, H, W float32) and
    generated.png (a montage)."""
    from ..demo import write_montage
    from ..io import write_tiff_atomic
    from .heavy import load

    draw = load("training.generate", purpose="`hdn-deploy generate`").generate

    images = draw(checkpoint, size[0], size[1], n_images, seed=seed, temperature=temperature)
    meta = {"generated_from": str(checkpoint), "seed": seed, "temperature": temperature}
    tif = write_tiff_atomic(output / "generated.tif", images, metadata=meta, axes="SYX")
    low, high = np.percentile(images, [0.5, 99.5])
    png = write_montage(output / "generated.png",
                        [(f"prior sample {i}", im) for i, im in enumerate(images)],
                        display_range=(float(low), float(high)))
    click.echo(f"wrote {tif} and {png}")
