"""Runtime steps of ``benchmarks/gpu_suite.py`` (see its docstring): the CuPy latent
kernel against the numpy oracle, and the 2048^2 x 100-sample Denoiser run on TensorRT.

Untested: written for a GPU run that has not happened yet.
"""
from __future__ import annotations

import time

import numpy as np

from hdn_deploy.metrics import psnr


def step_device_latents(args, ctx, tiling: tuple[int, int]) -> dict:
    import cupy

    from hdn_deploy.latents import LatentSampler
    from hdn_deploy.latents_cuda import DeviceLatents
    from hdn_deploy.package import load_package

    pkg = load_package(ctx.package)
    levels = [(lv.index, lv.channels) for lv in pkg.sampled_levels]
    tile = tiling[0]
    sampler, device = LatentSampler(20261130, mode="antithetic"), DeviceLatents()
    request = (list(range(args.batch_size)), levels, 2 * tile, tile, tile, tile)
    got = [cupy.asnumpy(a) for a in device.tile_eps(sampler, *request)]
    want = sampler.tile_eps(*request)
    again = [cupy.asnumpy(a) for a in device.tile_eps(sampler, *request)]
    values = sum(w.size for w in want)
    start, stop = cupy.cuda.Event(), cupy.cuda.Event()
    start.record()
    for _ in range(20):
        device.tile_eps(sampler, *request)
    stop.record()
    stop.synchronize()
    seconds = cupy.cuda.get_elapsed_time(start, stop) / 1e3 / 20
    max_diff = max(float(np.abs(g - w).max()) for g, w in zip(got, want))
    return {"tile": tile, "samples": args.batch_size, "values": values,
            "max_abs_diff_vs_numpy": max_diff, "agrees_1e-5": max_diff <= 1e-5,
            "bit_identical_share": sum(int((g == w).sum()) for g, w in zip(got, want)) / values,
            "same_device_deterministic": all(a.tobytes() == b.tobytes() for a, b in zip(got, again)),
            "values_per_s": values / seconds,
            "ms_per_sample_tile": seconds * 1e3 / args.batch_size}


def step_tensorrt_full(args, ctx, tiling: tuple[int, int], log) -> dict:
    from hdn_deploy.backends.tensorrt import TensorRTBackend
    from hdn_deploy.denoiser import Denoiser
    from hdn_deploy.package import load_package

    backend = TensorRTBackend(load_package(ctx.package), precision="fp16",
                              cache_dir=args.out / "trt_cache", log=log)
    den = Denoiser(ctx.package, backend=backend)
    tile, overlap = tiling
    opts = dict(seed=1, tile=tile, overlap=overlap, batch_size=args.batch_size)
    den.denoise(ctx.noisy[:tile, :tile], n_samples=args.batch_size, **opts)  # warm-up
    timings: dict[str, float] = {}
    start = time.perf_counter()
    result = den.denoise(ctx.noisy, n_samples=args.samples, timings=timings, **opts)
    wall = time.perf_counter() - start
    described = backend.describe()
    backend.close()
    return {"size": args.size, "samples": args.samples, "wall_s": wall, "phases_s": timings,
            "latent_share": timings.get("latents", 0.0) / wall, "backend": described,
            "psnr_db": psnr(result.mmse, ctx.clean), "metadata": result.metadata}
