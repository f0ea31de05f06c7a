"""`hdn-deploy denoise`: many files, resumable, atomic outputs, metadata for provenance.

Every series of every input is attempted; a failure is reported and the rest still runs;
the command exits 2 if anything failed, after a summary.
"""
from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import click
from tqdm.auto import tqdm

from ..errors import ConfigError, DiskSpaceError, HDNError, InputError
from ..options import BackendName, BlendMode, DenoiseMode, OutputDtype, SamplingMode, values
from .aliases import AliasOption
from .main import handle_errors, main

#: Default of ``--out-of-core-above``: TIFF series with more pixels are read and written
#: tile by tile (4096 x 4096; in memory such an image needs ~1.7 GB, measured).
OUT_OF_CORE_PIXELS = 4096 * 4096

_SETTING_KEYS = ("samples", "seed", "tile", "overlap", "sampling", "save_std", "save_samples",
                 "output_dtype", "blend", "axes", "tolerance", "mode")


def _settings(opts: dict[str, Any], model_hash: str) -> dict[str, Any]:
    """What must match for an existing output to count as complete (outputs of an older
    latent contract, whose samples differ, are recomputed)."""
    from ..latents import LATENT_CONTRACT

    held = {"mean_levels": list(opts["mean_levels"])} if opts.get("mean_levels") else {}
    return {"model_sha256": model_hash, "latent_contract": LATENT_CONTRACT,
            **{k: opts[k] for k in _SETTING_KEYS}, **held}


def _level_list(ctx, param, value: str | None) -> tuple[int, ...]:
    """'0,1' -> (0, 1) for --mean-levels."""
    if not value:
        return ()
    try:
        return tuple(int(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"expected comma-separated level indices such as 0,1; got "
                                 f"{value!r}") from None


def _kinds(opts: dict[str, Any]) -> list[str]:
    return ["mmse"] + (["std"] if opts["save_std"] else []) + (["samples"] if opts["save_samples"] else [])


@dataclass
class _Tally:
    written: int = 0
    skipped: int = 0
    failed: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        click.echo(text, err=True)
        self.notes.append(text)

    def fail(self, exc: Exception | str) -> None:
        click.echo(f"Error: {exc}", err=True)
        self.failed.append(str(exc))


@dataclass
class _Run:
    den: Any
    out_dir: Path
    root: Path
    inputs: set[Path]
    settings: dict[str, Any]
    opts: dict[str, Any]
    batch_size: int | None
    overwrite: bool
    quiet: bool
    tally: _Tally
    claimed: dict[Path, Path] = field(default_factory=dict)  # output -> input, this run
    dask_client: Any = None  # distributed.Client of --dask-scheduler / --dask-local
    dask_chunk: int = 4096
    pyramid: int = 0
    backend: str = "auto"
    threads: int | None = None
    out_of_core_above: int = OUT_OF_CORE_PIXELS


def _claim(outputs: dict[str, Path], path: Path, run: _Run) -> None:
    """Refuse outputs another input of this run already uses (``a.tif`` and ``a.tiff``)."""
    from ..errors import OutputError

    for out in outputs.values():
        other = run.claimed.setdefault(out.resolve(), path)
        if other != path:
            raise OutputError(f"output '{out}' of '{path}' is also the output of '{other}' "
                              "(same name but for the extension); rename one of them")


def _series_to_do(path: Path, run: _Run) -> list[tuple[Any, int | None]]:
    """(SeriesInfo, tag for output names or None) for each series of ``path`` to denoise."""
    from ..io import list_series

    infos = list_series(path)
    tagged = len(infos) > 1
    chosen = run.opts["series"]
    if chosen is not None:
        if not 0 <= chosen < len(infos):
            raise InputError(f"'{path}' has {len(infos)} series (0 to {len(infos) - 1}); "
                             f"--series {chosen} does not exist")
        return [(infos[chosen], chosen if tagged else None)]
    for info in infos:
        if info.reduced:
            run.tally.note(f"'{path}' {info.describe()}: not denoised (a thumbnail, not image data)")
    return [(i, i.index if tagged else None) for i in infos if not i.reduced]


def _check_resources(path: Path, info: Any, outputs: dict[str, Path], run: _Run, *,
                     lazy: bool = False) -> None:
    """Refuse before reading: not enough memory to denoise, or disk space to write (out of
    core, ``lazy``: no memory check; the raw row files need as much space again)."""
    import numpy as np

    from ..io import check_disk_space, check_memory, read_bytes_needed, tiff_bytes

    pixels = int(np.prod(info.shape, dtype=np.float64))
    keep = min(run.opts["save_samples"], run.opts["samples"])
    if not lazy:
        check_memory(path, info, read_bytes_needed(info) + 4 * pixels * (3 + keep))
    out_dtype = info.dtype if run.opts["output_dtype"] == "input" else np.float32
    disk = (1 + keep) * tiff_bytes(info.shape, out_dtype)
    disk += tiff_bytes(info.shape, np.float32) if run.opts["save_std"] else 0
    check_disk_space(next(iter(outputs.values())).parent, disk * (2 if lazy else 1))


def _library_options(run: _Run) -> dict[str, Any]:
    """The CLI options as Denoiser.iter_denoise keywords (samples/checkpoints excluded)."""
    from ..denoiser import DEFAULT_BATCH

    opts = run.opts
    return dict(n_samples=opts["samples"], seed=opts["seed"], tile=opts["tile"],
                overlap=opts["overlap"], sampling=opts["sampling"],
                batch_size=run.batch_size or DEFAULT_BATCH, blend=opts["blend"],
                allow_out_of_range=opts["allow_out_of_range"], tolerance=opts["tolerance"],
                mode=opts["mode"], mean_levels=opts["mean_levels"])


def _dask_result(image: Any, run: _Run) -> Any:
    """MMSE and std of an in-memory image computed on the dask cluster (same bytes)."""
    import dask.array as da

    from .. import dask as hdn_dask
    from ..denoiser import DenoiseResult
    from ..io.omezarr import _axis_chunks

    if run.opts["save_samples"]:
        raise InputError(f"'{image.path}': --keep-samples is not available with --dask-*")
    array = image.array if image.array.ndim == 3 else image.array[None]
    tile = run.opts["tile"] or run.den.package.recommended_tile
    chunks = (1, *(_axis_chunks(n, max(run.dask_chunk, tile), tile) for n in array.shape[-2:]))
    res = hdn_dask.denoise(da.from_array(array, chunks=chunks), run.den.package.path,
                           backend=run.backend, threads=run.threads or 1, **_library_options(run))
    mmse, std = run.dask_client.compute([res.mmse, res.std], sync=True)
    squeeze = (lambda a: a[0]) if image.array.ndim == 2 else (lambda a: a)
    return DenoiseResult(mmse=squeeze(mmse), std=squeeze(std), samples=None,
                         metadata=res.metadata)


def _run_denoiser(image: Any, run: _Run, out: Any = None) -> Any:
    from ..range_check import about_file

    if run.dask_client is not None:
        with about_file(image.path, lambda message: click.echo(message, err=True)):
            return _dask_result(image, run)
    opts = run.opts
    bar = tqdm(unit="tile", disable=run.quiet, desc=image.path.name, leave=False)
    result = None
    with about_file(image.path, lambda message: click.echo(message, err=True)):
        for event in run.den.iter_denoise(
            image.array, keep_samples=0 if out is not None else opts["save_samples"], out=out,
            **_library_options(run),
        ):
            bar.total = event.tiles_total
            bar.update(event.tiles_done - bar.n)
            result = event.result
    bar.close()
    return result


def _output_files(image: Any, result: Any, outputs: dict[str, Path], source: dict[str, Any],
                  run: _Run) -> list[Any]:
    """The TIFFs of one series, in the input's axes order, with its physical metadata."""
    from ..io import RowFile, TiffOutput, cast_to_dtype

    # "out_of_core" dropped: the files are the same bytes either way
    run_meta = {k: v for k, v in result.metadata.items() if k != "out_of_core"}
    meta = {**run_meta, "input": str(image.path), "source": source,
            "settings": run.settings, "axes": image.file_axes,
            "input_metadata": image.physical.to_json()}
    as_input = run.opts["output_dtype"] == "input"
    cast = (lambda a: cast_to_dtype(a, image.dtype)) if as_input else (lambda a: a)
    if isinstance(result.mmse, RowFile):  # out of core: cast while written, in file order
        arrays, order = {"mmse": result.mmse, "std": result.std}, (lambda a: a)
    else:
        arrays, order = {"mmse": cast(result.mmse), "std": result.std}, image.to_file_order
    files = [TiffOutput(outputs[k], order(arrays[k]), image.file_axes,
                        {**meta, "kind": k}, image.physical) for k in ("mmse", "std") if k in outputs]
    if "samples" in outputs:
        files.append(TiffOutput(outputs["samples"], image.to_file_order(cast(result.samples), leading=1),
                                "S" + image.file_axes, {**meta, "kind": "samples"}, image.physical))
    return files


def _out_of_core(info: Any, run: _Run) -> bool:
    """Read and write this series tile by tile (big, and no option that needs the image)."""
    import numpy as np

    return (int(np.prod(info.shape, dtype=np.float64)) > run.out_of_core_above
            and not run.opts["save_samples"] and run.dask_client is None)


def _denoise_lazy(image: Any, outputs: dict[str, Path], source: dict[str, Any], run: _Run) -> None:
    """Denoise a lazily opened series into RowFiles, then write the TIFFs from them."""
    import numpy as np

    from ..io import RowFile, cast_to_dtype, write_outputs_atomic
    from ..outofcore import ArrayOutputs

    as_input = run.opts["output_dtype"] == "input" and image.dtype.kind in "iu"
    with contextlib.ExitStack() as stack:
        files = {}
        for kind, target in outputs.items():
            cast = as_input and kind == "mmse"
            files[kind] = stack.enter_context(RowFile(
                target, image.array.shape, image.dtype if cast else np.float32,
                file_shape=image.shape,
                cast=(lambda a: cast_to_dtype(a, image.dtype)) if cast else None))
        try:
            result = _run_denoiser(image, run, out=ArrayOutputs(files["mmse"], files.get("std")))
        except InputError as exc:  # e.g. NaN found band by band: name the file
            if str(image.path) in str(exc):
                raise
            raise InputError(f"'{image.path}': {exc}") from exc
        write_outputs_atomic(_output_files(image, result, outputs, source, run))


def _denoise_series(path: Path, info: Any, tag: int | None, source: dict[str, Any], run: _Run) -> None:
    from ..io import (check_output_conflicts, is_complete, open_image_lazy, plan_outputs, read_image,
                      write_outputs_atomic)

    source = {**source, "series": info.index}
    outputs = plan_outputs(path, run.root, run.out_dir, _kinds(run.opts), tag)
    _claim(outputs, path, run)
    if not run.overwrite and is_complete(outputs, run.settings, source):
        run.tally.skipped += 1
        return
    check_output_conflicts(outputs, run.inputs, path)
    if _out_of_core(info, run):
        with open_image_lazy(path, series=info.index, axes=run.opts["axes"]) as lazy:
            if lazy is not None:
                _check_resources(path, info, outputs, run, lazy=True)
                _denoise_lazy(lazy, outputs, source, run)
                run.tally.written += 1
                return
    _check_resources(path, info, outputs, run)
    image = read_image(path, series=info.index, axes=run.opts["axes"], allow_channels=True)
    result = _run_denoiser(image, run)
    write_outputs_atomic(_output_files(image, result, outputs, source, run))
    run.tally.written += 1


def _zarr_outputs(path: Path, run: _Run) -> dict[str, Path]:
    from ..io.batch import _stem

    rel = path.resolve().parent.relative_to(run.root)
    stem = _stem(path.name.removesuffix(".zarr").removesuffix(".ome"))
    kinds = ["mmse"] + (["std"] if run.opts["save_std"] else [])
    return {k: run.out_dir / rel / f"{stem}_{k}.ome.zarr" for k in kinds}


def _denoise_zarr(path: Path, run: _Run) -> None:
    """One OME-Zarr input -> OME-Zarr outputs, out of core (or on the dask cluster)."""
    from ..errors import OutputError
    from ..io import fingerprint
    from ..io.omezarr import denoise_ome_zarr, read_zarr_metadata
    from ..range_check import about_file

    if run.opts["save_samples"] or run.opts["output_dtype"] != "float32":
        raise InputError(f"'{path}': OME-Zarr inputs give float32 MMSE/std OME-Zarr outputs; "
                         "--keep-samples and --output-dtype input are not available for them")
    meta_file = next((path / n for n in ("zarr.json", ".zattrs") if (path / n).is_file()))
    source = {"path": path.resolve().relative_to(run.root).as_posix(),
              "fingerprint": fingerprint(meta_file)}
    outputs = _zarr_outputs(path, run)
    _claim(outputs, path, run)
    metas = {k: read_zarr_metadata(p) if p.exists() else None for k, p in outputs.items()}
    if not run.overwrite and all(m and m.get("settings") == run.settings and m.get("source") == source
                                 for m in metas.values()):
        run.tally.skipped += 1
        return
    for kind, out in outputs.items():
        if out.exists() and not (metas[kind] or {}).get("software") == "hdn-deploy":
            raise OutputError(f"output '{out}' of '{path}' exists and was not written by "
                              "hdn-deploy; it is left unchanged. Move it away or choose another -o")
    with about_file(path, lambda message: click.echo(message, err=True)):
        denoise_ome_zarr(run.den, path, outputs, pyramid=run.pyramid,
                         metadata={"source": source, "settings": run.settings},
                         dask_client=run.dask_client, chunk=run.dask_chunk, backend=run.backend,
                         threads=run.threads or 1, **_library_options(run))
    run.tally.written += 1


def _one_input(path: Path, run: _Run) -> None:
    from ..io import fingerprint
    from ..io.omezarr import is_ome_zarr

    if is_ome_zarr(path):
        try:
            _denoise_zarr(path, run)
        except DiskSpaceError:
            raise
        except HDNError as exc:
            run.tally.fail(exc)
        return
    rel = path.resolve().relative_to(run.root).as_posix()
    source = {"path": rel, "fingerprint": fingerprint(path)}
    for info, tag in _series_to_do(path, run):
        try:
            _denoise_series(path, info, tag, source, run)
        except DiskSpaceError:
            raise
        except HDNError as exc:
            run.tally.fail(exc)


def _start(out_dir: Path, paths: list[Path], tally: _Tally) -> list[Path]:
    """Remove our stale temporaries below ``out_dir``; drop our own outputs from the inputs."""
    from ..atomic import remove_stale_temps
    from ..io import split_own_outputs

    removed = remove_stale_temps(out_dir, recursive=True)
    if removed:
        click.echo(f"removed {len(removed)} stale temporary file(s) of an interrupted run "
                   f"below '{out_dir}'", err=True)
    inputs, ours = split_own_outputs(paths)
    for path in ours:
        tally.note(f"'{path}': not an input, an output of hdn-deploy (ignored)")
    return inputs


DENOISE_OPTIONS = [
    click.option("-m", "--model", required=True, type=click.Path(), help="Model package folder."),
    click.option("-o", "--output", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
                 help="Output folder (created if missing); the inputs' folder tree is mirrored below it."),
    click.option("--n-samples", "samples", cls=AliasOption, aliases=("--samples",), default=100,
                 show_default=True, help="Posterior samples per image."),
    click.option("--tolerance", default=None, help="Adaptive sampling: stop each tile's "
                    "sampling once the standard error of its MMSE is at most this, in intensity "
                    "units (2.5) or as a fraction of the noise std (0.05sigma); --n-samples is "
                    "then the upper bound. Samples used per tile go in the metadata."),
    click.option("--seed", default=0, show_default=True, help="Seed of all latent noise."),
    click.option("--tile", type=int, help="Tile size (default: the package's recommendation)."),
    click.option("--overlap", type=int, help="Tile overlap in pixels (default: the package's "
                 "recommendation). 0 leaves visible seams at tile borders (warned)."),
    click.option("--sampling", type=click.Choice(values(SamplingMode)), default="antithetic",
                 show_default=True, help="antithetic: (eps, -eps) pairs, each a valid posterior "
                 "sample, the MMSE converges ~6x faster; mc: independent samples; "
                 "mean: one pass with every level at its mean (fast approximation, not a sample)."),
    click.option("--mode", type=click.Choice(values(DenoiseMode)), default="sampler",
                 show_default=True, help="sampler: average posterior samples (MMSE and std); "
                 "direct: one pass of the package's distilled direct denoiser (direct.onnx, "
                 "see `hdn-deploy distill`): MMSE only, no std; one network pass per tile."),
    click.option("--save-std/--no-save-std", default=None,
                 help="Write the per-pixel std (uncertainty) [default: yes with --mode sampler; "
                 "not available with --mode direct]."),
    click.option("--mean-levels", callback=_level_list, default=None, metavar="L,L,...",
                 help="Latent levels (0: finest) held at their posterior mean (eps = 0) in every "
                 "sample; see `hdn-deploy explain` for what each level encodes."),
    click.option("--keep-samples", "save_samples", cls=AliasOption, aliases=("--save-samples",),
                 default=0, show_default=True, help="Also write the first K samples."),
    click.option("--series", type=click.IntRange(min=0), default=None,
                 help="Denoise only this series of each file (default: every series but thumbnails; "
                 "files with several series get _s<N> in their output names)."),
    click.option("--axes", default=None, help="Axes of the inputs when their metadata is missing or "
                 "wrong, one letter per dimension: YX, ZYX, TYX, YXC, CYX, TZYX, STYX ... "
                 "(S: independent images, C: channels, each denoised on its own)."),
    click.option("--backend", type=click.Choice(values(BackendName)), default="auto", show_default=True),
    click.option("--threads", type=int, help="CPU threads for the backend."),
    click.option("--batch-size", default=None, type=int, help="Samples per network call."),
    click.option("--blend", type=click.Choice(values(BlendMode)), default="hann", show_default=True),
    click.option("--output-dtype", type=click.Choice(values(OutputDtype)), default="float32",
                 show_default=True, help="'input' casts MMSE and samples back to the input dtype, clipped."),
    click.option("--allow-out-of-range", is_flag=True,
                 help="Denoise even when more than 10 % of an input's pixels lie outside the "
                 "intensity range the model was trained on (refused by default; above 1 % warns)."),
    click.option("--overwrite", is_flag=True, help="Recompute outputs that are already complete."),
    click.option("--quiet", is_flag=True, help="No progress bars."),
]


def denoise_options(func):
    """The denoise command's model, output and sampling options (shared with ``watch``)."""
    for option in reversed(DENOISE_OPTIONS):
        func = option(func)
    return func


def open_run(model: str, out_dir: Path, root: Path | None, inputs: set[Path],
             opts: dict[str, Any], *, backend: str, threads: int | None, batch_size: int | None,
             overwrite: bool, quiet: bool, tally: _Tally) -> _Run:
    """Load the model and check the options and the output folder, before any image is read
    (``opts["tolerance"]`` is normalised in place). Raises ConfigError, HDNError."""
    from ..adaptive import Tolerance
    from ..denoiser import Denoiser
    from ..io import _writable_folder

    tolerance = Tolerance.parse(opts["tolerance"])
    opts["tolerance"] = None if tolerance is None else tolerance.describe()
    _std_option(opts, tally)
    den = Denoiser(model, backend=backend, threads=threads)
    _writable_folder(out_dir)  # fail before the first image is computed, not after
    return _Run(den=den, out_dir=out_dir, root=root, inputs=inputs,
                settings=_settings(opts, den.package.model_hash), opts=opts,
                batch_size=batch_size, overwrite=overwrite, quiet=quiet, tally=tally)


def _std_option(opts: dict[str, Any], tally: _Tally) -> None:
    """Resolve ``--save-std`` for the mode: refused with ``--mode direct`` (no samples, no
    std), on by default with the sampler."""
    from ..denoiser import NO_STD

    if opts["mode"] == DenoiseMode.DIRECT.value:
        if opts["save_std"]:
            raise ConfigError(f"--save-std: the std is {NO_STD}")
        opts["save_std"] = False
        tally.note(f"--mode direct: writing the MMSE only; the std is {NO_STD}")
    elif opts["save_std"] is None:
        opts["save_std"] = True


def denoise_input(path: Path, run: _Run) -> None:
    """Every series of one input file, as ``denoise`` does it (skip when complete, atomic
    grouped outputs). Failures are counted in ``run.tally``; DiskSpaceError propagates."""
    from ..io import ome_companions_of

    run.inputs.add(path.resolve())
    for other in ome_companions_of(path):
        run.inputs.add(other.resolve())
    _one_input(path, run)


@contextlib.contextmanager
def _dask_client(scheduler: str | None, local: int | None) -> Iterator[Any]:
    """None, a Client of the scheduler at ``scheduler``, or of a LocalCluster of ``local``
    single-threaded worker processes (OMP_NUM_THREADS=1)."""
    if scheduler and local:
        raise ConfigError("give --dask-scheduler or --dask-local, not both")
    if not scheduler and not local:
        yield None
        return
    from .._optional import require

    distributed = require("distributed", purpose="--dask-scheduler / --dask-local")
    if scheduler:
        with distributed.Client(scheduler) as client:
            yield client
        return
    os.environ["OMP_NUM_THREADS"] = "1"  # inherited by the worker processes
    with distributed.LocalCluster(n_workers=local, threads_per_worker=1,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        yield client


@main.command()
@click.argument("inputs", nargs=-1, required=True)
@denoise_options
@click.option("--pyramid", type=click.IntRange(min=0), default=0, show_default=True,
              help="OME-Zarr inputs: downsampled levels (2x2 mean) added to the MMSE output.")
@click.option("--out-of-core-above", type=click.IntRange(min=0), default=OUT_OF_CORE_PIXELS,
              show_default=True, metavar="PIXELS",
              help="TIFF series with more pixels are read tile by tile and their MMSE/std "
              "written row band by row band (memory set by the tile size and image width; "
              "same bytes as in memory). Not with --keep-samples, --dask-* or axes that put "
              "Y, X before another axis (YXC); 0: every TIFF.")
@click.option("--dask-scheduler", default=None, metavar="ADDRESS",
              help="Denoise on this dask.distributed scheduler (tcp://host:8786); workers need "
              "the model folder (and OME-Zarr inputs/outputs) at the same paths. Same bytes.")
@click.option("--dask-local", type=click.IntRange(min=1), default=None, metavar="N",
              help="Denoise on a local dask cluster of N single-threaded worker processes.")
@click.option("--dask-chunk", type=click.IntRange(min=1), default=4096, show_default=True,
              help="With --dask-*: Y/X chunk size in pixels (at least the tile size).")
@handle_errors
def denoise(inputs, model, out_dir, quiet, overwrite, backend, threads, batch_size, pyramid,
            out_of_core_above, dask_scheduler, dask_local, dask_chunk, **opts):
    """Denoise TIFF or OME-Zarr INPUTS (files, folders, globs) with the model package MODEL.

    Writes <name>_mmse.tif (and _std.tif, _samples.tif) below the output folder, mirroring
    the inputs' folders, with the input's axes order and physical metadata. The outputs of
    one input are written together, atomically; a rerun skips inputs whose outputs are
    complete for the same input content and settings. Files hdn-deploy wrote are never
    taken as inputs, and no file that hdn-deploy did not write is overwritten. OME-Zarr
    inputs (.zarr folders) are read and written tile by tile (images bigger than memory)
    as <name>_mmse.ome.zarr and _std.ome.zarr; so are TIFF series above
    --out-of-core-above pixels, into the same TIFFs as in memory. Exits 2 if any input, series or plane could
    not be denoised (after doing the rest).
    """
    with _dask_client(dask_scheduler, dask_local) as client:
        _denoise(inputs, model, out_dir, quiet, overwrite, backend, threads, batch_size, opts,
                 extra=dict(dask_client=client, dask_chunk=dask_chunk, pyramid=pyramid,
                            backend=backend, threads=threads, out_of_core_above=out_of_core_above))


def _denoise(inputs, model, out_dir, quiet, overwrite, backend, threads, batch_size, opts, *,
             extra: dict[str, Any]) -> None:
    from ..io import common_root, expand_inputs, ome_companions_of

    tally = _Tally()
    paths = expand_inputs(inputs)
    run = open_run(model, out_dir, None, set(), opts, backend=backend, threads=threads,
                   batch_size=batch_size, overwrite=overwrite, quiet=quiet, tally=tally)
    for key, value in extra.items():
        setattr(run, key, value)
    paths = _start(out_dir, paths, tally)
    if not paths:
        raise InputError("every file given is an output of hdn-deploy; nothing to denoise")
    run.root, run.inputs = common_root(paths), {p.resolve() for p in paths}
    covered: dict[Path, Path] = {}
    bar = tqdm(paths, unit="file", disable=quiet or len(paths) < 2, desc="files")
    for done, path in enumerate(bar):
        if path.resolve() in covered:
            tally.note(f"'{path}': read as part of the multi-file OME-TIFF of "
                       f"'{covered[path.resolve()]}'")
            continue
        try:
            for other in ome_companions_of(path):
                covered.setdefault(other.resolve(), path)
            _one_input(path, run)
        except DiskSpaceError as exc:
            tally.fail(exc)
            for rest in paths[done + 1:]:
                tally.fail(f"'{rest}': not attempted (the output folder is full)")
            break
        except HDNError as exc:
            tally.fail(exc)
    bar.close()
    _summary(tally, out_dir)


def _summary(tally: _Tally, out_dir: Path) -> None:
    click.echo(f"denoised {tally.written} file(s), skipped {tally.skipped} already complete; "
               f"outputs in {out_dir}")
    if tally.failed:
        click.echo(f"{len(tally.failed)} input(s) or series FAILED (see the errors above); "
                   "nothing was written for them. Fix them and rerun: completed outputs are "
                   "skipped", err=True)
        sys.exit(2)
