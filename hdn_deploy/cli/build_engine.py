"""`hdn-deploy build-engine`: TensorRT engines of a model package, into the engine cache."""
from __future__ import annotations

from pathlib import Path

import click

from .._optional import require
from ..errors import ConfigError
from ..options import Compatibility, EnginePrecision, values
from .main import handle_errors, main


def _triple(name: str, text: str) -> tuple[int, int, int]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3:
        raise ConfigError(f"--{name} must be three comma-separated integers MIN,OPT,MAX "
                          f"(e.g. 1,8,32); got {text!r}")
    return values  # type: ignore[return-value]


@main.command("build-engine")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--precision", type=click.Choice(values(EnginePrecision)), default="fp16",
              show_default=True, help="Engine precision (bf16: TensorRT 10 only).")
@click.option("--samples", default="1,8,32", show_default=True,
              help="MIN,OPT,MAX samples per decoder call.")
@click.option("--tile", default="64,256,512", show_default=True,
              help="MIN,OPT,MAX tile side (multiples of the model's spatial multiple).")
@click.option("--contexts", type=int, default=1, show_default=True,
              help="Concurrent execution contexts (one optimisation profile each).")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Engine cache folder [default: $HDN_DEPLOY_TRT_CACHE or "
                   "~/.cache/hdn-deploy/tensorrt].")
@click.option("--compatibility", type=click.Choice(values(Compatibility)),
              default="none", show_default=True,
              help="hardware: runs on Ampere and newer GPUs; version: on later TensorRT too.")
@click.option("--workspace-gib", type=float, help="Builder workspace limit in GiB.")
@handle_errors
def build_engine_command(model, precision, samples, tile, contexts, cache_dir, compatibility,
                         workspace_gib):
    """Build (or find cached) TensorRT engines of MODEL for this GPU.

    `hdn-deploy denoise --backend tensorrt` then loads them from the same cache.
    """
    profile_args = dict(samples=_triple("samples", samples), tile=_triple("tile", tile),
                        contexts=contexts)
    trt = require("tensorrt", purpose="`hdn-deploy build-engine`", extra="tensorrt")
    from ..backends.tensorrt import engine_builder
    from ..backends.trt_cache import EngineProfile

    workspace = int(workspace_gib * (1 << 30)) if workspace_gib else None
    engines = engine_builder().engines_for_package(
        model, cache_dir=cache_dir, precision=precision, profile=EngineProfile(**profile_args),
        compatibility=compatibility, workspace_bytes=workspace, trt=trt,
        log=lambda message: click.echo(message, err=True))
    for graph, path in engines.items():
        click.echo(f"{graph}: {path}")
