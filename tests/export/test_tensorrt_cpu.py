"""TensorRT engines and backend on the CPU: a fake ``tensorrt`` (and ``cupy``) module tree
records what hdn-deploy asks of TensorRT; real-GPU tests at the end are marked and skipped
where ``tensorrt``/``cupy`` are missing."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap
import threading
import warnings
from pathlib import Path
from types import ModuleType, SimpleNamespace

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from conftest import TINY_ARCH

from hdn_deploy.backends import Backend, create_backend, trt_cache
from hdn_deploy.backends.tensorrt import TensorRTBackend
from hdn_deploy.denoiser import Denoiser
from hdn_deploy.errors import BackendError, ConfigError, MissingDependencyError
from hdn_deploy.export import tensorrt as trt_export
from hdn_deploy.export.tensorrt import EngineProfile, engine_cache_key, engines_for_package
from hdn_deploy.package import load_package

GPU = ("NVIDIA Fake GPU 80GB", "9.0")
TINY_PROFILE = EngineProfile(samples=(1, 2, 3), tile=(16, 32, 64))  # tiny package: multiple 8


# ------------------------------------------------------------------------------ fakes
class FakeCupy(ModuleType):
    """Host arrays posing as device arrays: ``.data.ptr`` is the real address."""

    float32, float64 = np.float32, np.float64

    class DevArray(np.ndarray):
        @property
        def data(self):
            ptr = self.__array_interface__["data"][0]
            FakeCupy.memory[ptr] = self
            return SimpleNamespace(ptr=ptr)

        def get(self, stream=None):
            return np.array(self)

    memory: dict = {}
    streams: dict = {}

    class Stream:
        def __init__(self, non_blocking=False):
            self.ptr, self.captured = id(self), None
            FakeCupy.streams[self.ptr] = self

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return None

        def synchronize(self):
            pass

        def begin_capture(self):
            self.captured = []

        def end_capture(self):
            work, self.captured = self.captured, None
            return SimpleNamespace(launch=lambda stream=None: [step() for step in work])

    def __init__(self):
        super().__init__("cupy")
        self.cuda = SimpleNamespace(Stream=FakeCupy.Stream)

    def _dev(self, a):
        return np.ascontiguousarray(a, np.float32).copy().view(FakeCupy.DevArray)

    asarray = ascontiguousarray = lambda self, a, dtype=None: self._dev(a)  # noqa: E731
    empty = lambda self, shape, dtype=np.float32: np.empty(shape, dtype).view(FakeCupy.DevArray)  # noqa: E731
    zeros = lambda self, shape, dtype=np.float32: np.zeros(shape, dtype).view(FakeCupy.DevArray)  # noqa: E731
    subtract, divide = staticmethod(np.subtract), staticmethod(np.divide)
    empty_like = lambda self, a: self.empty(a.shape)  # noqa: E731
    concatenate = lambda self, arrays: self._dev(np.concatenate(arrays))  # noqa: E731


def _encoder_math(image, channels):
    """The fake encoder: bu_i[0, c] = (c + 1) * avg-pool of the image by 2**(i+1)."""
    out = {}
    for name, (c, d) in channels.items():
        _, _, h, w = image.shape
        pooled = image[0, 0].reshape(h // d, d, w // d, d).mean(axis=(1, 3))
        out[name] = (np.arange(1, c + 1, dtype=np.float32)[:, None, None] * pooled)[None]
    return out


def _decoder_math(feed, levels):
    """The fake decoder: sum over levels of the upsampled bu channel 0 + eps channel sum."""
    total = 0
    for i in levels:
        d = 2 ** (i + 1)
        z = feed[f"bu_{i}"][:, :1] + feed[f"eps_{i}"].sum(axis=1, keepdims=True)
        total = total + z.repeat(d, axis=2).repeat(d, axis=3)
    return total.astype(np.float32)


class FakeContext:
    def __init__(self, spec):
        self.spec, self.shapes, self.addresses, self.profile = spec, {}, {}, 0

    def set_optimization_profile_async(self, index, stream_ptr):
        self.profile = index
        return index < len(self.spec["profiles"])

    def set_input_shape(self, name, shape):
        self.shapes[name] = tuple(shape)
        return True

    def set_tensor_address(self, name, ptr):
        self.addresses[name] = ptr

    def get_tensor_shape(self, name):
        if name == "samples":
            n = next(s[0] for k, s in self.shapes.items() if k.startswith("eps_"))
            return (n, 1, *self._decoded_hw())
        c, d = self.spec["outputs"][name]
        _, _, h, w = self.shapes["image"]
        return (1, c, h // d, w // d)

    def _decoded_hw(self):
        name = next(k for k in self.shapes if k.startswith("bu_"))
        d = 2 ** (int(name.split("_")[1]) + 1)
        return self.shapes[name][2] * d, self.shapes[name][3] * d

    def execute_async_v3(self, stream_ptr):
        bound = {n: FakeCupy.memory[p] for n, p in self.addresses.items()}

        def run():
            feed = {n: np.asarray(bound[n]) for n in self.spec["inputs"]}
            if "image" in feed:
                result = _encoder_math(feed["image"], self.spec["outputs"])
            else:
                levels = sorted(int(n.split("_")[1]) for n in feed if n.startswith("eps_"))
                result = {"samples": _decoder_math(feed, levels)}
            for name, value in result.items():
                bound[name][...] = value

        stream = FakeCupy.streams[stream_ptr]
        (stream.captured.append(run) if stream.captured is not None else run())
        return True


class FakeEngine:
    def __init__(self, spec, counter):
        self.spec, self.counter = spec, counter
        self.names = spec["inputs"] + list(spec["outputs"])
        self.num_io_tensors = len(self.names)
        self.num_optimization_profiles = len(spec["profiles"])

    def get_tensor_name(self, i):
        return self.names[i]

    def get_tensor_mode(self, name):
        return "in" if name in self.spec["inputs"] else "out"

    def get_tensor_dtype(self, name):
        return "float"

    def create_execution_context(self):
        self.counter.append(FakeContext(self.spec))
        return self.counter[-1]


def fake_trt(version="10.3.0", deserialize="ok"):
    """A recording stand-in for the ``tensorrt`` module (TRT >= 11 lacks FP16/BF16 flags)."""
    trt = ModuleType("tensorrt")
    trt.__version__ = version
    trt.log = log = {"builds": [], "contexts": [], "deserialize": deserialize}
    flags = {"VERSION_COMPATIBLE": "version_compatible"}
    if version.startswith("10."):
        flags.update(FP16="fp16", BF16="bf16")
    trt.BuilderFlag = SimpleNamespace(**flags)
    trt.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None})
    trt.NetworkDefinitionCreationFlag = SimpleNamespace(STRONGLY_TYPED=5)
    trt.MemoryPoolType = SimpleNamespace(WORKSPACE="workspace")
    trt.HardwareCompatibilityLevel = SimpleNamespace(AMPERE_PLUS="ampere_plus")
    trt.TensorIOMode = SimpleNamespace(INPUT="in", OUTPUT="out")
    trt.DataType = SimpleNamespace(FLOAT="float")

    class Network(SimpleNamespace):
        get_input = lambda self, i: SimpleNamespace(name=self.inputs[i])  # noqa: E731
        num_inputs = property(lambda self: len(self.inputs))

    class Parser:
        def __init__(self, network, logger):
            self.network, self.num_errors = network, 0

        def parse_from_file(self, path):
            model = onnx.load(path)
            fp16 = any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)
            self.network.__dict__.update(
                onnx=path, fp16_onnx=fp16, inputs=[i.name for i in model.graph.input],
                outputs={o.name: (TINY_ARCH["n_filters"], 2 ** (int(o.name.split("_")[1]) + 1))
                         if o.name.startswith("bu_") else (1, 1) for o in model.graph.output})
            return True

    class Config(SimpleNamespace):
        def __init__(self):
            super().__init__(flags=[], profiles=[], pools={}, timing=None,
                             hardware_compatibility_level=None)

        set_flag = lambda self, f: self.flags.append(f)  # noqa: E731
        set_memory_pool_limit = lambda self, pool, size: self.pools.update({pool: size})  # noqa: E731
        add_optimization_profile = lambda self, p: self.profiles.append(p.shapes)  # noqa: E731
        create_timing_cache = lambda self, data: SimpleNamespace(serialize=lambda: bytes(data) + b"t")  # noqa: E731

        def set_timing_cache(self, cache, ignore_mismatch):
            self.timing = cache

        get_timing_cache = lambda self: self.timing  # noqa: E731

    class Builder:
        def __init__(self, logger):
            pass

        create_network = lambda self, flags: Network(flags=flags)  # noqa: E731
        create_builder_config = lambda self: Config()  # noqa: E731

        def create_optimization_profile(self):
            profile = SimpleNamespace(shapes={})
            profile.set_shape = lambda name, lo, opt, hi: profile.shapes.update({name: (lo, opt, hi)})
            return profile

        def build_serialized_network(self, network, config):
            record = dict(onnx=network.onnx, fp16_onnx=network.fp16_onnx, flags=config.flags,
                          network_flags=network.flags, profiles=config.profiles,
                          inputs=network.inputs, outputs=network.outputs,
                          hardware=config.hardware_compatibility_level)
            log["builds"].append(record)
            return b"FAKE" + json.dumps(record).encode()

    class Runtime:
        def __init__(self, logger):
            self.engine_host_code_allowed = False

        def deserialize_cuda_engine(self, data):
            if log["deserialize"] == "raise":
                raise RuntimeError("engine plan is garbage")
            if log["deserialize"] == "none" or not data.startswith(b"FAKE"):
                return None
            return FakeEngine(json.loads(data[4:]), log["contexts"])

    trt.Builder, trt.OnnxParser, trt.Runtime = Builder, Parser, Runtime
    return trt


def _build(package, tmp_path, trt, messages=None, **options):
    options = {"precision": "fp16", "profile": TINY_PROFILE, **options}
    return engines_for_package(package, cache_dir=tmp_path / "cache", trt=trt, gpu=GPU,
                               log=(messages if messages is not None else []).append, **options)


# ------------------------------------------------------------------------------ tests
def test_profile_shapes_follow_the_manifest(tiny_package):
    package = load_package(tiny_package)
    levels = package.sampled_levels
    assert trt_cache.EngineProfile().tile == (64, 256, 512)
    enc = TINY_PROFILE.input_shapes(package, "encoder")
    assert enc == {"image": ((1, 1, 16, 16), (1, 1, 32, 32), (1, 1, 64, 64))}
    dec = TINY_PROFILE.input_shapes(package, "decoder")
    assert set(dec) == {f"{k}_{lv.index}" for k in ("bu", "eps") for lv in levels}
    for lv in levels:
        d, filters = lv.downsample, lv.feature_channels
        assert dec[f"bu_{lv.index}"] == tuple((1, filters, t // d, t // d) for t in (16, 32, 64))
        assert dec[f"eps_{lv.index}"] == tuple((n, lv.channels, t // d, t // d)
                                               for n, t in ((1, 16), (2, 32), (3, 64)))


@pytest.mark.parametrize("kwargs", [dict(samples=(8, 1, 32)), dict(samples=(0, 1, 2)),
                                    dict(tile=(64, 256)), dict(tile="64,256,512"),
                                    dict(samples=(1, 2.5, 4))])
def test_invalid_profiles_raise(kwargs):
    with pytest.raises(ConfigError, match="min <= opt <= max"):
        EngineProfile(**kwargs)


def test_tiles_must_be_multiples_of_the_package(tiny_package):
    with pytest.raises(ConfigError, match="multiples of 8"):
        EngineProfile(tile=(12, 32, 64)).input_shapes(load_package(tiny_package), "encoder")


def test_cache_key_changes_with_every_field_and_only_then(tmp_path):
    base = dict(onnx_sha256="a" * 64, gpu_name=GPU[0], compute_capability="9.0",
                trt_version="10.3.0", precision="fp16", profile=EngineProfile(),
                compatibility="none")
    key = engine_cache_key(**base)
    assert key == engine_cache_key(**dict(base, profile=EngineProfile((1, 8, 32), [64, 256, 512])))
    changes = dict(onnx_sha256="b" * 64, gpu_name="NVIDIA A100", compute_capability="8.0",
                   trt_version="10.4.0", precision="fp32", profile=EngineProfile(samples=(1, 4, 32)),
                   compatibility="hardware")
    keys = {engine_cache_key(**dict(base, **{k: v})) for k, v in changes.items()}
    assert len(keys) == len(changes) and key not in keys and len(key) == 64
    path = trt_cache.engine_cache_path(tmp_path, "decoder", trt_cache.key_fields(**base))
    assert path == tmp_path / "nvidia-fake-gpu-80gb-sm90" / "trt-10-3-0" / "fp16" / f"decoder-{key[:16]}.engine"


def test_trt10_fp16_sets_the_flag_on_the_fp32_onnx(tiny_package, tmp_path):
    trt = fake_trt("10.3.0")
    package = load_package(tiny_package)
    engines = _build(tiny_package, tmp_path, trt, workspace_bytes=1 << 20)
    assert [b["flags"] for b in trt.log["builds"]] == [["fp16"], ["fp16"]]
    assert [b["network_flags"] for b in trt.log["builds"]] == [0, 0]
    assert [b["onnx"] for b in trt.log["builds"]] == [str(package.encoder_path), str(package.decoder_path)]
    assert trt.log["builds"][1]["profiles"] == [TINY_PROFILE.input_shapes(package, "decoder")]
    for graph, path in engines.items():
        assert path.read_bytes().startswith(b"FAKE") and path.name.startswith(graph)
        assert json.loads(path.with_suffix(".json").read_text())["fields"]["trt_version"] == "10.3.0"
    assert (engines["encoder"].parents[1] / "timing.cache").read_bytes() == b"tt"  # read, extended twice


def test_trt11_fp16_builds_strongly_typed_from_an_fp16_onnx(tiny_package, tmp_path):
    trt = fake_trt("11.1.0")  # BuilderFlag.FP16 / BF16 do not exist: using them would raise
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _build(tiny_package, tmp_path, trt, compatibility="hardware")
    for build in trt.log["builds"]:
        assert build["flags"] == [] and build["network_flags"] == 1 << 5
        assert build["fp16_onnx"] and build["onnx"].startswith(str(tmp_path / "cache" / "onnx"))
        assert build["hardware"] == "ampere_plus"


def test_bf16_on_trt11_is_a_clear_error(tiny_package, tmp_path):
    with pytest.raises(ConfigError, match="bf16 engines are not supported with TensorRT 11"):
        _build(tiny_package, tmp_path, fake_trt("11.0.0"), precision="bf16")


def test_second_call_uses_the_cache(tiny_package, tmp_path):
    trt = fake_trt()
    first = _build(tiny_package, tmp_path, trt)
    messages = []
    assert _build(tiny_package, tmp_path, trt, messages) == first
    assert len(trt.log["builds"]) == 2 and messages == []
    _build(tiny_package, tmp_path, trt, precision="fp32")  # another precision: new engines
    assert len(trt.log["builds"]) == 4


@pytest.mark.parametrize("damage", ["garbage", "empty", "none", "raise", "sidecar", "no-sidecar"])
def test_bad_cached_engines_are_rebuilt_with_a_message(tiny_package, tmp_path, damage):
    trt = fake_trt()
    engine = _build(tiny_package, tmp_path, trt)["decoder"]
    sidecar = engine.with_suffix(".json")
    if damage in ("garbage", "empty"):
        engine.write_bytes(b"" if damage == "empty" else b"\x00garbage")
    elif damage in ("none", "raise"):
        trt.log["deserialize"] = damage
    elif damage == "sidecar":
        record = json.loads(sidecar.read_text())
        record["fields"]["trt_version"] = "10.0.0"
        sidecar.write_text(json.dumps(record))
    else:
        sidecar.unlink()
    messages = []
    if damage in ("none", "raise"):  # every cached engine is unreadable: both are rebuilt
        _build(tiny_package, tmp_path, trt, messages)
        assert len(trt.log["builds"]) == 4 and len(messages) == 2
    else:
        _build(tiny_package, tmp_path, trt, messages)
        assert len(trt.log["builds"]) == 3 and len(messages) == 1
        assert engine.read_bytes().startswith(b"FAKE") and "decoder" in messages[0]
    assert "building TensorRT fp16" in messages[0]


def test_create_backend_without_tensorrt_names_the_extra(tiny_package, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'hdn-deploy\[tensorrt\]'"):
        create_backend("tensorrt", load_package(tiny_package))


@pytest.mark.parametrize("cuda_graphs", [False, True])
def test_backend_binds_runs_and_splits_batches(tiny_package, tmp_path, cuda_graphs):
    trt, package = fake_trt(), load_package(tiny_package)
    backend = TensorRTBackend(package, cache_dir=tmp_path, profile=TINY_PROFILE, trt=trt,
                              cupy=FakeCupy(), gpu=GPU, cuda_graphs=cuda_graphs, log=[].append)
    rng = np.random.default_rng(0)
    image = rng.standard_normal((1, 1, 32, 48), dtype=np.float32)
    features = backend.encode(image)
    assert all(isinstance(a, FakeCupy.DevArray) for a in features.arrays)  # stay on the device
    channels = {f"bu_{lv.index}": (lv.feature_channels, lv.downsample)
                for lv in package.sampled_levels}
    expected = _encoder_math(image, channels)
    for name, got in zip(expected, features.arrays):
        np.testing.assert_allclose(got, expected[name], rtol=1e-6)
    for n in (1, 5):  # 5 > profile max 3: two decoder calls
        eps = [rng.standard_normal((n, lv.channels, 32 // lv.downsample, 48 // lv.downsample),
                                   dtype=np.float32) for lv in package.sampled_levels]
        out = backend.decode_samples(features, eps)
        assert type(out) is np.ndarray  # copied to the host
        feed = {**dict(zip(channels, features.arrays)),
                **{f"eps_{lv.index}": e for lv, e in zip(package.sampled_levels, eps)}}
        np.testing.assert_allclose(out, _decoder_math(feed, backend.levels), rtol=1e-5)
        moments = backend.moments((32, 48))  # moments live on the device
        backend.decode(features, eps, moments)
        assert isinstance(moments.to_host().mean, np.ndarray) and moments.count == n
        np.testing.assert_allclose(moments.to_host().mean, out[:, 0].mean(axis=0), rtol=1e-5)
    with pytest.raises(BackendError, match="outside the TensorRT engine profile"):
        backend.encode(np.zeros((1, 1, 8, 32), np.float32))
    assert backend.describe()["name"] == "tensorrt"
    backend.close()
    with pytest.raises(BackendError, match="closed"):
        backend.encode(image)


def test_backend_contexts_use_distinct_profiles_across_threads(tiny_package, tmp_path):
    trt, package = fake_trt(), load_package(tiny_package)
    profile = EngineProfile(samples=(1, 2, 3), tile=(16, 32, 64), contexts=2)
    backend = TensorRTBackend(package, cache_dir=tmp_path, profile=profile, trt=trt,
                              cupy=FakeCupy(), gpu=GPU, log=[].append)
    assert [len(b["profiles"]) for b in trt.log["builds"]] == [2, 2]
    assert sorted(c.profile for c in trt.log["contexts"]) == [0, 0, 1, 1]  # encoder + decoder
    rng = np.random.default_rng(2)
    images = [rng.standard_normal((1, 1, 32, 32), dtype=np.float32) for _ in range(6)]
    serial = [backend.encode(im).arrays[0] for im in images]
    results = {}
    workers = [threading.Thread(target=lambda k=k: results.update({k: backend.encode(images[k]).arrays[0]}))
               for k in range(6)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    for k in range(6):
        np.testing.assert_array_equal(results[k], serial[k])
    with pytest.raises(ConfigError, match="contexts"):
        EngineProfile(contexts=0)


class NumpyFakeModel(Backend):
    """The fake engines' arithmetic as a plain backend: what the Denoiser should see."""

    def _encode(self, image):
        channels = {f"bu_{lv.index}": (lv.feature_channels, lv.downsample)
                    for lv in self.package.sampled_levels}
        return list(_encoder_math(image, channels).values())

    def _decode(self, features, eps):
        feed = {**{f"bu_{i}": f for i, f in zip(self.levels, features)},
                **{f"eps_{i}": e for i, e in zip(self.levels, eps)}}
        return _decoder_math(feed, self.levels)


def test_denoiser_on_the_backend_matches_a_plain_backend(tiny_package, tmp_path):
    package = load_package(tiny_package)
    image = np.random.default_rng(3).normal(100, 20, (40, 56)).astype(np.float32)
    options = dict(n_samples=5, seed=2, tile=32, overlap=8, batch_size=4)
    backend = TensorRTBackend(package, cache_dir=tmp_path, profile=TINY_PROFILE, trt=fake_trt(),
                              cupy=FakeCupy(), gpu=GPU, log=[].append, latents="host")
    got = Denoiser(package, backend=backend).denoise(image, **options)
    want = Denoiser(package, backend=NumpyFakeModel(package)).denoise(image, **options)
    np.testing.assert_allclose(got.mmse, want.mmse, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(got.std, want.std, rtol=1e-4, atol=1e-3)


def test_old_tensorrt_and_missing_export_tools_are_clear(tiny_package, tmp_path, monkeypatch):
    with pytest.raises(BackendError, match="too old"):
        trt_export.build_engine(tmp_path / "x.onnx", tmp_path / "x.engine", shapes={},
                                trt=fake_trt("8.6.1"))
    monkeypatch.setitem(sys.modules, "hdn_deploy.export.tensorrt", None)
    with pytest.raises(MissingDependencyError, match="hdn-deploy build-engine"):
        TensorRTBackend(load_package(tiny_package), cache_dir=tmp_path, trt=fake_trt(),
                        cupy=FakeCupy(), gpu=GPU, profile=TINY_PROFILE)


def test_backend_without_cached_engines_and_no_build_says_how(tiny_package, tmp_path):
    with pytest.raises(BackendError, match="hdn-deploy build-engine"):
        TensorRTBackend(load_package(tiny_package), cache_dir=tmp_path, trt=fake_trt(),
                        cupy=FakeCupy(), gpu=GPU, profile=TINY_PROFILE, build=False)


def test_cli_build_engine(tiny_package, tmp_path, monkeypatch):
    from hdn_deploy.cli.main import main

    trt = fake_trt()
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(trt_export, "gpu_identity", lambda: GPU)
    args = ["build-engine", str(tiny_package), "--samples", "1,2,3", "--tile", "16,32,64",
            "--cache-dir", str(tmp_path)]
    for builds in (2, 2):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
        assert len(trt.log["builds"]) == builds and "decoder: " in result.output
    result = CliRunner().invoke(main, [*args[:3], "1,2"])
    assert result.exit_code == 2 and "three comma-separated integers" in result.output


def test_gpu_identity_probes(monkeypatch):
    monkeypatch.setattr(trt_cache.shutil, "which", lambda exe: "/usr/bin/nvidia-smi")
    monkeypatch.setattr(trt_cache.subprocess, "run", lambda *a, **k: SimpleNamespace(
        stdout="NVIDIA H100 80GB HBM3, 9.0\nNVIDIA H100 80GB HBM3, 9.0\n"))
    assert trt_cache._from_nvidia_smi() == ("NVIDIA H100 80GB HBM3", "9.0")
    monkeypatch.setattr(trt_cache, "_PROBES", (("x", lambda: (_ for _ in ()).throw(OSError("no"))),))
    with pytest.raises(BackendError, match="no NVIDIA GPU found"):
        trt_cache.gpu_identity()


def test_tensorrt_modules_import_without_torch(tmp_path):
    script = textwrap.dedent(f"""
        import sys, types
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch."):
                    raise ImportError("blocked")
        sys.meta_path.insert(0, Block())
        import hdn_deploy.backends.tensorrt
        pkg = types.ModuleType("hdn_deploy.export")  # skip export/__init__ (it imports torch)
        pkg.__path__ = [{str(trt_export.__file__.rsplit('/', 1)[0])!r}]
        sys.modules["hdn_deploy.export"] = pkg
        import hdn_deploy.export.tensorrt
        assert not [m for m in sys.modules if m.split(".")[0] in ("torch", "tensorrt", "cupy")]
        print("OK")
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "OK", proc.stderr


def test_gpu_suite_dry_run_plans_and_says_what_is_missing(tmp_path):
    script = Path(trt_export.__file__).resolve().parents[1] / "benchmarks" / "gpu_suite.py"
    proc = subprocess.run([sys.executable, str(script), "--dry-run", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "gpu_suite_plan.json").read_text())
    assert set(result["plan"]) >= {"gpu_tests", "device_sampler", "reference", "tensorrt",
                                   "torch_backend", "ort_cuda", "ort_cpu"}
    for name, step in result["plan"].items():
        assert step["runs"] or step["reason"], name  # every skipped step says why


# ------------------------------------------------------------------- real GPU tests
_HAVE = {m: importlib.util.find_spec(m) is not None for m in ("tensorrt", "cupy")}
needs_trt = pytest.mark.skipif(not (_HAVE["tensorrt"] and _HAVE["cupy"]),
                               reason="needs the tensorrt and cupy packages and an NVIDIA GPU")


@pytest.mark.gpu
@pytest.mark.tensorrt
@needs_trt
@pytest.mark.parametrize("precision,tol", [("fp32", 1e-2), ("fp16", 5e-2)])  # fp32: TF32 kernels
def test_real_engines_match_onnxruntime(tiny_package, tmp_path, precision, tol):
    package = load_package(tiny_package)
    rng = np.random.default_rng(1)
    image = rng.standard_normal((1, 1, 32, 48), dtype=np.float32)
    eps = [rng.standard_normal((5, lv.channels, 32 // lv.downsample, 48 // lv.downsample),
                               dtype=np.float32) for lv in package.sampled_levels]
    cpu = create_backend("cpu", package, threads=1)
    want = cpu.decode_samples(cpu.encode(image), eps)
    for cuda_graphs in (False, True):  # the second backend loads the cached engines
        messages = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            gpu = TensorRTBackend(package, cache_dir=tmp_path, precision=precision,
                                  profile=TINY_PROFILE, cuda_graphs=cuda_graphs,
                                  log=messages.append)
        assert bool(messages) != cuda_graphs  # built once, then reused from the cache
        for _ in range(2):  # CUDA graphs: capture, then replay
            got = gpu.decode_samples(gpu.encode(image), eps)
            assert np.abs(got - want).max() <= tol * max(1.0, np.abs(want).max())
        gpu.close()


@pytest.mark.gpu
@pytest.mark.skipif(not _HAVE["cupy"], reason="needs cupy and an NVIDIA GPU")
def test_real_gpu_identity():
    name, cc = trt_cache.gpu_identity()
    assert name and float(cc) >= 3.0
