"""One contract test class run against every backend (like onnxruntime's provider tests).

``cpu`` runs everywhere; ``cuda`` and ``ort-tensorrt`` need onnxruntime-gpu and a GPU,
``tensorrt`` needs the tensorrt and cupy packages and a GPU: elsewhere they are skipped
with the reason. On this project's CPU machines only ``cpu`` has run; the GPU rows are
untested until ``benchmarks/gpu_suite.py`` has run on a GPU.
"""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from hdn_deploy.backends import create_backend
from hdn_deploy.backends.base import EpsSpec, Features
from hdn_deploy.errors import BackendError
from hdn_deploy.latents import LatentSampler
from hdn_deploy.package import load_package

# Tolerance against the CPU backend: TensorRT FP32 uses TF32 kernels (see
# tests/export/test_tensorrt_cpu.py); device latents differ from numpy's by float32
# rounding of log/cos/sin only.
TOLERANCE = {"cuda": 1e-3, "ort-tensorrt": 1e-2, "tensorrt": 1e-2}


def _ort_provider(provider: str) -> str | None:
    if importlib.util.find_spec("onnxruntime") is None:
        return "onnxruntime is not installed"
    import onnxruntime

    if provider not in onnxruntime.get_available_providers():
        return f"onnxruntime has no {provider} here (needs onnxruntime-gpu and an NVIDIA GPU)"
    return None


def _tensorrt() -> str | None:
    missing = [m for m in ("tensorrt", "cupy") if importlib.util.find_spec(m) is None]
    if missing:
        return f"needs {' and '.join(missing)} and an NVIDIA GPU"
    return None


def _skip_reason(name: str) -> str | None:
    return {"cpu": lambda: _ort_provider("CPUExecutionProvider"),
            "cuda": lambda: _ort_provider("CUDAExecutionProvider"),
            "ort-tensorrt": lambda: _ort_provider("TensorrtExecutionProvider"),
            "tensorrt": _tensorrt}[name]()


def _param(name: str):
    reason = _skip_reason(name)
    marks = [] if name == "cpu" else [pytest.mark.gpu]
    if reason:
        marks.append(pytest.mark.skip(reason=f"{name}: {reason}"))
    return pytest.param(name, marks=marks, id=name)


@pytest.fixture(scope="module")
def package(tiny_package):
    return load_package(tiny_package)


@pytest.fixture(scope="module")
def cpu(package):
    with create_backend("cpu", package, threads=1) as backend:
        yield backend


@pytest.fixture(scope="module", params=[_param(n) for n in ("cpu", "cuda", "ort-tensorrt", "tensorrt")])
def backend(request, package, tmp_path_factory):
    options = {"threads": 1}
    if request.param == "tensorrt":
        from hdn_deploy.export.tensorrt import EngineProfile

        options.update(profile=EngineProfile(samples=(1, 2, 4), tile=(16, 32, 64)),
                       cache_dir=tmp_path_factory.mktemp("engines"), precision="fp32")
    with create_backend(request.param, package, **options) as made:
        made.contract_name = request.param
        yield made


def _image(seed=0, shape=(32, 48)):
    return np.random.default_rng(seed).standard_normal((1, 1, *shape), dtype=np.float32)


def _spec(samples=(0, 1, 2), seed=3, mode="mc", y0=16, x0=8):
    return EpsSpec(LatentSampler(seed, mode=mode), tuple(samples), y0, x0)


class TestBackendContract:
    def test_encode_returns_an_owned_handle(self, backend, package):
        features = backend.encode(_image())
        assert isinstance(features, Features) and features.owner is backend
        assert (features.height, features.width) == (32, 48)
        filters = package.manifest.model_config["n_filters"]
        host = features.to_host()
        assert [a.shape for a in host] == [(1, filters, 32 // lv.downsample, 48 // lv.downsample)
                                           for lv in package.sampled_levels]
        assert all(type(a) is np.ndarray and a.dtype == np.float32 for a in host)

    def test_samples_shape_dtype_and_spec_equals_given_eps(self, backend, package):
        features = backend.encode(_image())
        spec = _spec()
        from_spec = backend.decode_samples(features, spec)
        assert from_spec.shape == (3, 1, 32, 48) and from_spec.dtype == np.float32
        levels = [(lv.index, lv.channels) for lv in package.sampled_levels]
        eps = spec.sampler.tile_eps(spec.samples, levels, spec.y0, spec.x0, 32, 48)
        given = backend.decode_samples(features, eps)
        atol = 1e-5 if backend.contract_name == "cpu" else 1e-3  # device latents: float32 rounding
        np.testing.assert_allclose(from_spec, given, rtol=0, atol=atol)

    def test_moments_match_the_samples_and_only_they_come_back(self, backend):
        features = backend.encode(_image(1))
        samples = backend.decode_samples(features, _spec(range(5)))[:, 0].astype(np.float64)
        moments = backend.moments((32, 48), keep=2)
        backend.decode(features, _spec(range(5)), moments)
        host = moments.to_host()
        assert host.count == 5 and host.samples.shape == (2, 32, 48)
        assert host.mean.dtype == np.float64 and host.samples.dtype == np.float32
        np.testing.assert_allclose(host.mean, samples.mean(axis=0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(host.variance, samples.var(axis=0), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(host.samples, samples[:2], rtol=1e-6)

    def test_deterministic_and_batching_does_not_change_a_bit(self, backend):
        features = backend.encode(_image(2))
        runs = []
        for batches in ([range(0, 4)], [range(0, 4)], [range(0, 1), range(1, 4)]):
            moments = backend.moments((32, 48))
            for batch in batches:
                backend.decode(features, _spec(batch, mode="antithetic"), moments)
            runs.append(moments.to_host())
        assert runs[0].mean.tobytes() == runs[1].mean.tobytes()
        if backend.contract_name == "cpu":  # GPU kernels may pick batch-size dependent tactics
            assert runs[0].mean.tobytes() == runs[2].mean.tobytes()
            assert runs[0].variance.tobytes() == runs[2].variance.tobytes()
        else:
            np.testing.assert_allclose(runs[0].mean, runs[2].mean, rtol=0, atol=1e-4)

    def test_equivalent_to_the_cpu_backend(self, backend, cpu):
        if backend.contract_name == "cpu":
            pytest.skip("the CPU backend is the reference of this comparison")
        image, spec = _image(4), _spec(range(4))
        want = cpu.decode_samples(cpu.encode(image), spec)
        got = backend.decode_samples(backend.encode(image), spec)
        tol = TOLERANCE[backend.contract_name]
        assert np.abs(got - want).max() <= tol * max(1.0, float(np.abs(want).max()))

    def test_rejects_foreign_features_and_wrong_inputs(self, backend, cpu, package):
        if backend is not cpu:
            foreign = cpu.encode(_image())
        else:
            with create_backend("cpu", package, threads=1) as other:
                foreign = other.encode(_image())
        with pytest.raises(BackendError, match="Features returned by this backend"):
            backend.decode_samples(foreign, _spec())
        features = backend.encode(_image())
        with pytest.raises(BackendError, match="eps arrays"):
            backend.decode_samples(features, [np.zeros((1, 4, 16, 24), np.float32)])
        wrong = [np.zeros((1, lv.channels, 8, 8), np.float32) for lv in package.sampled_levels]
        with pytest.raises(BackendError, match="expected"):
            backend.decode_samples(features, wrong)
        with pytest.raises(BackendError, match="multiples"):
            backend.encode(np.zeros((1, 1, 30, 48), np.float32))
