"""`hdn-deploy denoise`: many files, resumable, atomic outputs, metadata for provenance."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from tqdm.auto import tqdm

from ..options import BackendName, BlendMode, OutputDtype, SamplingMode, values
from .aliases import AliasOption
from .main import handle_errors, main


def _settings(opts: dict[str, Any], model_hash: str) -> dict[str, Any]:
    """What must match for an existing output to count as complete."""
    keys = ("samples", "seed", "tile", "overlap", "sampling", "save_std", "save_samples",
            "output_dtype", "blend")
    return {"model_sha256": model_hash, **{k: opts[k] for k in keys}}


def _outputs(path: Path, out_dir: Path, opts: dict[str, Any]) -> dict[str, Path]:
    from ..io import output_path

    outputs = {"mmse": output_path(path, out_dir, "mmse")}
    if opts["save_std"]:
        outputs["std"] = output_path(path, out_dir, "std")
    if opts["save_samples"]:
        outputs["samples"] = output_path(path, out_dir, "samples")
    return outputs


def _complete(outputs: dict[str, Path], settings: dict[str, Any]) -> bool:
    from ..io import read_hdn_metadata

    for path in outputs.values():
        meta = read_hdn_metadata(path) if path.is_file() else None
        if not meta or meta.get("settings") != settings:
            return False
    return True


@main.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("-m", "--model", required=True, type=click.Path(), help="Model package folder.")
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output folder (created if missing).")
@click.option("--n-samples", "samples", cls=AliasOption, aliases=("--samples",), default=100,
              show_default=True, help="Posterior samples per image.")
@click.option("--seed", default=0, show_default=True, help="Seed of all latent noise.")
@click.option("--tile", type=int, help="Tile size (default: the package's recommendation).")
@click.option("--overlap", type=int, help="Tile overlap in pixels (default: the package's "
              "recommendation). 0 leaves visible seams at tile borders (warned).")
@click.option("--sampling", type=click.Choice(values(SamplingMode)), default="antithetic",
              show_default=True, help="antithetic: (eps, -eps) pairs, each a valid posterior "
              "sample, the MMSE converges ~6x faster; mc: independent samples; "
              "mean: one pass with every level at its mean (fast approximation, not a sample).")
@click.option("--save-std/--no-save-std", default=True, show_default=True,
              help="Write the per-pixel std (uncertainty).")
@click.option("--keep-samples", "save_samples", cls=AliasOption, aliases=("--save-samples",),
              default=0, show_default=True, help="Also write the first K samples.")
@click.option("--backend", type=click.Choice(values(BackendName)), default="auto", show_default=True)
@click.option("--threads", type=int, help="CPU threads for the backend.")
@click.option("--batch-size", default=None, type=int, help="Samples per network call.")
@click.option("--blend", type=click.Choice(values(BlendMode)), default="hann", show_default=True)
@click.option("--output-dtype", type=click.Choice(values(OutputDtype)), default="float32",
              show_default=True, help="'input' casts MMSE and samples back to the input dtype, clipped.")
@click.option("--allow-out-of-range", is_flag=True,
              help="Denoise even when more than 10 % of an input's pixels lie outside the "
              "intensity range the model was trained on (refused by default; above 1 % warns).")
@click.option("--overwrite", is_flag=True, help="Recompute outputs that are already complete.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@handle_errors
def denoise(inputs, model, out_dir, quiet, overwrite, backend, threads, batch_size, **opts):
    """Denoise TIFF INPUTS (files, folders, globs) with the model package MODEL.

    Writes <name>_mmse.tif (and _std.tif, _samples.tif) into the output folder. Outputs are
    written atomically; a rerun skips files whose outputs are complete with the same settings.
    """
    from ..denoiser import DEFAULT_BATCH, Denoiser
    from ..io import _writable_folder, cast_to_dtype, expand_inputs, read_image, write_tiff_atomic
    from ..range_check import about_file

    paths = expand_inputs(inputs)
    den = Denoiser(model, backend=backend, threads=threads)
    _writable_folder(out_dir)  # fail before the first image is computed, not after
    settings = _settings(opts, den.package.model_hash)
    skipped = written = 0
    files_bar = tqdm(paths, unit="file", disable=quiet or len(paths) < 2, desc="files")
    for path in files_bar:
        outputs = _outputs(path, out_dir, opts)
        if not overwrite and _complete(outputs, settings):
            skipped += 1
            continue
        image = read_image(path)
        tiles_bar = tqdm(unit="tile", disable=quiet, desc=path.name, leave=False)
        result = None
        with about_file(path, lambda message: click.echo(message, err=True)):
            for event in den.iter_denoise(
                image.array, n_samples=opts["samples"], seed=opts["seed"], tile=opts["tile"],
                overlap=opts["overlap"], sampling=opts["sampling"], keep_samples=opts["save_samples"],
                batch_size=batch_size or DEFAULT_BATCH, blend=opts["blend"],
                allow_out_of_range=opts["allow_out_of_range"],
            ):
                tiles_bar.total = event.tiles_total
                tiles_bar.update(event.tiles_done - tiles_bar.n)
                result = event.result
        tiles_bar.close()
        meta = {**result.metadata, "input": str(path), "settings": settings}
        cast = (lambda a: cast_to_dtype(a, image.dtype)) if opts["output_dtype"] == "input" else (lambda a: a)
        # mmse last: its presence with matching settings marks the file as done.
        if "samples" in outputs:
            # samples first: (k, Y, X) -> 'SYX'; for stacks (k, n, Y, X) -> hyperstack 'TZYX'
            write_tiff_atomic(outputs["samples"], cast(result.samples),
                              metadata={**meta, "kind": "samples"},
                              axes="SYX" if image.axes == "YX" else "TZYX")
        if "std" in outputs:
            write_tiff_atomic(outputs["std"], result.std, metadata={**meta, "kind": "std"}, axes=image.axes)
        write_tiff_atomic(outputs["mmse"], cast(result.mmse), metadata={**meta, "kind": "mmse"},
                          axes=image.axes)
        written += 1
    click.echo(f"denoised {written} file(s), skipped {skipped} already complete; outputs in {out_dir}")
