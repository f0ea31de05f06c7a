"""`hdn-deploy bench`: runtime speed and memory of a model package, optionally vs PyTorch."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from ..atomic import atomic_write_text
from ..options import GraphOptimization, SamplingMode, values
from .aliases import AliasOption
from .heavy import load
from .main import handle_errors, main


def load_reference_module():
    """``hdn_deploy.training.reference`` (the PyTorch reference algorithm; needs torch)."""
    return load("training.reference",
                purpose="the PyTorch reference of `hdn-deploy bench --checkpoint`")


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}g}"


def _spread(stats: dict[str, Any]) -> str:
    return f"{_fmt(stats['median'])} [{_fmt(stats['min'])}, {_fmt(stats['max'])}]"


def markdown_table(report: dict[str, Any]) -> str:
    """Markdown summary of a ``bench`` report (median [min, max] over repeats)."""
    rt = report["runtime"]
    rows = [
        ("cold start (load + session + first call), s", _fmt(rt["cold_start_s"]["total"])),
        ("tile latency p50 / p90 / p99, s", " / ".join(
            _fmt(rt["tile_latency_s"][k]) for k in ("p50", "p90", "p99"))),
        ("seconds per sample", _spread(rt["seconds_per_sample"])),
        ("megapixels / s", _spread(rt["megapixels_per_s"])),
        ("sample-megapixels / s", _spread(rt["sample_megapixels_per_s"])),
        ("latent generation share", _spread(rt["latent_share"])),
        ("peak RSS, MB", _fmt(rt["peak_rss_mb"], 4)),
    ]
    for name, ref in report.get("reference", {}).items():
        rows.append((f"reference ({name}) seconds per sample", _spread(ref["seconds_per_sample"])))
        rows.append((f"speed-up vs reference ({name})", f"{report['ratios'][name]:.2f}x"))
    s = rt["settings"]
    head = (f"hdn-deploy bench: {s['image_shape'][0]}x{s['image_shape'][1]}, "
            f"{s['n_samples']} samples, batch {s['batch_size']}, threads {s['threads']}, "
            f"tile {s['tile']}/{s['overlap']}, {s['sampling']}, {s['repeats']} repeats")
    lines = [head, "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    return "\n".join(lines)


@main.command()
@click.argument("model", type=click.Path())
@click.option("--checkpoint", type=click.Path(dir_okay=False),
              help="Training checkpoint of MODEL: also time the PyTorch reference (needs torch).")
@click.option("--size", default=256, show_default=True, help="Side of the square test image.")
@click.option("--n-samples", "samples", cls=AliasOption, aliases=("--samples",), default=20,
              show_default=True, help="Samples per call.")
@click.option("--repeats", default=3, show_default=True, help="Timed calls (after a warm-up).")
@click.option("--batch-size", default=4, show_default=True, help="Samples per decoder call.")
@click.option("--threads", type=int, help="CPU threads (runtime and reference).")
@click.option("--tile", type=int, help="Tile size (default: the package's recommendation).")
@click.option("--overlap", type=int, help="Tile overlap (default: the package's recommendation).")
@click.option("--sampling", type=click.Choice(values(SamplingMode)), default="mc",
              show_default=True)
@click.option("--graph-optimization", type=click.Choice(values(GraphOptimization)),
              default="all", show_default=True, help="onnxruntime graph optimisation level.")
@click.option("--ref-samples", default=2, show_default=True,
              help="Reference samples per repeat (with --checkpoint).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the full report as JSON.")
@handle_errors
def bench(model, checkpoint, size, samples, repeats, batch_size, threads, tile, overlap,
          sampling, graph_optimization, ref_samples, output):
    """Benchmark the model package MODEL on a synthetic SIZE x SIZE image.

    Reports cold start, per-tile latency percentiles, throughput, peak RSS and the share of
    time spent drawing latents; with --checkpoint also the reference algorithm (PyTorch, a
    full pass per sample, batch 1, no tiling, with and without gradients) and the speed-ups.
    """
    from ..benchmark import bench_runtime, machine_info

    report: dict[str, Any] = {"machine": machine_info()}
    report["runtime"] = bench_runtime(
        model, size=size, n_samples=samples, batch_size=batch_size, threads=threads,
        repeats=repeats, tile=tile, overlap=overlap, sampling=sampling,
        graph_optimization=graph_optimization)
    if checkpoint:
        reference = load_reference_module()
        ours = report["runtime"]["seconds_per_sample"]["median"]
        report["reference"], report["ratios"] = {}, {}
        for name, grad in (("grad", True), ("no_grad", False)):
            ref = reference.reference_seconds_per_sample(
                checkpoint, size, repeats, grad=grad, n_samples=ref_samples, threads=threads)
            report["reference"][name] = ref
            report["ratios"][name] = ref["seconds_per_sample"]["median"] / ours
        report["same_weights"] = (report["reference"]["grad"]["weights_sha256"]
                                  == report["runtime"]["model"]["weights_sha256"])
    end = machine_info()
    report["machine"]["versions"].update(end["versions"])  # modules imported meanwhile
    report["load_average_end"] = end["load_average"]
    click.echo(markdown_table(report))
    if checkpoint and not report["same_weights"]:
        click.echo("warning: the checkpoint is not the one MODEL was exported from", err=True)
    if output:
        output.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(output, json.dumps(report, indent=2))
        click.echo(f"wrote {output}")
