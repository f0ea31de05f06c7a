"""Big images and clusters (issue 14): peak memory vs image size, out of core vs in memory,
and dask throughput with 1 and 2 workers.

Memory: each run is its own process (``python benchmarks/big_images.py one ...``) whose
peak RSS is ``resource.getrusage(RUSAGE_SELF).ru_maxrss``, with the RSS after imports and
model loading reported beside it. The input is a tiled (512 x 512), uncompressed uint16
TIFF read through tifffile's zarr store; out-of-core outputs go to OME-Zarr (MMSE and std),
in-memory outputs are the arrays ``Denoiser.denoise`` returns. At one size both paths run
and their outputs are compared byte for byte.

Model: a network pass over 16,384 x 16,384 pixels with the bundled model takes well over
25 minutes on these shared 2-core machines, so the size sweep uses the tiny test model of
``tests/conftest.py`` (3 latent levels, 8 filters; built here, trained for 60 steps), with
``sampling="mean"`` (one pass) and 512-pixel tiles; memory does not depend on the network
beyond its per-tile activations. The bundled model is measured at 1024 x 1024 (same
options). Dask: LocalCluster, ``threads_per_worker=1``, ``OMP_NUM_THREADS=1``, tiny model,
antithetic sampling; throughput = pixels / wall time of ``dask.compute(mmse, std)``.

    OMP_NUM_THREADS=1 python benchmarks/big_images.py all \
        --out benchmarks/results/big_images

Writes ``big_images.json`` and ``big_images.md`` in ``--out``.

``cli``: peak RSS of ``hdn-deploy denoise`` on a tiled uint16 TIFF (in process, one
process per run), out of core (``--out-of-core-above 0``) and in memory (the threshold
above the image), tiny model, ``--sampling mean --tile 512``; the MMSE/std TIFFs of the
two runs are compared byte for byte. Writes ``cli_tiff.json`` and ``cli_tiff.md``:

    OMP_NUM_THREADS=1 python benchmarks/big_images.py cli --cli-size 4096 \
        --out benchmarks/results/big_images
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_NUM_THREADS", "1")

TILE = 512


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _current_rss_mib() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def tiny_package(folder: Path) -> Path:
    """The tiny model of tests/conftest.py (needs the train and export extras)."""
    pkg = folder / "pkg"
    if (pkg / "manifest.json").is_file():
        return pkg
    import tifffile

    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import SIGMA, TINY_ARCH, noisy, synthetic_clean
    from hdn_deploy.export import package_from_checkpoint
    from hdn_deploy.training.config import ModelConfig, TrainConfig
    from hdn_deploy.training.noise_models import GaussianNoiseModel
    from hdn_deploy.training.trainer import train

    folder.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(folder / "noisy.tif", noisy(synthetic_clean()))
    train([folder / "noisy.tif"], folder / "run", model_config=ModelConfig(**TINY_ARCH),
          train_config=TrainConfig(batch_size=8, max_steps=60, steps_per_epoch=20,
                                   val_patches=16, seed=0),
          noise_model=GaussianNoiseModel(SIGMA), progress=False)
    return package_from_checkpoint(folder / "run" / "best.safetensors", pkg, tile_size=64,
                                   overlap=16)


def write_input(path: Path, size: int) -> Path:
    """A size x size uint16 tiled TIFF of smooth structure plus noise, written tile by
    tile (never held whole)."""
    import tifffile

    if path.is_file():
        return path

    def tiles():
        for y0 in range(0, size, TILE):
            for x0 in range(0, size, TILE):
                rng = np.random.default_rng([y0, x0])
                y, x = np.mgrid[y0:y0 + TILE, x0:x0 + TILE].astype(np.float32)
                clean = 100 + 60 * np.sin(x / 23.0) * np.cos(y / 17.0)
                yield (clean + rng.normal(0, 20, clean.shape)).clip(0, 65535).astype(np.uint16)

    tifffile.imwrite(path, tiles(), shape=(size, size), dtype=np.uint16, tile=(TILE, TILE),
                     bigtiff=True)
    return path


def one(args: argparse.Namespace) -> dict[str, Any]:
    """One measured run in this process: prints a JSON line."""
    import tifffile
    import zarr

    from hdn_deploy import ArrayOutputs, Denoiser
    from hdn_deploy.io.omezarr import create_ome_zarr, finish_ome_zarr

    if args.mode == "ooc":
        import ome_zarr.writer  # noqa: F401  (its import, ~9 s here, is not part of the timing)
    den = Denoiser(args.package, backend="cpu", threads=1)
    options = dict(sampling=args.sampling, n_samples=args.samples, tile=args.tile, seed=0)
    source = zarr.open(tifffile.imread(args.input, aszarr=True), mode="r")
    before = _current_rss_mib()
    start = time.perf_counter()
    if args.mode == "ooc":
        out = Path(args.output)
        arrays = {k: create_ome_zarr(out / f"{k}.ome.zarr", source.shape, tile=args.tile)
                  for k in ("mmse", "std")}
        den.denoise(source, out=ArrayOutputs(arrays["mmse"], arrays["std"]), **options)
        seconds = time.perf_counter() - start
        for k in arrays:
            finish_ome_zarr(out / f"{k}.ome.zarr", axes="YX", scale=(1.0, 1.0), units={})
    else:
        image = source[:]
        result = den.denoise(image, **options)
        seconds = time.perf_counter() - start
        if args.save:
            np.save(Path(args.output) / "mmse.npy", result.mmse)
            np.save(Path(args.output) / "std.npy", result.std)
    # seconds: reading, denoising and writing level 0 (not the NGFF metadata, not np.save)
    return {"mode": args.mode, "size": source.shape[0], "seconds": round(seconds, 2),
            "peak_rss_mib": round(_rss_mib(), 1), "rss_before_mib": round(before, 1)}


def one_cli(args: argparse.Namespace) -> dict[str, Any]:
    """One CLI run in this process (``--mode ooc`` or ``mem``): prints a JSON line."""
    from hdn_deploy.cli.main import main as cli

    above = "0" if args.mode == "ooc" else str(2**62)
    argv = ["denoise", args.input, "-m", args.package, "-o", args.output, "--sampling",
            args.sampling, "--n-samples", str(args.samples), "--tile", str(args.tile),
            "--backend", "cpu", "--threads", "1", "--quiet", "--out-of-core-above", above]
    before = _current_rss_mib()
    start = time.perf_counter()
    cli.main(argv, standalone_mode=False)
    return {"mode": args.mode, "seconds": round(time.perf_counter() - start, 2),
            "peak_rss_mib": round(_rss_mib(), 1), "rss_before_mib": round(before, 1)}


def cli_runs(args: argparse.Namespace, work: Path, tiny: Path) -> dict[str, Any]:
    size = args.cli_size
    path = write_input(work / f"in_{size}.tif", size)
    rows = []
    for mode in ("ooc", "mem"):
        out = work / f"cli_{mode}_{size}"
        cmd = [sys.executable, __file__, "one-cli", "--package", str(tiny), "--input",
               str(path), "--mode", mode, "--output", str(out), "--sampling", args.sampling,
               "--samples", str(args.samples), "--tile", str(args.tile)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
        rows.append({**json.loads(done.stdout.strip().splitlines()[-1]), "size": size})
        print(rows[-1], flush=True)
    same = all((work / f"cli_ooc_{size}" / f"in_{size}_{k}.tif").read_bytes()
               == (work / f"cli_mem_{size}" / f"in_{size}_{k}.tif").read_bytes()
               for k in ("mmse", "std"))
    return {"runs": rows, "files_equal": same,
            "options": f"--sampling {args.sampling} --n-samples {args.samples} --tile {args.tile}"}


def cli_markdown(results: dict[str, Any]) -> str:
    lines = ["# hdn-deploy denoise on a big TIFF: out of core vs in memory", "",
             f"Machine: {results['machine']} (shared with other jobs: times are indicative). "
             f"Command: `{results['command']}`. One run per row; tiny test model, "
             f"{results['cli']['options']}, input a tiled uint16 TIFF, outputs float32 "
             "MMSE and std TIFFs.", "",
             "| image | path | peak RSS (MiB) | RSS after imports (MiB) | time (s) |",
             "|---|---|---|---|---|"]
    for row in results["cli"]["runs"]:
        path = ("out of core (--out-of-core-above 0)" if row["mode"] == "ooc"
                else "in memory")
        lines.append(f"| {row['size']} x {row['size']} uint16 | {path} | {row['peak_rss_mib']} "
                     f"| {row['rss_before_mib']} | {row['seconds']} |")
    lines += ["", f"MMSE and std TIFFs of the two runs equal byte for byte: "
              f"{results['cli']['files_equal']}."]
    return "\n".join(lines) + "\n"


def _child(package: Path, input_path: Path, mode: str, output: Path, *, save: bool,
           sampling: str = "mean", samples: int = 1, tile: int = TILE) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "one", "--package", str(package), "--input",
           str(input_path), "--mode", mode, "--sampling", sampling, "--samples", str(samples),
           "--tile", str(tile), "--output", str(output)] + (["--save"] if save else [])
    done = subprocess.run(cmd, capture_output=True, text=True, check=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    return json.loads(done.stdout.strip().splitlines()[-1])


def memory(args: argparse.Namespace, work: Path, tiny: Path) -> dict[str, Any]:
    import zarr

    rows = []
    for size in args.sizes:
        path = write_input(work / f"in_{size}.tif", size)
        for mode in ("ooc", "mem") if size <= args.max_in_memory else ("ooc",):
            out = work / f"out_{mode}_{size}"
            out.mkdir(exist_ok=True)
            row = _child(tiny, path, mode, out, save=size == args.compare_size)
            row["model"] = "tiny test model (tests/conftest.py)"
            rows.append(row)
            print(row, flush=True)
    same = None
    if args.compare_size in args.sizes:
        folder_ooc, folder_mem = work / f"out_ooc_{args.compare_size}", work / f"out_mem_{args.compare_size}"
        same = all(
            np.load(folder_mem / f"{k}.npy").tobytes()
            == zarr.open_group(folder_ooc / f"{k}.ome.zarr", mode="r")["0"][:].tobytes()
            for k in ("mmse", "std"))
    bundled = []
    if args.bundled_size:
        from hdn_deploy.demo import DEFAULT_MODEL, bundled_path

        path = write_input(work / f"in_{args.bundled_size}.tif", args.bundled_size)
        for mode in ("ooc", "mem"):
            out = work / f"out_bundled_{mode}"
            out.mkdir(exist_ok=True)
            row = _child(bundled_path(DEFAULT_MODEL), path, mode, out, save=False)
            row["model"] = "bundled default model"
            bundled.append(row)
            print(row, flush=True)
    return {"runs": rows, "bundled": bundled, "compare_size": args.compare_size,
            "out_of_core_bytes_equal_in_memory": same}


def scaling(args: argparse.Namespace, tiny: Path) -> dict[str, Any]:
    import dask.array as da
    import distributed

    from hdn_deploy import Denoiser
    from hdn_deploy import dask as hdn_dask

    size, chunk = args.dask_size, args.dask_chunk
    image = np.random.default_rng(0).normal(100, 20, (size, size)).astype(np.float32)
    options = dict(n_samples=args.dask_samples, seed=0, tile=256)
    start = time.perf_counter()
    ref = Denoiser(tiny, backend="cpu", threads=1).denoise(image, **options)
    rows = [{"workers": "single process (Denoiser.denoise)",
             "seconds": round(time.perf_counter() - start, 2)}]
    for workers in args.workers:
        with distributed.LocalCluster(n_workers=workers, threads_per_worker=1,
                                      dashboard_address=None) as cluster, \
                distributed.Client(cluster) as client:
            client.run(lambda: hdn_dask.worker_denoiser(str(tiny), "cpu", 1) and None)  # load once
            res = hdn_dask.denoise(da.from_array(image, chunks=chunk), tiny, backend="cpu",
                                   **options)
            start = time.perf_counter()
            mmse, std = client.compute([res.mmse, res.std], sync=True)
            seconds = time.perf_counter() - start
        rows.append({"workers": workers, "seconds": round(seconds, 2),
                     "mpix_per_s": round(size * size / seconds / 1e6, 4),
                     "tiles_in_plan": res.metadata["tiles_in_plan"],
                     "tiles_run": res.metadata["tiles_run"],
                     "bytes_equal_single_process": bool(
                         mmse.tobytes() == ref.mmse.tobytes() and std.tobytes() == ref.std.tobytes())})
        print(rows[-1], flush=True)
    return {"size": size, "chunk": chunk, "options": options, "runs": rows}


def markdown(results: dict[str, Any]) -> str:
    mem = results["memory"]
    lines = ["# Big images and clusters", "",
             f"Machine: {results['machine']} (shared with other jobs: times are indicative). "
             f"Command: `{results['command']}`. One run per row.", "",
             "## Peak RSS vs image size", "",
             "| image | model | path | peak RSS (MiB) | RSS after loading (MiB) | time (s) |",
             "|---|---|---|---|---|---|"]
    for row in mem["runs"] + mem["bundled"]:
        path = "out of core (TIFF zarr store -> OME-Zarr)" if row["mode"] == "ooc" else "in memory"
        lines.append(f"| {row['size']} x {row['size']} uint16 | {row['model']} | {path} | "
                     f"{row['peak_rss_mib']} | {row['rss_before_mib']} | {row['seconds']} |")
    lines += ["", f"Out-of-core MMSE and std equal the in-memory arrays byte for byte at "
              f"{mem['compare_size']} x {mem['compare_size']}: "
              f"{mem['out_of_core_bytes_equal_in_memory']}.", ""]
    sc = results["scaling"]
    lines += [f"## Dask LocalCluster: {sc['size']} x {sc['size']}, chunks {sc['chunk']}, "
              f"{sc['options']}", "",
              "| workers | time (s) | Mpixel/s | tiles run / tiles in plan | bytes equal |",
              "|---|---|---|---|---|"]
    for row in sc["runs"]:
        lines.append(f"| {row['workers']} | {row['seconds']} | {row.get('mpix_per_s', '-')} | "
                     f"{row.get('tiles_run', '-')} / {row.get('tiles_in_plan', '-')} | "
                     f"{row.get('bytes_equal_single_process', '-')} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["all", "one", "cli", "one-cli"])
    parser.add_argument("--package")
    parser.add_argument("--input")
    parser.add_argument("--output")
    parser.add_argument("--save", action="store_true", help="one, in memory: save the arrays")
    parser.add_argument("--mode", choices=["ooc", "mem"])
    parser.add_argument("--sampling", default="mean")
    parser.add_argument("--samples", type=int, default=1)
    parser.add_argument("--tile", type=int, default=TILE)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 4096, 16384])
    parser.add_argument("--max-in-memory", type=int, default=4096)
    parser.add_argument("--compare-size", type=int, default=4096)
    parser.add_argument("--bundled-size", type=int, default=1024)
    parser.add_argument("--dask-size", type=int, default=2048)
    parser.add_argument("--dask-chunk", type=int, default=1024)
    parser.add_argument("--dask-samples", type=int, default=2)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--cli-size", type=int, default=4096)
    parser.add_argument("--work", default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--out", default="benchmarks/results/big_images")
    args = parser.parse_args()
    if args.what in ("one", "one-cli"):
        print(json.dumps(one(args) if args.what == "one" else one_cli(args)))
        return
    from hdn_deploy.atomic import atomic_write_text

    work = Path(args.work or tempfile.mkdtemp(prefix="hdn-big-"))
    work.mkdir(parents=True, exist_ok=True)
    tiny = tiny_package(work / "tiny")
    machine = f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}"
    if args.what == "cli":
        results = {"machine": machine, "cli": cli_runs(args, work, tiny),
                   "command": "OMP_NUM_THREADS=1 python benchmarks/big_images.py cli "
                              + " ".join(sys.argv[2:])}
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "cli_tiff.json", json.dumps(results, indent=2))
        atomic_write_text(out / "cli_tiff.md", cli_markdown(results))
        print(cli_markdown(results))
        return
    results = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                          f"{platform.python_version()}",
               "command": "OMP_NUM_THREADS=1 python benchmarks/big_images.py all " + " ".join(sys.argv[2:]),
               "memory": memory(args, work, tiny), "scaling": scaling(args, tiny)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "big_images.json", json.dumps(results, indent=2))
    atomic_write_text(out / "big_images.md", markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
