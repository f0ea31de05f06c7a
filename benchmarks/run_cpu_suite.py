"""The CPU benchmark suite: reference vs hdn-deploy, quality per time, tuning sweeps.

Steps (all in one run, so every comparison is a ratio of numbers measured together):

1. Tuning sweeps on one tile (the crop): onnxruntime threads 1 vs 2, graph optimisation
   basic vs all, samples per decoder call 1/2/4/8, mc vs antithetic latents, int8
   decoders (dynamic and static; speed and MMSE loss), encoder once per call vs
   encoder + decoder per sample. Configurations are interleaved and repeated.
2. Speed at the target size (default 1024 x 1024, the noisy sample mirrored up):
   hdn-deploy (the fastest batch size of step 1; mc and antithetic) vs the reference
   algorithm (PyTorch, a full pass per sample, batch 1, no tiling, with and without
   gradients), interleaved and repeated. Cold start and peak RSS come from fresh
   processes (``hdn-deploy bench`` and ``python -m hdn_deploy.training.reference``).
3. Quality on the crop: PSNR of the N-sample MMSE vs the clean image for N up to
   ``--n-max``, mc and antithetic, per seed, plus the single pass with eps = 0.
   Samples needed to come within 0.1 dB of the n_max-sample MMSE, times the measured
   seconds per sample at the target size, give the time to quality.

Writes ``results.json``, ``results.md`` and ``quality_vs_time.png`` into ``--out``.

Example (the bundled default model)::

    .venv/bin/python benchmarks/run_cpu_suite.py --model hdn_deploy/models/default \\
        --checkpoint runs/default-model/run/best.safetensors \\
        --noisy hdn_deploy/sample_data/nuclei_noisy.tif --clean hdn_deploy/sample_data/nuclei_clean.tif \\
        --out runs/bench-cpu
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.quantize import quantized_package  # noqa: E402
from hdn_deploy.training.reference import ReferencePredictor  # noqa: E402
from benchmarks.report import markdown_report, plot_quality_vs_time  # noqa: E402
from hdn_deploy.benchmark import (  # noqa: E402
    encoder_reuse,
    machine_info,
    psnr,
    quality_curve,
    running_mmse,
    summarize,
    time_denoise,
)
from hdn_deploy.denoiser import Denoiser  # noqa: E402
from hdn_deploy.package import load_package  # noqa: E402
from hdn_deploy.tiling import Tiler  # noqa: E402

FULL = dict(size=1024, crop=256, n_max=1000, seeds=[0, 1], repeats=3, samples=2, ref_samples=1,
            tune_samples=16, int8_samples=64)
QUICK = dict(size=256, crop=128, n_max=32, seeds=[0], repeats=2, samples=2, ref_samples=1,
             tune_samples=4, int8_samples=8)


# int8 must be at least this much faster to be worth a second graph: smaller gains are
# within the run-to-run spread of timings on a shared machine.
MIN_INT8_GAIN = 1.1


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="hdn-deploy CPU benchmark suite",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", required=True, type=Path, help="model package folder")
    p.add_argument("--checkpoint", required=True, type=Path, help="checkpoint MODEL came from")
    p.add_argument("--noisy", required=True, type=Path, help="noisy 2D TIFF")
    p.add_argument("--clean", required=True, type=Path, help="clean 2D TIFF (ground truth)")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--quick", action="store_true", help=f"shrunken run: {QUICK}")
    p.add_argument("--size", type=int, help=f"target size for speed (full: {FULL['size']})")
    p.add_argument("--crop", type=int, help=f"quality/tuning crop (full: {FULL['crop']})")
    p.add_argument("--n-max", type=int, help=f"samples of the converged MMSE (full: {FULL['n_max']})")
    p.add_argument("--seeds", type=int, nargs="+", help=f"quality seeds (full: {FULL['seeds']})")
    p.add_argument("--repeats", type=int, help=f"repeats of every timing (full: {FULL['repeats']})")
    p.add_argument("--samples", type=int, help="hdn-deploy samples per timed call at the target size")
    p.add_argument("--ref-samples", type=int, help="reference samples per repeat at the target size")
    p.add_argument("--tune-samples", type=int, help="samples per timed call in the sweeps")
    p.add_argument("--int8-samples", type=int, help="samples of the int8 vs float MMSE check")
    p.add_argument("--threads", type=int, default=2, help="CPU threads (runtime and torch)")
    p.add_argument("--batch-size", type=int, default=4, help="baseline samples per decoder call")
    p.add_argument("--tolerance-db", type=float, default=0.1)
    p.add_argument("--skip-int8", action="store_true", help="skip the int8 experiment")
    args = p.parse_args(argv)
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def centre_crop(image: np.ndarray, size: int) -> np.ndarray:
    h, w = image.shape
    if h < size or w < size:
        raise SystemExit(f"the image {image.shape} is smaller than the crop {size}")
    y0, x0 = (h - size) // 2, (w - size) // 2
    return np.ascontiguousarray(image[y0:y0 + size, x0:x0 + size])


def mirrored_up(image: np.ndarray, size: int) -> np.ndarray:
    """``size x size`` from ``image`` by mirroring (timing input only)."""
    h, w = image.shape
    padded = np.pad(image, ((0, max(0, size - h)), (0, max(0, size - w))), mode="symmetric")
    return np.ascontiguousarray(padded[:size, :size], dtype=np.float32)


def _jsonable(obj: Any):
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj)}")


# --------------------------------------------------------------------------- step 1
def tuning(args, noisy, clean, workdir: Path) -> dict[str, Any]:
    """Interleaved sweeps on one crop-sized tile; gains are baseline / config medians."""
    t, b = args.threads, args.batch_size
    base = dict(threads=t, graph_optimization="all", batch_size=b, sampling="mc")
    configs: dict[str, dict[str, Any]] = {"baseline": dict(base)}
    for threads in sorted({1, 2} - {t}):
        configs[f"threads={threads}"] = dict(base, threads=threads)
    configs["graph_optimization=basic"] = dict(base, graph_optimization="basic")
    for batch in sorted({1, 2, 4, 8} - {b}):
        configs[f"batch_size={batch}"] = dict(base, batch_size=batch)
    configs["sampling=antithetic"] = dict(base, sampling="antithetic")
    models = {name: args.model for name in configs}
    int8: dict[str, Any] = {}
    if not args.skip_int8:
        for method in ("dynamic", "static"):
            name = f"int8_{method}"
            try:
                start = time.perf_counter()
                models[name] = quantized_package(args.model, workdir / name, method=method,
                                                 calibration_image=np.rot90(noisy).copy())
                int8[method] = {"quantize_s": time.perf_counter() - start}
                configs[name] = dict(base)
            except Exception as exc:  # noqa: BLE001 - report why, do not abort the suite
                int8[method] = {"error": f"{type(exc).__name__}: {exc}"}
    dens = {}
    for name, cfg in configs.items():
        try:
            dens[name] = Denoiser(models[name], backend="cpu", threads=cfg["threads"],
                                  graph_optimization=cfg["graph_optimization"])
        except Exception as exc:  # noqa: BLE001 - only an int8 graph may fail to load
            if not name.startswith("int8_"):
                raise
            int8[name.removeprefix("int8_")]["error"] = f"{type(exc).__name__}: {exc}"
    tile = dict(tile=args.crop, overlap=0)
    for name, den in list(dens.items()):  # warm-up
        cfg = configs[name]
        try:
            den.denoise(noisy, n_samples=cfg["batch_size"], batch_size=cfg["batch_size"],
                        sampling=cfg["sampling"], **tile)
        except Exception as exc:  # noqa: BLE001 - only an int8 graph may fail to run
            if not name.startswith("int8_"):
                raise
            int8[name.removeprefix("int8_")]["error"] = f"{type(exc).__name__}: {exc}"
            del dens[name]
    configs = {k: v for k, v in configs.items() if k in dens}
    per_sample: dict[str, list[float]] = {name: [] for name in configs}
    latent_share: dict[str, list[float]] = {name: [] for name in configs}
    names = list(configs)
    for r in range(args.repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:  # rotate the order
            cfg = configs[name]
            run = time_denoise(dens[name], noisy, n_samples=args.tune_samples,
                               batch_size=cfg["batch_size"], sampling=cfg["sampling"], **tile)
            per_sample[name].append(run["wall_s"][0] / args.tune_samples)
            latent_share[name].append(run["phases_s"]["latents"][0] / run["wall_s"][0])
        log(f"tuning repeat {r + 1}/{args.repeats} done")
    base_median = float(np.median(per_sample["baseline"]))
    sweep = {name: {"config": cfg, "seconds_per_sample": summarize(per_sample[name]),
                    "latent_share": summarize(latent_share[name]),
                    "gain_vs_baseline": base_median / float(np.median(per_sample[name]))}
             for name, cfg in configs.items()}
    result: dict[str, Any] = {"image_shape": list(noisy.shape), "n_samples": args.tune_samples,
                              "repeats": args.repeats, "configs": sweep}
    log("encoder once per call vs encoder + decoder per sample")
    result["encoder_reuse"] = encoder_reuse(dens["baseline"], noisy, n_samples=args.tune_samples,
                                            repeats=args.repeats)
    if int8:
        result["int8"] = int8_quality(args, dens, noisy, clean, int8, base_median, sweep)
    return result


def int8_quality(args, dens, noisy, clean, int8, base_median, sweep) -> dict[str, Any]:
    """MMSE of int8 vs float decoders: same seed, same N, PSNR vs clean and vs float."""
    opts = dict(seed=0, batch_size=args.batch_size, tile=args.crop, overlap=0)
    reference = running_mmse(dens["baseline"], noisy, [args.int8_samples], **opts)[args.int8_samples]
    ref_psnr = psnr(reference, clean)
    for method, entry in int8.items():
        name = f"int8_{method}"
        if name not in dens:
            continue
        mmse = running_mmse(dens[name], noisy, [args.int8_samples], **opts)[args.int8_samples]
        loss = ref_psnr - psnr(mmse, clean)
        speed = sweep[name]["gain_vs_baseline"]
        entry.update({"n_samples": args.int8_samples, "float_psnr": ref_psnr,
                      "int8_psnr": psnr(mmse, clean), "loss_db": loss,
                      "psnr_vs_float_mmse": psnr(mmse, reference), "speedup": speed,
                      "accepted": bool(loss <= args.tolerance_db and speed >= MIN_INT8_GAIN)})
        log(f"int8 {method}: loss {loss:.3f} dB, speed-up {speed:.2f}x")
    return int8


# --------------------------------------------------------------------------- step 2
def best_batch(tune: dict[str, Any], default: int) -> int:
    candidates = {cfg["config"]["batch_size"]: cfg["seconds_per_sample"]["median"]
                  for name, cfg in tune["configs"].items()
                  if name == "baseline" or name.startswith("batch_size=")}
    return min(candidates, key=candidates.get) if candidates else default


def speed(args, image: np.ndarray, crop: np.ndarray, batch_size: int) -> dict[str, Any]:
    """Interleaved: hdn-deploy mc / antithetic / mean vs reference grad / no_grad."""
    den = Denoiser(args.model, backend="cpu", threads=args.threads)
    ref = ReferencePredictor(args.checkpoint, threads=args.threads)
    package = den.package
    same_check = _same_weights(den, ref, crop)
    opts = dict(batch_size=batch_size)
    den.denoise(image, n_samples=batch_size, **opts)  # warm-up
    ref.time_samples(image, 1, grad=False)
    runs: dict[str, list] = {k: [] for k in ("mc", "antithetic", "mean", "grad", "no_grad")}
    phases: dict[str, list] = {"mc": [], "antithetic": []}
    for r in range(args.repeats):
        for mode in ("mc", "antithetic"):
            run = time_denoise(den, image, n_samples=args.samples, sampling=mode, seed=r, **opts)
            runs[mode].append(run["wall_s"][0] / args.samples)
            phases[mode].append({k: v[0] for k, v in run["phases_s"].items()} | {
                "wall": run["wall_s"][0], "tiles": run["tiles"]})
        runs["mean"].append(time_denoise(den, image, n_samples=1, sampling="mean")["wall_s"][0])
        for name, grad in (("grad", True), ("no_grad", False)):
            runs[name].append(float(np.mean(ref.time_samples(image, args.ref_samples, grad=grad,
                                                             seed=r))))
        log(f"speed repeat {r + 1}/{args.repeats}: mc {runs['mc'][-1]:.3f} s/sample, "
            f"reference {runs['grad'][-1]:.3f} (grad) {runs['no_grad'][-1]:.3f} (no_grad)")
    out: dict[str, Any] = {"image_shape": list(image.shape), "repeats": args.repeats,
                           "samples": args.samples, "ref_samples": args.ref_samples,
                           "batch_size": batch_size, "threads": args.threads,
                           "tile": package.recommended_tile, "overlap": package.recommended_overlap,
                           "same_weights": same_check,
                           "tiling_overhead": tiling_overhead(package, image.shape)}
    for name, values in runs.items():
        out[name] = {"seconds_per_sample" if name != "mean" else "seconds": summarize(values)}
    for mode in ("mc", "antithetic"):
        out[mode].update(_cost_model(phases[mode], args.samples))
    base = out["grad"]["seconds_per_sample"]["median"]
    out["speedup_vs_reference_grad"] = {
        k: base / out[k]["seconds_per_sample"]["median"] for k in ("mc", "antithetic", "no_grad")}
    return out


def _cost_model(phases: list[dict[str, float]], n: int) -> dict[str, Any]:
    """t(N) = fixed + N * marginal: per-sample phases (latents, decode, stats) scale with
    N, the rest (encoder, tiling, merge) is paid once per call."""
    marginal = [(p["latents"] + p["decode"] + p["stats"]) / n for p in phases]
    fixed = [p["wall"] - m * n for p, m in zip(phases, marginal)]
    return {"marginal_s_per_sample": summarize(marginal), "fixed_s_per_call": summarize(fixed),
            "latent_share": summarize(p["latents"] / p["wall"] for p in phases),
            "phases_s": phases}


def tiling_overhead(package, shape) -> dict[str, float]:
    """Pixels the network processes / image pixels, for a few tile sizes (from the plan)."""
    m, out = package.spatial_multiple, {}
    for tile in sorted({package.recommended_tile, 256, 320, 384, 448, 512, 1024}):
        if tile % m or tile <= package.recommended_overlap or tile > max(shape):
            continue
        plan = Tiler(tile, package.recommended_overlap, multiple=m,
                     margin=package.recommended_overlap // 2).plan(tuple(shape))  # Denoiser default
        out[str(tile)] = sum(t.height * t.width for t in plan.tiles) / (shape[0] * shape[1])
    return out


def _same_weights(den: Denoiser, ref: ReferencePredictor, crop: np.ndarray) -> dict[str, Any]:
    """The runtime's eps = 0 pass on one tile equals the reference model's mean pass."""
    ours = den.denoise(crop, sampling="mean", tile=crop.shape[0], overlap=0, margin=0).mmse
    theirs = ref.mean_pass(crop)
    diff = float(np.abs(ours - theirs).max())
    return {"package_weights_sha256": den.package.model_hash,
            "checkpoint_sha256": ref.weights_sha256,
            "hashes_match": den.package.model_hash == ref.weights_sha256,
            "mean_pass_max_abs_diff": diff,
            "mean_pass_rel_diff": diff / float(crop.max() - crop.min())}


def cold_start(args, workdir: Path, batch_size: int) -> dict[str, Any]:
    """Fresh processes: `hdn-deploy bench` and the reference script, for cold start + RSS."""
    out: dict[str, Any] = {}
    runtime_json = workdir / "cold_runtime.json"
    cmd = [sys.executable, "-m", "hdn_deploy", "bench", str(args.model), "--size", str(args.size),
           "--n-samples", str(args.samples), "--repeats", "1", "--threads", str(args.threads),
           "--batch-size", str(batch_size), "-o", str(runtime_json)]
    jobs = [("runtime", cmd, runtime_json)]
    for name, flag in (("reference_grad", []), ("reference_no_grad", ["--no-grad"])):
        path = workdir / f"cold_{name}.json"
        jobs.append((name, [sys.executable, "-m", "hdn_deploy.training.reference",
                            str(args.checkpoint), "--size", str(args.size), "--repeats", "1",
                            "--threads", str(args.threads), "-o", str(path), *flag], path))
    for name, command, path in jobs:
        start = time.perf_counter()
        proc = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
        wall = time.perf_counter() - start
        if proc.returncode:
            hint = " (killed: probably out of memory)" if proc.returncode in (-9, 137) else ""
            raise SystemExit(
                f"{name} at {args.size}x{args.size} failed with exit code {proc.returncode}"
                f"{hint}; the reference keeps the autograd graph of a whole image (about 15 GB "
                f"at 1024x1024 for the default model): try a smaller --size.\n{proc.stderr[-2000:]}")
        data = json.loads(path.read_text())
        entry = {"process_wall_s": wall, "peak_rss_mb": data.get("peak_rss_mb")
                 or data["runtime"]["peak_rss_mb"]}
        if name == "runtime":
            entry["cold_start_s"] = data["runtime"]["cold_start_s"]
            entry["tile_latency_s"] = data["runtime"]["tile_latency_s"]
        out[name] = entry
        log(f"cold start {name}: {wall:.1f} s process, peak RSS {entry['peak_rss_mb']:.0f} MB")
    return out


# --------------------------------------------------------------------------- step 3
def time_to_quality(quality: dict[str, Any], speed_result: dict[str, Any]) -> dict[str, Any]:
    """Samples needed (median over seeds) x seconds per sample at the target size."""
    mc = quality["modes"]["mc"]["summary"]["samples_needed_median"]
    anti = quality["modes"].get("antithetic", {}).get("summary", {}).get("samples_needed_median")
    rows = {}
    for name in ("grad", "no_grad"):
        s = speed_result[name]["seconds_per_sample"]["median"]
        rows[f"reference_{name}"] = {"seconds_per_sample": s, "samples_needed": mc,
                                     "seconds": None if mc is None else mc * s}
    for mode, needed in (("mc", mc), ("antithetic", anti)):
        entry = speed_result[mode]
        fixed = entry["fixed_s_per_call"]["median"]
        marginal = entry["marginal_s_per_sample"]["median"]
        rows[f"hdn_deploy_{mode}"] = {
            "seconds_per_sample": entry["seconds_per_sample"]["median"],
            "fixed_s_per_call": fixed, "marginal_s_per_sample": marginal,
            "samples_needed": needed,
            "seconds": None if needed is None else fixed + needed * marginal}
    base = rows["reference_grad"]["seconds"]
    for row in rows.values():
        row["speedup_vs_reference_grad"] = (base / row["seconds"]
                                            if base and row["seconds"] else None)
    mean = speed_result["mean"]["seconds"]["median"]
    rows["hdn_deploy_mean_pass"] = {"seconds": mean, "samples_needed": None,
                                    "gap_db": quality.get("mean_pass", {}).get("mc", {}).get("gap_db")}
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    results: dict[str, Any] = {"machine": machine_info(), "settings": vars(args).copy()}
    load, cpus = results["machine"]["load_average"], results["machine"]["cpus_usable"]
    if load and cpus and load[0] > 0.5 * cpus:
        results["warning"] = (
            f"load average {load[0]:.1f} on {cpus} CPUs at the start: other processes compete "
            "for the cores; multi-threaded timings (torch's OpenMP in particular) can be many "
            "times slower and noisier than on an idle machine; rerun on an idle machine or "
            "with --threads 1")
        log("WARNING: " + results["warning"])
    package = load_package(args.model)
    if args.size % package.spatial_multiple or args.crop % package.spatial_multiple:
        raise SystemExit(f"--size and --crop must be multiples of {package.spatial_multiple}")
    noisy_full = tifffile.imread(args.noisy).astype(np.float32)
    clean_full = tifffile.imread(args.clean).astype(np.float32)
    noisy, clean = centre_crop(noisy_full, args.crop), centre_crop(clean_full, args.crop)
    target = mirrored_up(noisy_full, args.size)
    with tempfile.TemporaryDirectory(prefix="hdn-bench-") as tmp:
        workdir = Path(tmp)
        log("step 1/4: tuning sweeps")
        results["tuning"] = tuning(args, noisy, clean, workdir)
        batch = best_batch(results["tuning"], args.batch_size)
        log(f"step 2/4: cold start and peak RSS in fresh processes (batch size {batch})")
        results["cold_start"] = cold_start(args, workdir, batch)
    log(f"step 3/4: speed at {args.size}x{args.size}")
    results["speed"] = speed(args, target, noisy, batch)
    log(f"step 4/4: quality on the {args.crop}x{args.crop} crop, n_max {args.n_max}")
    den = Denoiser(args.model, backend="cpu", threads=args.threads)
    results["quality"] = quality_curve(den, noisy, clean, n_max=args.n_max, seeds=args.seeds,
                                       batch_size=batch, tile=args.crop, overlap=0,
                                       tolerance_db=args.tolerance_db, progress=log)
    results["time_to_quality"] = time_to_quality(results["quality"], results["speed"])
    end = machine_info()
    results["machine"]["versions"].update(end["versions"])  # modules imported meanwhile
    results["load_average_end"] = end["load_average"]
    results["suite_seconds"] = time.perf_counter() - started
    (args.out / "results.json").write_text(json.dumps(results, indent=2, default=_jsonable))
    (args.out / "results.md").write_text(markdown_report(results))
    plot_quality_vs_time(results, args.out / "quality_vs_time.png")
    log(f"done in {results['suite_seconds']:.0f} s; wrote {args.out}/results.json, results.md, "
        "quality_vs_time.png")
    print((args.out / "results.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
