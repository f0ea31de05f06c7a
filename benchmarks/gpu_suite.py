"""The GPU suite: GPU tests and GPU benchmarks in one run, JSON under ``--out`` ($OUT).

Steps (each skipped with a recorded reason when what it needs is missing, or when the
``--budget-s`` time budget is spent; results are rewritten after every step):

Status: untested. No GPU run of this script has happened yet; its steps and the tests it
runs have only been exercised with ``--dry-run`` and on the CPU.

1. ``gpu_tests``: ``pytest -m 'gpu or tensorrt'`` (skip reasons included): the backend
   contract class on every GPU backend, the CuPy latent kernel vs the numpy oracle, the
   real TensorRT engines.
1b. ``device_latents``: the CuPy latent kernel vs the numpy oracle on the model's levels
   (max |difference|, share of bit-identical values, same-device determinism) and its
   throughput (values/s, ms per sample per tile).
1c. ``tensorrt_full``: the runtime ``Denoiser`` on native TensorRT (FP16, device latents,
   device moments) on a ``--size`` image (2048) with ``--samples`` (100): wall time,
   phases, PSNR. Engines are built here if the cache has none.
2. ``device_sampler``: PyTorch on the GPU with everything on the device (encoder once per
   tile, eps drawn with torch on the GPU, moments on the device): MMSE of a ``--size``
   image (2048) with ``--samples`` (100), FP32 and FP16 (autocast); per-tile p50/p99,
   latent share, PSNR and the FP16-vs-FP32 PSNR difference.
3. ``reference``: the reference algorithm on the GPU (full pass per sample, batch 1, same
   weights), with and without gradients; 100-sample time extrapolated from a few samples.
4. ``torch_backend``: the PyTorch-CUDA stand-in backend under the runtime's Denoiser
   (seeded numpy latents on the CPU), FP32 and FP16, at ``--denoiser-size``.
5. ``tensorrt``: native TensorRT engines (build time, cached reload), FP32 and FP16.
6. ``ort_cuda``: onnxruntime's CUDA provider. 7. ``ort_cpu``: one tile on the CPU.

``--dry-run`` only probes and writes what would run and what is unavailable (CPU-safe).
``--device cpu --arch tiny --size 128 ...`` exercises every CPU-runnable path.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import numpy as np
import tifffile

from hdn_deploy.atomic import atomic_write_text

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.gpu_runtime_steps import step_device_latents, step_tensorrt_full  # noqa: E402
from hdn_deploy.benchmark import machine_info, percentiles, time_denoise  # noqa: E402
from hdn_deploy.metrics import psnr  # noqa: E402

ARCHS = {"reference": {}, "small": dict(n_filters=32, blocks_per_level=3),
         "tiny": dict(z_dims=(4, 4, 4), n_filters=8, blocks_per_level=1, patch_size=32)}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu_suite_out")))
    p.add_argument("--dry-run", action="store_true", help="probe and plan only")
    p.add_argument("--checkpoint", type=Path, help="default: runs/default-model/run/best.safetensors, "
                   "else an untrained --arch model (timings only)")
    p.add_argument("--model", type=Path, help="package exported from --checkpoint (default: export)")
    p.add_argument("--arch", choices=sorted(ARCHS), default="reference")
    p.add_argument("--untrained", action="store_true", help="use an untrained --arch model")
    p.add_argument("--device", default="cuda")
    p.add_argument("--size", type=int, default=2048)
    p.add_argument("--samples", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--tile", type=int, help="default: the package's recommended tile")
    p.add_argument("--overlap", type=int, help="default: the package's recommended overlap")
    p.add_argument("--denoiser-size", type=int, default=1024)
    p.add_argument("--denoiser-samples", type=int, default=16)
    p.add_argument("--ref-samples", type=int, default=3)
    p.add_argument("--budget-s", type=float, default=480.0)
    p.add_argument("--skip-tests", action="store_true")
    return p.parse_args(argv)


# ----------------------------------------------------------------------------- probes
def _try(label: str, func: Callable[[], Any]) -> dict[str, Any]:
    try:
        return {"ok": True, "detail": func()}
    except Exception as exc:  # noqa: BLE001 - any failure is a reason to record
        return {"ok": False, "reason": f"{label}: {type(exc).__name__}: {exc}"}


def _torch_device(device: str):
    torch = importlib.import_module("torch")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"torch {torch.__version__} sees no CUDA device")
    name = torch.cuda.get_device_name(device) if device.startswith("cuda") else "cpu"
    return {"torch": torch.__version__, "device": name}


def _ort_provider(provider: str):
    ort = importlib.import_module("onnxruntime")
    if provider not in ort.get_available_providers():
        raise RuntimeError(f"onnxruntime {ort.__version__} lacks {provider} "
                           f"(has {ort.get_available_providers()})")
    return ort.__version__


def _cupy_device():
    cupy = importlib.import_module("cupy")
    return {"cupy": cupy.__version__, "devices": cupy.cuda.runtime.getDeviceCount()}


def _tensorrt():
    trt, cupy = importlib.import_module("tensorrt"), importlib.import_module("cupy")
    from hdn_deploy.backends.trt_cache import gpu_identity

    return {"tensorrt": trt.__version__, "cupy": cupy.__version__, "gpu": gpu_identity()}


def probe(args) -> dict[str, dict[str, Any]]:
    avail = {
        "cupy": _try("cupy", _cupy_device),
        "torch_device": _try("torch", lambda: _torch_device(args.device)),
        "tensorrt": _try("tensorrt+cupy", _tensorrt),
        "ort_cuda": _try("onnxruntime CUDA", lambda: _ort_provider("CUDAExecutionProvider")),
        "ort_cpu": _try("onnxruntime CPU", lambda: _ort_provider("CPUExecutionProvider")),
        "onnx_export": _try("export", lambda: [importlib.import_module(m).__version__
                                               for m in ("onnx", "onnxscript")]),
        "pytest": _try("pytest", lambda: importlib.import_module("pytest").__version__),
    }
    if args.model is not None:
        avail["package"] = {"ok": args.model.is_dir(), "reason": f"--model {args.model} not found"}
    else:
        avail["package"] = dict(avail["onnx_export"])  # exported from the checkpoint
    return avail


NEEDS = {"gpu_tests": ["pytest"], "device_latents": ["cupy", "package"],
         "tensorrt_full": ["tensorrt", "package"], "device_sampler": ["torch_device"],
         "reference": ["torch_device"], "torch_backend": ["torch_device", "package"],
         "tensorrt": ["tensorrt", "package"], "ort_cuda": ["ort_cuda", "package"],
         "ort_cpu": ["ort_cpu", "package"]}


# ----------------------------------------------------------------------------- setup
def mirrored_up(image: np.ndarray, size: int) -> np.ndarray:
    h, w = image.shape
    padded = np.pad(image, ((0, max(0, size - h)), (0, max(0, size - w))), mode="symmetric")
    return np.ascontiguousarray(padded[:size, :size], dtype=np.float32)


def setup(args, avail, work: Path) -> SimpleNamespace:
    from benchmarks.gpu_torch import random_checkpoint
    from hdn_deploy.training.config import ModelConfig
    from hdn_deploy.training.checkpoint import load_checkpoint

    data = REPO / "hdn_deploy" / "sample_data"
    noisy, clean = (tifffile.imread(data / f"nuclei_{k}.tif").astype(np.float32) for k in ("noisy", "clean"))
    checkpoint, trained = args.checkpoint, True
    default = REPO / "runs" / "default-model" / "run" / "best.safetensors"
    if checkpoint is None and default.is_file() and not args.untrained:
        checkpoint = default
    if checkpoint is None:
        checkpoint, trained = work / "random.safetensors", False
        random_checkpoint(checkpoint, ModelConfig(**ARCHS[args.arch]), mean=float(noisy.mean()),
                          std=float(noisy.std()))
    package = args.model
    if package is None and avail["package"]["ok"]:
        try:
            from hdn_deploy.export import package_from_checkpoint

            package = package_from_checkpoint(checkpoint, work / "package", overwrite=True)
        except Exception as exc:  # noqa: BLE001 - the torch-only steps can still run
            avail["package"] = {"ok": False, "reason": f"export failed: {type(exc).__name__}: {exc}"}
    norm = load_checkpoint(checkpoint).normalization
    return SimpleNamespace(checkpoint=checkpoint, package=package, trained=trained, mean=norm.mean,
                           std=norm.std, noisy=mirrored_up(noisy, args.size),
                           clean=mirrored_up(clean, args.size), work=work)


def _tiling(args, ctx) -> tuple[int, int]:
    if args.tile:
        return args.tile, args.overlap if args.overlap is not None else args.tile // 4
    if ctx.package is not None:
        from hdn_deploy.package import load_package

        pkg = load_package(ctx.package)
        return pkg.recommended_tile, pkg.recommended_overlap
    return 256, 64


# ----------------------------------------------------------------------------- steps
def step_gpu_tests(args, ctx) -> dict:
    xml = args.out / "gpu_tests.xml"
    proc = subprocess.run([sys.executable, "-m", "pytest", "tests", "-m", "gpu or tensorrt", "-rs",
                           "-q", "-p", "no:cacheprovider", f"--junitxml={xml}"], cwd=REPO,
                          capture_output=True, text=True, timeout=max(60, int(_left(args) - 30)))
    return {"returncode": proc.returncode, "output_tail": (proc.stdout + proc.stderr)[-4000:]}


def step_device_sampler(args, ctx) -> dict:
    from benchmarks.gpu_torch import device_sampler, load_model
    from hdn_deploy.tiling import Tiler

    model = load_model(ctx.checkpoint, args.device)
    tile, overlap = _tiling(args, ctx)
    tiler = Tiler(tile, overlap, multiple=model.config.spatial_multiple)
    image = (ctx.noisy - ctx.mean) / ctx.std
    device_sampler(model, image[:tile, :tile], tiler, n_samples=args.batch_size,
                   batch_size=args.batch_size)  # warm-up (cuDNN autotuning, allocator)
    out, mmse = {}, {}
    for name, half in (("fp32", False), ("fp16", True)):
        run = device_sampler(model, image, tiler, n_samples=args.samples,
                             batch_size=args.batch_size, half=half, seed=1)
        mmse[name] = run["mean"] * ctx.std + ctx.mean
        out[name] = {"wall_s": run["wall_s"], "tiles": run["tiles"], "phases_s": run["phases_s"],
                     "tile_latency_s": percentiles(run["tile_seconds"], (50, 99)),
                     "latent_share": run["latent_share"], "psnr_db": psnr(mmse[name], ctx.clean)}
    out["fp16_minus_fp32_psnr_db"] = out["fp16"]["psnr_db"] - out["fp32"]["psnr_db"]
    out["fp16_vs_fp32_psnr_db"] = psnr(mmse["fp16"], mmse["fp32"])
    out["settings"] = {"size": args.size, "samples": args.samples, "batch_size": args.batch_size,
                       "tile": tile, "overlap": overlap, "fp16": "torch.autocast"}
    return out


def step_reference(args, ctx) -> dict:
    import torch

    from benchmarks.gpu_torch import load_model, reference_seconds

    model = load_model(ctx.checkpoint, args.device)
    m = model.config.spatial_multiple
    side = args.size // m * m
    image = (ctx.noisy[:side, :side] - ctx.mean) / ctx.std
    out = {"settings": {"size": side, "samples_timed": args.ref_samples}}
    for grad in (False, True):
        key = "grad" if grad else "no_grad"
        try:
            seconds = reference_seconds(model, image, args.ref_samples, grad=grad)
            per = float(np.median(seconds))
            out[key] = {"seconds_per_sample": seconds, f"estimated_s_for_{args.samples}_samples":
                        per * args.samples}
        except torch.cuda.OutOfMemoryError as exc:
            out[key] = {"skipped": f"out of GPU memory at {side}x{side}: {str(exc)[:200]}"}
        finally:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    return out


def _denoiser_run(args, ctx, backend, *, size: int, samples: int) -> tuple[dict, np.ndarray]:
    from hdn_deploy.denoiser import Denoiser

    den = Denoiser(ctx.package, backend=backend)
    tile, overlap = _tiling(args, ctx)
    opts = dict(seed=1, tile=tile, overlap=overlap, batch_size=args.batch_size)
    image = ctx.noisy[:size, :size]
    den.denoise(image[:tile, :tile], n_samples=args.batch_size, **opts)  # warm-up
    run = time_denoise(den, image, n_samples=samples, repeats=1, **opts)
    mmse = den.denoise(image, n_samples=samples, **opts).mmse
    wall = run["wall_s"][0]
    scale = (args.size / size) ** 2 * args.samples / samples
    return {"backend": den.backend.describe(), "size": size, "samples": samples, "wall_s": wall,
            "tile_latency_s": percentiles(run["tile_latency_s"], (50, 99)),
            "phases_s": {k: v[0] for k, v in run["phases_s"].items()},
            "latent_share": run["phases_s"]["latents"][0] / wall,
            f"estimated_s_for_{args.size}px_{args.samples}_samples": wall * scale,
            "psnr_db": psnr(mmse, ctx.clean[:size, :size])}, mmse


def _pair(args, ctx, make: Callable[[str], Any], *, size: int, samples: int) -> dict:
    out, mmse = {}, {}
    for precision in ("fp16", "fp32"):
        if _left(args) < 60:
            out[precision] = {"skipped": "time budget spent"}
            continue
        start = time.perf_counter()
        backend = make(precision)
        setup_s = time.perf_counter() - start
        out[precision], mmse[precision] = _denoiser_run(args, ctx, backend, size=size, samples=samples)
        out[precision]["setup_s"] = setup_s
        backend.close()
    if len(mmse) == 2:
        out["fp16_minus_fp32_psnr_db"] = out["fp16"]["psnr_db"] - out["fp32"]["psnr_db"]
        out["fp16_vs_fp32_psnr_db"] = psnr(mmse["fp16"], mmse["fp32"])
    return out


def step_torch_backend(args, ctx) -> dict:
    from benchmarks.gpu_torch import TorchBackend
    from hdn_deploy.package import load_package

    pkg = load_package(ctx.package)
    return _pair(args, ctx, lambda p: TorchBackend(pkg, ctx.checkpoint, device=args.device,
                                                    half=p == "fp16"),
                 size=args.denoiser_size, samples=args.denoiser_samples)


def step_tensorrt(args, ctx) -> dict:
    from hdn_deploy.backends.tensorrt import TensorRTBackend
    from hdn_deploy.package import load_package

    pkg, cache = load_package(ctx.package), args.out / "trt_cache"
    out = _pair(args, ctx, lambda p: TensorRTBackend(pkg, precision=p, cache_dir=cache, log=log),
                size=args.denoiser_size, samples=args.denoiser_samples)
    start = time.perf_counter()
    TensorRTBackend(pkg, precision="fp16", cache_dir=cache, build=False).close()
    out["cached_load_s"] = time.perf_counter() - start
    return out


def step_ort(device: str):
    def step(args, ctx) -> dict:
        from hdn_deploy.backends import create_backend
        from hdn_deploy.package import load_package

        backend = create_backend(device, load_package(ctx.package))
        size = args.denoiser_size if device == "cuda" else _tiling(args, ctx)[0]
        samples = args.denoiser_samples if device == "cuda" else args.batch_size
        return _denoiser_run(args, ctx, backend, size=size, samples=samples)[0]
    return step


STEPS = {"gpu_tests": step_gpu_tests,
         "device_latents": lambda args, ctx: step_device_latents(args, ctx, _tiling(args, ctx)),
         "tensorrt_full": lambda args, ctx: step_tensorrt_full(args, ctx, _tiling(args, ctx), log), "device_sampler": step_device_sampler,
         "reference": step_reference, "tensorrt": step_tensorrt,
         "torch_backend": step_torch_backend, "ort_cuda": step_ort("cuda"),
         "ort_cpu": step_ort("cpu")}  # in priority order: the budget may stop the last ones
_START = time.perf_counter()


def _left(args) -> float:
    return args.budget_s - (time.perf_counter() - _START)


def _write(path: Path, results: dict) -> None:
    atomic_write_text(path, json.dumps(
        results, indent=2, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


def _plan(args, avail) -> dict[str, dict[str, Any]]:
    plan = {}
    for name, needs in NEEDS.items():
        missing = [avail[n]["reason"] for n in needs if not avail[n]["ok"]]
        if name == "gpu_tests" and args.skip_tests:
            missing.append("--skip-tests")
        plan[name] = {"runs": not missing, "reason": "; ".join(missing) or None}
    return plan


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    avail = probe(args)
    results = {"kind": "hdn-deploy GPU suite", "dry_run": args.dry_run, "args": vars(args),
               "machine": machine_info(), "available": avail, "plan": _plan(args, avail),
               "steps": {}}
    path = args.out / ("gpu_suite_plan.json" if args.dry_run else "gpu_suite.json")
    if args.dry_run:
        _write(path, results)
        log(f"dry run: wrote {path}")
        return 0
    try:
        ctx = setup(args, avail, args.out / "work")
    except Exception as exc:  # noqa: BLE001 - leave a JSON that says why nothing ran
        results["setup_error"] = traceback.format_exc()[-3000:]
        _write(path, results)
        log(f"setup failed ({exc}); wrote {path}")
        return 1
    plan = results["plan"] = _plan(args, avail)  # the export may have failed
    results["model"] = {"checkpoint": str(ctx.checkpoint), "package": str(ctx.package),
                        "trained": ctx.trained}
    for name, step in STEPS.items():
        if not plan[name]["runs"]:
            results["steps"][name] = {"status": "skipped", "reason": plan[name]["reason"]}
        elif _left(args) < 20:
            results["steps"][name] = {"status": "skipped", "reason": "time budget spent"}
        else:
            log(f"step {name}")
            start = time.perf_counter()
            try:
                results["steps"][name] = {"status": "ok", **step(args, ctx)}
            except Exception as exc:  # noqa: BLE001 - record and go on to the next step
                results["steps"][name] = {"status": "error", "error": f"{type(exc).__name__}: {exc}",
                                          "traceback": traceback.format_exc()[-3000:]}
            results["steps"][name]["seconds"] = time.perf_counter() - start
        _write(path, results)
    log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
