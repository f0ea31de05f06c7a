"""Model package ONNX -> TensorRT engines, cached per GPU, TensorRT version and settings.

Precision by TensorRT major version:

- **TensorRT 10**: the package's FP32 ONNX with the ``FP16``/``BF16`` builder flag (weak
  typing: TensorRT picks per layer). The export clamps posterior log-variances (default
  4), so ``exp(logvar / 2)`` cannot overflow FP16 there.
- **TensorRT >= 11**: no precision flags exist (networks are always strongly typed), so
  the precision must be in the ONNX: FP16 engines are built from an FP16 copy made with
  :func:`hdn_deploy.export.precision.fp16_graph` (FP32 I/O and FP32 reparameterisation),
  written once into the cache folder. BF16 is not supported there yet.

Importing this module needs neither torch nor tensorrt; ``tensorrt`` is passed in (or
imported lazily), so tests run it against a fake module.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

from hdn_deploy._optional import require
from hdn_deploy.backends.trt_cache import (
    COMPATIBILITY,
    GRAPHS,
    PRECISIONS,
    EngineProfile,
    cache_problem,
    check_choice,
    default_cache_dir,
    deserialize,
    device_dir,
    engine_cache_key,
    engine_cache_path,
    gpu_identity,
    package_fields,
    trt_logger,
    trt_major,
    write_atomic,
    write_sidecar,
)
from hdn_deploy.errors import BackendError, ConfigError
from hdn_deploy.atomic import atomic_path
from hdn_deploy.package import ModelPackage, load_package

__all__ = ["EngineProfile", "engine_cache_key", "engine_cache_path", "build_engine",
           "engines_for_package", "gpu_identity", "default_cache_dir", "PRECISIONS",
           "COMPATIBILITY"]

_LOG = logging.getLogger("hdn_deploy.tensorrt")
Shapes = dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]


def _tensorrt(trt):
    return trt if trt is not None else require("tensorrt", purpose="building TensorRT engines",
                                               extra="tensorrt")


def _parse(trt, network, logger, onnx_path: Path) -> set[str]:
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise BackendError(f"TensorRT could not parse {onnx_path}: "
                           + ("; ".join(errors) or "no details"))
    return {network.get_input(i).name for i in range(network.num_inputs)}


def _configure(trt, builder, config, *, precision: str, compatibility: str, major: int,
               shapes: Shapes, profiles: int, workspace_bytes: int | None) -> None:
    if workspace_bytes:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_bytes))
    if major == 10 and precision != "fp32":
        config.set_flag(trt.BuilderFlag.FP16 if precision == "fp16" else trt.BuilderFlag.BF16)
    if compatibility == "hardware":
        config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS
    elif compatibility == "version":
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    for _ in range(profiles):  # identical copies: one per concurrent execution context
        profile = builder.create_optimization_profile()
        for name, (low, opt, high) in shapes.items():
            profile.set_shape(name, low, opt, high)
        config.add_optimization_profile(profile)


def _timing_cache(config, path: Path | None, log: Callable[[str], None]):
    data = b""
    if path is not None and path.is_file():
        data = path.read_bytes()
    try:
        cache = config.create_timing_cache(data)
    except Exception as exc:  # noqa: BLE001 - a bad timing cache only costs build time
        log(f"ignoring unreadable TensorRT timing cache {path} ({exc})")
        cache = config.create_timing_cache(b"")
    config.set_timing_cache(cache, False)


def build_engine(onnx_path: str | Path, engine_path: str | Path, *, shapes: Shapes,
                 precision: str = "fp16", timing_cache_path: str | Path | None = None,
                 compatibility: str = "none", profiles: int = 1,
                 workspace_bytes: int | None = None, trt=None,
                 log: Callable[[str], None] | None = None) -> Path:
    """Build one engine from ``onnx_path`` and write it atomically to ``engine_path``.

    Parameters
    ----------
    onnx_path
        Graph to build from. On TensorRT >= 11 its own types are the precision (pass the
        FP16 copy for an FP16 engine); on TensorRT 10 the FP32 graph and a builder flag.
    shapes
        ``{input name: (min, opt, max) shape}`` (see :meth:`EngineProfile.input_shapes`);
        must name every network input.
    precision
        'fp32', 'fp16' or 'bf16' (BF16: TensorRT 10 and Ampere or newer only). FP32
        engines may use TF32 kernels on Ampere and newer (TensorRT's default).
    timing_cache_path
        Timing cache read before and rewritten after the build (shortens rebuilds).
    compatibility
        'none' (this GPU model), 'hardware' (Ampere and newer GPUs) or 'version' (later
        TensorRT versions too; deserialising needs ``engine_host_code_allowed``).
    profiles
        Identical optimisation profiles to build in (one per concurrent context).
    workspace_bytes
        Builder workspace limit (None: TensorRT's default, the device memory).
    trt
        The ``tensorrt`` module (None: import it).
    """
    trt = _tensorrt(trt)
    log = log or _LOG.info
    check_choice("precision", precision, PRECISIONS)
    check_choice("compatibility", compatibility, COMPATIBILITY)
    major = trt_major(trt)
    if major < 10:
        raise BackendError(f"TensorRT {trt.__version__} is too old; install TensorRT 10 or newer "
                           "(pip install 'hdn-deploy[tensorrt]')")
    if major >= 11 and precision == "bf16":
        raise ConfigError(
            f"bf16 engines are not supported with TensorRT {trt.__version__} yet: TensorRT 11 "
            "removed the BF16 builder flag and hdn-deploy has no BF16 ONNX conversion; use "
            "--precision fp16 or fp32 (or TensorRT 10 for bf16)")
    engine_path = Path(engine_path)
    logger = trt_logger(trt)
    builder = trt.Builder(logger)
    flags = 0
    strongly_typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if major >= 11 and strongly_typed is not None:  # always on in 11; the flag is accepted
        flags |= 1 << int(strongly_typed)
    network = builder.create_network(flags)
    inputs = _parse(trt, network, logger, Path(onnx_path))
    if inputs != set(shapes):
        raise BackendError(f"{onnx_path}: network inputs {sorted(inputs)} do not match the "
                           f"profile's {sorted(shapes)}; is this the right graph?")
    config = builder.create_builder_config()
    _configure(trt, builder, config, precision=precision, compatibility=compatibility,
               major=major, shapes=shapes, profiles=profiles, workspace_bytes=workspace_bytes)
    timing_path = Path(timing_cache_path) if timing_cache_path else None
    _timing_cache(config, timing_path, log)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None or len(memoryview(serialized)) == 0:
        raise BackendError(f"TensorRT failed to build an engine from {onnx_path} "
                           "(see the TensorRT messages above)")
    write_atomic(engine_path, bytes(memoryview(serialized)))
    if timing_path is not None:
        write_atomic(timing_path, bytes(memoryview(config.get_timing_cache().serialize())))
    return engine_path


def _source_onnx(package: ModelPackage, graph: str, *, precision: str, major: int,
                 onnx_dir: Path, log: Callable[[str], None]) -> Path:
    """The ONNX to build from: the package's graph, or (TRT >= 11, fp16) an FP16 copy."""
    source = package.graph_path(graph)
    packaged = package.manifest.graph_precision.value
    if packaged not in ("fp32", precision):
        raise ConfigError(f"{package.path} is a {packaged} package; build {packaged} engines "
                          f"from it, or {precision} engines from the FP32 package")
    if major < 11 or precision == "fp32" or packaged == precision:
        return source
    sha = package.manifest.graphs.entry(graph).sha256
    target = onnx_dir / f"{graph}-{sha[:16]}-fp16.onnx"
    if not target.is_file():
        from .precision import fp16_graph

        log(f"converting {source} to FP16 for TensorRT {major} (strongly typed) -> {target}")
        with atomic_path(target) as tmp:
            fp16_graph(source, tmp)
    return target


def engines_for_package(package_dir: str | Path | ModelPackage, *,
                        cache_dir: str | Path | None = None,
                        precision: str = "fp16", profile: EngineProfile | None = None,
                        compatibility: str = "none", workspace_bytes: int | None = None,
                        trt=None, gpu: tuple[str, str] | None = None,
                        log: Callable[[str], None] | None = None) -> dict[str, Path]:
    """Engines of a package's two graphs, reused from ``cache_dir`` or built into it.

    A cached engine is rebuilt (with a log message) when its file is missing or empty,
    its sidecar JSON does not match the key fields, or TensorRT cannot deserialise it.

    Returns
    -------
    dict
        ``{"encoder": Path, "decoder": Path}``.
    """
    trt = _tensorrt(trt)
    log = log or _LOG.warning
    package = package_dir if isinstance(package_dir, ModelPackage) else load_package(package_dir)
    profile = profile or EngineProfile()
    profile.validate(package)
    check_choice("precision", precision, PRECISIONS)
    check_choice("compatibility", compatibility, COMPATIBILITY)
    gpu = gpu or gpu_identity()
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    version = str(trt.__version__)
    major = trt_major(trt)
    folder = device_dir(cache_dir, gpu[0], gpu[1], version)
    engines: dict[str, Path] = {}
    for graph in GRAPHS:
        fields = package_fields(package, graph, gpu=gpu, trt_version=version, precision=precision,
                                profile=profile, compatibility=compatibility)
        path = engine_cache_path(cache_dir, graph, fields)
        problem = _usable(trt, path, fields)
        if problem is not None:
            log(f"building TensorRT {precision} {graph} engine for {gpu[0]} ({problem}); this "
                "takes a few minutes once per GPU, TensorRT version and settings")
            onnx_path = _source_onnx(package, graph, precision=precision, major=major,
                                     onnx_dir=cache_dir / "onnx", log=log)
            build_engine(onnx_path, path, shapes=profile.input_shapes(package, graph),
                         precision=precision, timing_cache_path=folder / "timing.cache",
                         compatibility=compatibility, profiles=profile.contexts,
                         workspace_bytes=workspace_bytes, trt=trt, log=log)
            write_sidecar(path, fields)
        engines[graph] = path
    return engines


def _usable(trt, path: Path, fields: dict[str, Any]) -> str | None:
    problem = cache_problem(path, fields)
    if problem is None:
        try:
            deserialize(trt, path, fields["compatibility"])
        except BackendError as exc:
            problem = str(exc)
    return problem
