"""`hdn-deploy explain`: what each latent level of a model encodes, on one image."""
from __future__ import annotations

from pathlib import Path

import click

from ..options import BackendName, BlendMode, values
from .aliases import AliasOption
from .main import handle_errors, main


@main.command()
@click.argument("image", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-m", "--model", required=True, type=click.Path(), help="Model package folder.")
@click.option("-o", "--output", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("explained"), show_default=True, help="Output folder.")
@click.option("--n-samples", cls=AliasOption, aliases=("--samples",), default=8,
              type=click.IntRange(min=1), show_default=True,
              help="Samples of each view (the std of each level and each MMSE).")
@click.option("--seed", default=0, show_default=True, help="Seed of all latent noise.")
@click.option("--tile", type=int, help="Tile size (default: the package's recommendation).")
@click.option("--overlap", type=int, help="Tile overlap in pixels (default: the package's).")
@click.option("--margin", type=int, help="Context pixels padded on every side (default: half "
              "the package's overlap).")
@click.option("--blend", type=click.Choice(values(BlendMode)), default="hann", show_default=True)
@click.option("--batch-size", default=1, show_default=True, type=click.IntRange(min=1),
              help="Samples per network call.")
@click.option("--allow-out-of-range", is_flag=True,
              help="Run even when more than 10 % of the pixels lie outside the model's range.")
@click.option("--plane", type=click.IntRange(min=0), default=None,
              help="For a stack: the plane to explain (C order over the non-YX axes).")
@click.option("--axes", default=None, help="Axes of IMAGE when its metadata is missing or wrong.")
@click.option("--backend", type=click.Choice(values(BackendName)), default="auto", show_default=True)
@click.option("--threads", type=int, help="CPU threads for the backend.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@handle_errors
def explain(image, model, out_dir, plane, axes, backend, threads, quiet, **options):
    """What each latent level of MODEL encodes, shown on IMAGE.

    Writes <name>_explain.tif (float32 ImageJ stack, labelled planes: the input; the MMSE
    with no level, level 0, levels 0-1 ... at their mean; the std each level adds alone,
    every other level at its mean) and <name>_explain.png (the same as a labelled
    montage). A line artefact that vanishes once level l is at its mean, and the level
    whose std shows the artefact's pattern, tell which levels to make unconditional
    (`hdn-deploy train --structured`).
    """
    from tqdm.auto import tqdm

    from ..denoiser import Denoiser
    from ..errors import InputError
    from ..explain import write_explanation
    from ..io import read_image

    data = read_image(image, axes=axes, allow_channels=True)
    array = data.array
    if array.ndim == 3:
        if plane is None or plane >= len(array):
            raise InputError(f"'{image}' has {len(array)} planes (axes {data.axes}); choose one "
                             f"with --plane 0..{len(array) - 1}")
        array = array[plane]
    den = Denoiser(model, backend=backend, threads=threads)
    bar = tqdm(unit="run", disable=quiet, desc=image.name, leave=False)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    result = den.explain(array, on_progress=progress, **options)
    bar.close()
    result.metadata.update(input=str(image), plane=plane)
    tif, png = write_explanation(result, out_dir, image.stem)
    spread = ", ".join(f"level {k}: {v:.3g}" for k, v in
                       result.metadata["explain"]["level_spread"].items())
    click.echo(f"mean std each level adds alone ({data.path.name}, intensity units): {spread}")
    click.echo(f"wrote {tif} and {png}")
