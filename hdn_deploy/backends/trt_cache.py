"""TensorRT engine cache: profiles, cache keys and paths, GPU identity, engine loading.

The runtime half of the TensorRT support: no torch, no onnx, and ``tensorrt`` only as an
argument (so it can be faked in tests). Building engines lives in
``hdn_deploy.export.tensorrt``, which re-exports these names.

Layout of a cache folder::

    CACHE/<gpu-slug>-sm<cc>/trt-<version>/<precision>/<graph>-<key[:16]>.engine
    CACHE/<gpu-slug>-sm<cc>/trt-<version>/<precision>/<graph>-<key[:16]>.json   (key fields)
    CACHE/<gpu-slug>-sm<cc>/trt-<version>/timing.cache

An engine is reused only when its sidecar JSON holds exactly the key fields asked for
(source ONNX sha256, GPU name and compute capability, TensorRT version, precision,
optimisation profile, compatibility mode) and TensorRT deserialises it.
"""
from __future__ import annotations

import enum
import hashlib
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..errors import BackendError, ConfigError
from ..atomic import atomic_write_bytes
from ..options import Compatibility, EnginePrecision, Graph, values
from ..package import ModelPackage

PRECISIONS = values(EnginePrecision)
COMPATIBILITY = values(Compatibility)
GRAPHS = values(Graph)
CACHE_ENV = "HDN_DEPLOY_TRT_CACHE"

Shape = tuple[int, ...]


@dataclass(frozen=True)
class EngineProfile:
    """TensorRT optimisation profile: (min, opt, max) samples per call and tile side.

    Engines accept any sample count and any tile height/width within [min, max]; they are
    tuned for ``opt``. Tiles must be multiples of the package's ``spatial_multiple``.
    ``contexts`` identical profiles are built into each engine: TensorRT lets execution
    contexts run concurrently only on distinct profiles, so this is how many threads can
    use the GPU at once (each context holds its own activation memory).
    """

    samples: tuple[int, int, int] = (1, 8, 32)
    tile: tuple[int, int, int] = (64, 256, 512)
    contexts: int = 1

    def __post_init__(self) -> None:
        contexts = self.contexts
        if isinstance(contexts, bool) or not isinstance(contexts, int) or not 1 <= contexts <= 16:
            raise ConfigError(f"profile contexts must be an integer from 1 to 16, got {contexts!r}")
        for name in ("samples", "tile"):
            value = getattr(self, name)
            try:
                triple = tuple(int(v) for v in value)
            except (TypeError, ValueError):
                triple = ()
            if (len(triple) != 3 or triple != tuple(value)
                    or not 1 <= triple[0] <= triple[1] <= triple[2]):
                raise ConfigError(
                    f"profile {name} must be three integers min <= opt <= max, all >= 1; got "
                    f"{value!r} (e.g. {name}=({', '.join(map(str, getattr(EngineProfile, name)))}))"
                )
            object.__setattr__(self, name, triple)

    def validate(self, package: ModelPackage) -> None:
        """ConfigError unless every tile side is a multiple of ``package.spatial_multiple``."""
        m = package.spatial_multiple
        if any(t % m for t in self.tile):
            raise ConfigError(
                f"profile tiles {self.tile} must be multiples of {m} (2**levels of the model "
                f"{package.path}); e.g. tile=({m}, {4 * m}, {8 * m})"
            )

    def input_shapes(self, package: ModelPackage, graph: str) -> dict[str, tuple[Shape, ...]]:
        """``{input name: (min, opt, max) shape}`` of ``graph`` ('encoder' or 'decoder')."""
        self.validate(package)
        if graph == "encoder":
            return {"image": tuple((1, 1, t, t) for t in self.tile)}
        if graph != "decoder":
            raise ConfigError(f"graph must be one of {GRAPHS}, got {graph!r}")
        shapes: dict[str, tuple[Shape, Shape, Shape]] = {}
        for lv in package.sampled_levels:
            shapes[f"bu_{lv.index}"] = tuple(
                (1, lv.feature_channels, t // lv.downsample, t // lv.downsample) for t in self.tile)
        for lv in package.sampled_levels:
            shapes[f"eps_{lv.index}"] = tuple(
                (n, lv.channels, t // lv.downsample, t // lv.downsample)
                for n, t in zip(self.samples, self.tile))
        return shapes

    def to_dict(self) -> dict[str, Any]:
        return {"samples": list(self.samples), "tile": list(self.tile), "contexts": self.contexts}


def default_cache_dir() -> Path:
    """``$HDN_DEPLOY_TRT_CACHE``, else ``$XDG_CACHE_HOME/hdn-deploy/tensorrt`` (~/.cache)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "hdn-deploy" / "tensorrt"


def check_choice(name: str, value: str | enum.Enum, choices: tuple[str, ...]) -> str:
    """``value`` (a string or an options enum member) as a string of ``choices``."""
    value = value.value if isinstance(value, enum.Enum) else value
    if value not in choices:
        raise ConfigError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value


def engine_cache_key(*, onnx_sha256: str, gpu_name: str, compute_capability: str,
                     trt_version: str, precision: str, profile: EngineProfile | dict,
                     compatibility: str) -> str:
    """sha256 (hex) of the canonical JSON of the key fields."""
    fields = key_fields(onnx_sha256=onnx_sha256, gpu_name=gpu_name,
                        compute_capability=compute_capability, trt_version=trt_version,
                        precision=precision, profile=profile, compatibility=compatibility)
    return hashlib.sha256(_canonical(fields).encode()).hexdigest()


def key_fields(*, onnx_sha256: str, gpu_name: str, compute_capability: str, trt_version: str,
               precision: str, profile: EngineProfile | dict, compatibility: str) -> dict[str, Any]:
    """The JSON-able fields an engine depends on (what the sidecar stores)."""
    check_choice("precision", precision, PRECISIONS)
    check_choice("compatibility", compatibility, COMPATIBILITY)
    profile_dict = profile.to_dict() if isinstance(profile, EngineProfile) else dict(profile)
    return {"onnx_sha256": str(onnx_sha256), "gpu_name": str(gpu_name),
            "compute_capability": str(compute_capability), "trt_version": str(trt_version),
            "precision": precision, "profile": json.loads(_canonical(profile_dict)),
            "compatibility": compatibility}


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "gpu"


def device_dir(cache_dir: str | Path, gpu_name: str, compute_capability: str,
               trt_version: str) -> Path:
    """``cache_dir/<gpu-slug>-sm<cc>/trt-<version>``: engines and the timing cache."""
    cc = str(compute_capability).replace(".", "")
    return Path(cache_dir) / f"{_slug(gpu_name)}-sm{cc}" / f"trt-{_slug(trt_version)}"


def engine_cache_path(cache_dir: str | Path, graph: str, fields: dict[str, Any]) -> Path:
    """Engine file of ``graph`` for the key ``fields`` (see :func:`key_fields`)."""
    check_choice("graph", graph, GRAPHS)
    key = engine_cache_key(**fields)
    folder = device_dir(cache_dir, fields["gpu_name"], fields["compute_capability"],
                        fields["trt_version"])
    return folder / fields["precision"] / f"{graph}-{key[:16]}.engine"


def sidecar_path(engine_path: str | Path) -> Path:
    return Path(engine_path).with_suffix(".json")


def write_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to a temporary file beside ``path``, then rename it over ``path``."""
    return atomic_write_bytes(path, data)


def write_sidecar(engine_path: str | Path, fields: dict[str, Any]) -> Path:
    record = {"key": engine_cache_key(**fields), "fields": fields}
    return write_atomic(sidecar_path(engine_path), json.dumps(record, indent=2).encode())


def cache_problem(engine_path: Path, fields: dict[str, Any]) -> str | None:
    """Why the cached engine cannot be used (None: its files are there and match)."""
    if not engine_path.is_file():
        return "no cached engine"
    if engine_path.stat().st_size == 0:
        return f"cached engine {engine_path} is empty"
    try:
        record = json.loads(sidecar_path(engine_path).read_text())
    except (OSError, ValueError):
        return f"sidecar {sidecar_path(engine_path)} is missing or unreadable"
    stored = record.get("fields") if isinstance(record, dict) else None
    if not isinstance(stored, dict):
        return f"sidecar {sidecar_path(engine_path)} holds no key fields"
    if stored != fields:
        diff = sorted(k for k in set(stored) | set(fields) if stored.get(k) != fields.get(k))
        return f"sidecar {sidecar_path(engine_path)} differs in {diff}"
    if record.get("key") != engine_cache_key(**fields):
        return f"sidecar {sidecar_path(engine_path)} holds another key"
    return None


_LOGGERS: dict[int, Any] = {}


def trt_logger(trt):
    """One ``trt.Logger`` per tensorrt module (TensorRT warns when loggers differ)."""
    if id(trt) not in _LOGGERS:
        _LOGGERS[id(trt)] = trt.Logger(trt.Logger.WARNING)
    return _LOGGERS[id(trt)]


def trt_major(trt) -> int:
    try:
        return int(str(trt.__version__).split(".")[0])
    except ValueError as exc:
        raise BackendError(f"cannot read the TensorRT version {trt.__version__!r}") from exc


def deserialize(trt, engine_path: Path, compatibility: str):
    """(runtime, engine) from an engine file; BackendError if TensorRT refuses it."""
    runtime = trt.Runtime(trt_logger(trt))
    if compatibility == "version":
        runtime.engine_host_code_allowed = True  # version-compatible plans embed a lean runtime
    try:
        engine = runtime.deserialize_cuda_engine(engine_path.read_bytes())
    except Exception as exc:  # noqa: BLE001 - TensorRT raises its own types; rebuilt by callers
        raise BackendError(f"TensorRT could not deserialise {engine_path} ({exc})") from exc
    if engine is None:
        raise BackendError(f"TensorRT could not deserialise {engine_path} (corrupt, or built "
                           "by another TensorRT version or for another GPU)")
    return runtime, engine


def load_cached(trt, engine_path: Path, fields: dict[str, Any]):
    """(runtime, engine, None) for a usable cached engine, else (None, None, reason)."""
    problem = cache_problem(engine_path, fields)
    if problem is None:
        try:
            runtime, engine = deserialize(trt, engine_path, fields["compatibility"])
            return runtime, engine, None
        except BackendError as exc:
            problem = str(exc)
    return None, None, problem


def package_fields(package: ModelPackage, graph: str, *, gpu: tuple[str, str], trt_version: str,
                   precision: str, profile: EngineProfile, compatibility: str) -> dict[str, Any]:
    """Key fields of ``graph`` of ``package`` (the source ONNX is the package's graph)."""
    check_choice("graph", graph, GRAPHS)
    return key_fields(onnx_sha256=package.manifest.graphs.entry(graph).sha256, gpu_name=gpu[0],
                      compute_capability=gpu[1], trt_version=trt_version, precision=precision,
                      profile=profile, compatibility=compatibility)


# ------------------------------------------------------------------------ GPU identity
def _from_cupy() -> tuple[str, str]:
    import cupy

    props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.runtime.getDevice())
    name = props["name"]
    name = name.decode() if isinstance(name, bytes) else str(name)
    return name, f"{props['major']}.{props['minor']}"


def _from_cuda_python() -> tuple[str, str]:
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        from cuda import cudart  # older cuda-python
    err, device = cudart.cudaGetDevice()
    if int(err) != 0:
        raise RuntimeError(f"cudaGetDevice failed ({err})")
    err, props = cudart.cudaGetDeviceProperties(device)
    if int(err) != 0:
        raise RuntimeError(f"cudaGetDeviceProperties failed ({err})")
    name = props.name
    name = name.split(b"\0")[0].decode() if isinstance(name, bytes) else str(name)
    return name, f"{props.major}.{props.minor}"


def _from_nvidia_smi() -> tuple[str, str]:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        raise RuntimeError("nvidia-smi not found")
    out = subprocess.run([exe, "--query-gpu=name,compute_cap", "--format=csv,noheader"],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    name, cc = (part.strip() for part in out.strip().splitlines()[0].rsplit(",", 1))
    return name, cc


_PROBES: tuple[tuple[str, Callable[[], tuple[str, str]]], ...] = (
    ("cupy", _from_cupy), ("cuda-python", _from_cuda_python), ("nvidia-smi", _from_nvidia_smi))


def gpu_identity() -> tuple[str, str]:
    """(name, compute capability such as '9.0') of the current CUDA device.

    Tries cupy, then cuda-python, then ``nvidia-smi`` (first GPU listed).

    Raises
    ------
    BackendError
        If none of them finds a GPU.
    """
    failures = []
    for label, probe in _PROBES:
        try:
            name, cc = probe()
        except Exception as exc:  # noqa: BLE001 - each probe may fail in its own way
            failures.append(f"{label}: {exc}")
            continue
        if name and re.fullmatch(r"\d+\.\d+", cc):
            return name, cc
        failures.append(f"{label}: unexpected answer {(name, cc)!r}")
    raise BackendError("no NVIDIA GPU found for TensorRT (" + "; ".join(failures) + "); "
                       "check the driver with `nvidia-smi`")
