"""The latent contract on an NVIDIA GPU: a CuPy ``ElementwiseKernel`` that computes every
eps value from (seed, sample, level, channel, global y, global x) exactly as
:mod:`hdn_deploy.latents` and :mod:`hdn_deploy.philox` do on the CPU.

Status: the CUDA source below is compiled as C and checked against the numpy oracle on
the CPU (``tests/runtime/test_latents_device.py``); the CuPy kernel itself runs only
where cupy and a GPU exist and has not been run on a GPU yet (untested; run
``benchmarks/gpu_suite.py`` on a GPU machine).

Philox words and uniforms are bit-identical to numpy's; the normals use CUDA's float32
``logf``/``sqrtf``/``sinf``/``cosf`` (no fast-math), which agree with numpy's float32
functions to a few units in the last place (absolute differences below 1e-5).
"""
from __future__ import annotations

from typing import Any, Sequence

from ._optional import require
from .latents import LatentSampler

__all__ = ["CUDA_SOURCE", "DeviceLatents"]

#: Device functions shared by the kernel and the CPU check (plain C99 apart from the
#: ``HDN_DEVICE`` qualifier, defined as ``__device__ __forceinline__`` for CUDA).
CUDA_SOURCE = r"""
HDN_DEVICE void hdn_philox4x32_10(unsigned int c[4], unsigned int k0, unsigned int k1) {
    for (int r = 0; r < 10; ++r) {
        if (r) { k0 += 0x9E3779B9u; k1 += 0xBB67AE85u; }
        unsigned long long p0 = (unsigned long long)0xD2511F53u * c[0];
        unsigned long long p1 = (unsigned long long)0xCD9E8D57u * c[2];
        unsigned int hi0 = (unsigned int)(p0 >> 32), lo0 = (unsigned int)p0;
        unsigned int hi1 = (unsigned int)(p1 >> 32), lo1 = (unsigned int)p1;
        c[0] = hi1 ^ c[1] ^ k0; c[1] = lo1; c[2] = hi0 ^ c[3] ^ k1; c[3] = lo0;
    }
}

HDN_DEVICE float hdn_uniform(unsigned int w) {
    float u = (float)(w >> 9);
    u = u * 2.0f;
    u = u + 1.0f;
    return u * 5.9604644775390625e-08f; /* 2**-24: exact, in (0, 1) */
}

HDN_DEVICE float hdn_eps(unsigned int k0, unsigned int k1, unsigned int x, unsigned int y,
                         unsigned int level_channel, unsigned int stream) {
    unsigned int c[4];
    c[0] = x >> 2; c[1] = y; c[2] = level_channel; c[3] = stream;
    hdn_philox4x32_10(c, k0, k1);
    int lane = (int)(x & 3u), pair = lane >> 1;
    float r = hdn_uniform(c[2 * pair]);
    r = logf(r);
    r = r * -2.0f;
    r = sqrtf(r);
    float t = hdn_uniform(c[2 * pair + 1]) * 6.2831854820251465f; /* float32(2 pi) */
    return (lane & 1) ? r * sinf(t) : r * cosf(t);
}
"""

_OPERATION = """
    long long per_sample = channels * h * w;
    long long n = i / per_sample, rest = i % per_sample;
    long long ch = rest / (h * w), row = (rest / w) % h, col = rest % w;
    eps = signs[n] * hdn_eps(k0, k1, (unsigned int)(lx0 + col), (unsigned int)(ly0 + row),
                             level_word | (unsigned int)ch, streams[n]);
"""


class DeviceLatents:
    """The latent contract's eps computed on the GPU (CuPy arrays out).

    Parameters
    ----------
    cupy : module, optional
        The cupy module (default: imported; MissingDependencyError when absent).

    The kernel is compiled once per process (CuPy caches it); one instance serves any
    number of samplers, tiles and threads.
    """

    def __init__(self, *, cupy: Any = None) -> None:
        self._cp = cupy or require("cupy", purpose="device latents", extra="tensorrt")
        self._kernel = self._cp.ElementwiseKernel(
            "uint32 k0, uint32 k1, raw uint32 streams, raw float32 signs, uint32 level_word, "
            "int64 channels, int64 ly0, int64 lx0, int64 h, int64 w",
            "float32 eps", _OPERATION, "hdn_latent_eps",
            preamble="#define HDN_DEVICE __device__ __forceinline__\n" + CUDA_SOURCE)

    def tile_eps(self, sampler: LatentSampler, sample_indices: Sequence[int],
                 levels: Sequence[tuple[int, int]], y0: int, x0: int, height: int,
                 width: int) -> list[Any]:
        """As ``sampler.tile_eps(...)`` (same arguments, same checks and ConfigErrors), but
        C-contiguous float32 cupy arrays computed on the current device and stream."""
        cp = self._cp
        samples, specs = sampler.validate(sample_indices, levels, y0, x0, height, width)
        pairs = [sampler.stream_of(s) for s in samples]
        streams = cp.asarray([p[0] for p in pairs], dtype=cp.uint32)
        signs = cp.asarray([-1.0 if p[1] else 1.0 for p in pairs], dtype=cp.float32)
        seed = sampler.seed
        out = []
        for level, channels in specs:
            shift = level + 1
            shape = (len(samples), channels, height >> shift, width >> shift)
            eps = cp.empty(shape, dtype=cp.float32)
            if sampler.at_mean(level):
                eps.fill(0)
            else:
                self._kernel(seed & 0xFFFFFFFF, seed >> 32, streams, signs, level << 24,
                             channels, y0 >> shift, x0 >> shift, shape[2], shape[3], eps)
            out.append(eps)
        return out
