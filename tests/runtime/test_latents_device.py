"""The device latent path against the numpy oracle.

1. The CUDA kernel's device functions (``latents_cuda.CUDA_SOURCE``), compiled as plain C
   with the host C compiler, give the oracle's Philox words bit for bit and its normals to
   float32 rounding (skipped with a reason when there is no C compiler).
2. The CuPy kernel on a GPU gives the oracle's eps (skipped where cupy or a GPU is
   missing: untested until a GPU run happened).
"""
from __future__ import annotations

import ctypes
import importlib.util
import shutil
import subprocess

import numpy as np
import pytest

from hdn_deploy.latents import LatentSampler
from hdn_deploy.latents_cuda import CUDA_SOURCE, DeviceLatents
from hdn_deploy.philox import philox4x32

LEVELS = [(0, 3), (1, 2), (2, 4)]
_CC = shutil.which("cc") or shutil.which("gcc")

_C_WRAPPER = r"""
void words(unsigned int *c, unsigned int k0, unsigned int k1) { hdn_philox4x32_10(c, k0, k1); }
void fill(float *out, long long n_samples, const unsigned int *streams, const float *signs,
          unsigned int k0, unsigned int k1, unsigned int level_word, long long channels,
          long long ly0, long long lx0, long long h, long long w) {
    long long per = channels * h * w;
    for (long long i = 0; i < n_samples * per; ++i) {
        long long n = i / per, rest = i % per;
        long long ch = rest / (h * w), row = (rest / w) % h, col = rest % w;
        out[i] = signs[n] * hdn_eps(k0, k1, (unsigned int)(lx0 + col), (unsigned int)(ly0 + row),
                                    level_word | (unsigned int)ch, streams[n]);
    }
}
"""


@pytest.fixture(scope="module")
def c_kernel(tmp_path_factory):
    if _CC is None:
        pytest.skip("no C compiler (cc/gcc) to compile the kernel source for the CPU check")
    folder = tmp_path_factory.mktemp("kernel")
    src, lib = folder / "kernel.c", folder / "kernel.so"
    src.write_text("#include <math.h>\n#define HDN_DEVICE static inline\n" + CUDA_SOURCE + _C_WRAPPER)
    subprocess.run([_CC, "-O2", "-std=c99", "-shared", "-fPIC", "-ffp-contract=off", str(src),
                    "-o", str(lib), "-lm"], check=True, capture_output=True)
    return ctypes.CDLL(str(lib))


def _c_eps(kernel, sampler, samples, levels, y0, x0, h, w):
    pairs = [sampler.stream_of(s) for s in samples]
    streams = np.array([p[0] for p in pairs], np.uint32)
    signs = np.array([-1.0 if p[1] else 1.0 for p in pairs], np.float32)
    out = []
    for level, channels in levels:
        shift = level + 1
        arr = np.empty((len(samples), channels, h >> shift, w >> shift), np.float32)
        kernel.fill(arr.ctypes.data_as(ctypes.c_void_p), ctypes.c_longlong(len(samples)),
                    streams.ctypes.data_as(ctypes.c_void_p), signs.ctypes.data_as(ctypes.c_void_p),
                    ctypes.c_uint(sampler.seed & 0xFFFFFFFF), ctypes.c_uint(sampler.seed >> 32),
                    ctypes.c_uint(level << 24), ctypes.c_longlong(channels),
                    ctypes.c_longlong(y0 >> shift), ctypes.c_longlong(x0 >> shift),
                    ctypes.c_longlong(arr.shape[2]), ctypes.c_longlong(arr.shape[3]))
        out.append(arr)
    return out


def test_kernel_source_philox_words_are_bit_identical(c_kernel):
    rng = np.random.default_rng(3)
    for _ in range(50):
        counter = [int(v) for v in rng.integers(0, 2**32, 4)]
        key = [int(v) for v in rng.integers(0, 2**32, 2)]
        c = (ctypes.c_uint * 4)(*counter)
        c_kernel.words(c, ctypes.c_uint(key[0]), ctypes.c_uint(key[1]))
        assert list(c) == [int(w) for w in philox4x32(tuple(counter), tuple(key))]


@pytest.mark.parametrize("mode", ["mc", "antithetic"])
def test_kernel_source_matches_the_oracle(c_kernel, mode):
    sampler = LatentSampler(2**64 - 99, mode=mode)
    args = ([0, 1, 2, 7], LEVELS, 8, 24, 32, 40)
    want = sampler.tile_eps(*args)
    got = _c_eps(c_kernel, sampler, *args)
    for a, b in zip(got, want):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)  # libm vs numpy float32 functions


def _cuda_ready() -> str | None:
    if importlib.util.find_spec("cupy") is None:
        return "cupy is not installed (pip install 'hdn-deploy[tensorrt]') and a GPU is needed"
    try:
        import cupy

        cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # noqa: BLE001 - any failure means no usable GPU
        return f"cupy finds no CUDA device ({exc})"
    return None


@pytest.mark.gpu
@pytest.mark.skipif(_cuda_ready() is not None, reason=str(_cuda_ready()))
@pytest.mark.parametrize("mode", ["mc", "antithetic", "mean"])
def test_cupy_kernel_matches_the_oracle(mode):
    import cupy

    sampler = LatentSampler(12345678901234567, mode=mode)
    device = DeviceLatents()
    args = ([0, 1, 5, 2**32 - 1], LEVELS, 64, 40, 64, 72)
    for a, b in zip(device.tile_eps(sampler, *args), sampler.tile_eps(*args)):
        assert isinstance(a, cupy.ndarray) and a.dtype == np.float32 and a.flags.c_contiguous
        np.testing.assert_allclose(cupy.asnumpy(a), b, rtol=0, atol=1e-5)
    again = device.tile_eps(sampler, *args)  # same device: same bytes
    assert all(cupy.asnumpy(x).tobytes() == cupy.asnumpy(y).tobytes()
               for x, y in zip(again, device.tile_eps(sampler, *args)))
