"""Native TensorRT backend: cached engines, cupy device buffers, a pool of contexts.

Options
-------
cache_dir : path, optional
    Engine cache (default ``$HDN_DEPLOY_TRT_CACHE`` or ``~/.cache/hdn-deploy/tensorrt``);
    ``hdn-deploy build-engine`` fills the same cache with the same defaults.
precision : "fp32" | "fp16" | "bf16"
profile : EngineProfile, optional
    Samples per call and tile sides the engines accept (default (1, 8, 32) samples,
    tiles 64..512). Larger sample batches are split; tiles outside the profile are an
    error that says how to rebuild. ``profile.contexts`` (default 1) execution contexts,
    each with its own optimisation profile and CUDA stream, serve calls from any number
    of threads; a call waits for a free context (TensorRT allows concurrent contexts only
    on distinct optimisation profiles).
cuda_graphs : bool
    Capture each (graph, shape) once per context into a CUDA graph and replay it.
compatibility : "none" | "hardware" | "version"
latents : "device" | "host"
    Where eps are drawn for an :class:`~hdn_deploy.backends.base.EpsSpec`: ``device``
    (default; the CuPy kernel of :mod:`hdn_deploy.latents_cuda`, nothing crosses the bus)
    or ``host`` (numpy, uploaded per batch).
build : bool
    Build missing engines (needs ``hdn_deploy.export``, and onnx + onnxconverter-common
    on TensorRT >= 11); False: only load cached ones (BackendError if missing).
threads : ignored (CPU threads do not apply).

Engines are loaded from the cache without importing torch or the export code; only a
missing or stale engine imports ``hdn_deploy.export.tensorrt`` to build it.

Data placement (the backend contract): features, eps, samples and the running moments
(:class:`~hdn_deploy.stats.RunningMoments` on cupy) stay on the GPU; only
``moments.to_host()`` (MMSE, variance, kept samples) and ``decode_samples`` copy back.
On the CPU this module is tested with stand-in ``tensorrt``/``cupy`` modules; on a real
GPU it is untested until ``benchmarks/gpu_suite.py`` has run there.
"""
from __future__ import annotations

import contextlib
import importlib
import queue
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from .._optional import require
from ..errors import BackendError, MissingDependencyError
from ..package import ModelPackage
from ..latents_cuda import DeviceLatents
from .base import Backend, EpsSpec
from .trt_cache import (
    COMPATIBILITY,
    GRAPHS,
    PRECISIONS,
    EngineProfile,
    check_choice,
    default_cache_dir,
    deserialize,
    engine_cache_path,
    gpu_identity,
    load_cached,
    package_fields,
)

_MAX_GRAPHS = 8  # captured CUDA graphs kept per context (least recently used dropped)


@dataclass
class _Slot:
    """One optimisation profile's worth of execution state: contexts, stream, graphs."""

    index: int
    stream: Any
    contexts: dict[str, Any]
    graphs: OrderedDict = field(default_factory=OrderedDict)


class TensorRTBackend(Backend):
    """Both graphs as TensorRT engines (see the module docstring for the options)."""

    name = "tensorrt"

    def __init__(self, package: ModelPackage, *, cache_dir: str | Path | None = None,
                 precision: str = "fp16", profile: EngineProfile | None = None,
                 cuda_graphs: bool = False, compatibility: str = "none", build: bool = True,
                 latents: str = "device",
                 threads: int | None = None, log: Callable[[str], None] | None = None,
                 trt=None, cupy=None, gpu: tuple[str, str] | None = None):
        super().__init__(package)
        self._trt = trt or require("tensorrt", purpose="the TensorRT backend", extra="tensorrt")
        self._cp = cupy or require("cupy", purpose="the TensorRT backend (GPU buffers)",
                                   extra="tensorrt")
        self.array_module = self._cp
        self.latents = check_choice("latents", latents, ("device", "host"))
        self._device_latents = None  # compiled on first use
        self.precision = check_choice("precision", precision, PRECISIONS)
        self.compatibility = check_choice("compatibility", compatibility, COMPATIBILITY)
        self.profile = profile or EngineProfile()
        self.profile.validate(package)
        self.cuda_graphs = bool(cuda_graphs)
        self.gpu = gpu or gpu_identity()
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self._bu_names = [f"bu_{i}" for i in self.levels]
        self._eps_names = [f"eps_{i}" for i in self.levels]
        self._engines = self._load_engines(build, log)
        self._check_io()
        self._slots: queue.LifoQueue = queue.LifoQueue()
        self._all_slots = [self._make_slot(k) for k in range(self.profile.contexts)]
        for slot in self._all_slots:
            self._slots.put(slot)
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ engines
    def _load_engines(self, build: bool, log) -> dict[str, tuple[Any, Any, Path]]:
        trt, version = self._trt, str(self._trt.__version__)
        loaded, problems = {}, {}
        for graph in GRAPHS:
            fields = package_fields(self.package, graph, gpu=self.gpu, trt_version=version,
                                    precision=self.precision, profile=self.profile,
                                    compatibility=self.compatibility)
            path = engine_cache_path(self.cache_dir, graph, fields)
            runtime, engine, problem = load_cached(trt, path, fields)
            if problem is None:
                loaded[graph] = (runtime, engine, path)
            else:
                problems[graph] = problem
        if problems and not build:
            s, t = self.profile.samples, self.profile.tile
            raise BackendError(
                f"no usable TensorRT engine in {self.cache_dir} ({problems}); build them with "
                f"`hdn-deploy build-engine {self.package.path} --precision {self.precision} "
                f"--samples {','.join(map(str, s))} --tile {','.join(map(str, t))} "
                f"--contexts {self.profile.contexts} --cache-dir {self.cache_dir} "
                f"--compatibility {self.compatibility}`")
        if problems:
            paths = engine_builder().engines_for_package(
                self.package, cache_dir=self.cache_dir, precision=self.precision,
                profile=self.profile, compatibility=self.compatibility, trt=trt, gpu=self.gpu,
                log=log)
            for graph in problems:
                runtime, engine = deserialize(trt, paths[graph], self.compatibility)
                loaded[graph] = (runtime, engine, paths[graph])
        return loaded

    def _check_io(self) -> None:
        trt = self._trt
        expected = {"encoder": (["image"], self._bu_names),
                    "decoder": (self._bu_names + self._eps_names, ["samples"])}
        for graph, (inputs, outputs) in expected.items():
            _, engine, path = self._engines[graph]
            names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
            got_in = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
            got_out = [n for n in names if n not in got_in]
            if set(got_in) != set(inputs) or set(got_out) != set(outputs):
                raise BackendError(f"{path}: engine tensors {got_in} -> {got_out} do not match the "
                                   f"package ({inputs} -> {outputs}); delete the engine to rebuild")
            wrong = [n for n in names if engine.get_tensor_dtype(n) != trt.DataType.FLOAT]
            if wrong:
                raise BackendError(f"{path}: tensors {wrong} are not float32; engines must keep "
                                   "FP32 inputs and outputs")
            if engine.num_optimization_profiles < self.profile.contexts:
                raise BackendError(f"{path} has {engine.num_optimization_profiles} optimisation "
                                   f"profiles, fewer than contexts={self.profile.contexts}")

    def _make_slot(self, index: int) -> _Slot:
        stream = self._cp.cuda.Stream(non_blocking=True)
        contexts = {}
        for graph in GRAPHS:
            ctx = self._engines[graph][1].create_execution_context()
            if ctx is None:
                raise BackendError(f"TensorRT could not create an execution context for the "
                                   f"{graph} (out of GPU memory?); use fewer contexts")
            if index and not ctx.set_optimization_profile_async(index, stream.ptr):
                raise BackendError(f"TensorRT refused optimisation profile {index} for the {graph}")
            contexts[graph] = ctx
        stream.synchronize()
        return _Slot(index=index, stream=stream, contexts=contexts)

    @contextlib.contextmanager
    def _slot(self) -> Iterator[_Slot]:
        """A free context set for this call (waits while all are busy)."""
        if not self._all_slots:
            raise BackendError("this TensorRT backend was closed; create a new one")
        slot = self._slots.get()
        try:
            with slot.stream:
                yield slot
                slot.stream.synchronize()
        finally:
            self._slots.put(slot)

    def _check_tile(self, height: int, width: int) -> None:
        low, opt, high = self.profile.tile
        if not (low <= height <= high and low <= width <= high):
            fix = f"{min(low, height, width)},{opt},{max(high, height, width)}"
            raise BackendError(
                f"tile {height}x{width} is outside the TensorRT engine profile (sides {low} to "
                f"{high}); use tiles in that range (--tile) or build engines with --tile {fix}")

    # ------------------------------------------------------------------ execution
    def _bind(self, ctx, inputs: dict[str, Any], outputs: Sequence[str]) -> dict[str, Any]:
        for name, array in inputs.items():
            if not ctx.set_input_shape(name, tuple(array.shape)):
                raise BackendError(f"TensorRT refused shape {tuple(array.shape)} for {name}")
            ctx.set_tensor_address(name, array.data.ptr)
        outs = {}
        for name in outputs:
            outs[name] = self._cp.empty(tuple(ctx.get_tensor_shape(name)), dtype=self._cp.float32)
            ctx.set_tensor_address(name, outs[name].data.ptr)
        return outs

    @staticmethod
    def _launch(ctx, stream) -> None:
        if not ctx.execute_async_v3(stream.ptr):
            raise BackendError("TensorRT execute_async_v3 failed (see the TensorRT messages)")

    def _execute(self, slot: _Slot, graph: str, inputs: dict[str, Any],
                 outputs: Sequence[str]) -> dict[str, Any]:
        """Enqueue ``graph`` on the slot's stream (outputs are ready once it syncs).

        With CUDA graphs, the outputs are the captured graph's static buffers: copy them
        before the next call on this slot.
        """
        ctx, stream = slot.contexts[graph], slot.stream
        if not self.cuda_graphs:
            outs = self._bind(ctx, inputs, outputs)
            self._launch(ctx, stream)
            return outs
        key = (graph, tuple((n, tuple(a.shape)) for n, a in inputs.items()))
        entry = slot.graphs.pop(key, None)
        if entry is None:
            static = {n: self._cp.empty_like(a) for n, a in inputs.items()}
            outs = self._bind(ctx, static, outputs)
            self._launch(ctx, stream)  # TensorRT needs one enqueue after a shape change
            stream.begin_capture()
            self._launch(ctx, stream)
            entry = (stream.end_capture(), static, outs)
        else:  # restore this graph's shapes and addresses on the shared context
            for name, array in {**entry[1], **entry[2]}.items():
                if name in entry[1]:
                    ctx.set_input_shape(name, tuple(array.shape))
                ctx.set_tensor_address(name, array.data.ptr)
        slot.graphs[key] = entry
        while len(slot.graphs) > _MAX_GRAPHS:
            slot.graphs.popitem(last=False)
        cuda_graph, static, outs = entry
        for name, array in inputs.items():
            static[name][...] = array
        cuda_graph.launch(stream)
        return outs

    def _run_encoder(self, slot: _Slot, image) -> list:
        self._check_tile(image.shape[2], image.shape[3])
        outs = self._execute(slot, "encoder", {"image": image}, self._bu_names)
        return [outs[n].copy() if self.cuda_graphs else outs[n] for n in self._bu_names]

    def _run_decoder(self, slot: _Slot, features: list, eps: list):
        d = self.package.sampled_levels[0].downsample
        self._check_tile(eps[0].shape[2] * d, eps[0].shape[3] * d)
        n, step = eps[0].shape[0], self.profile.samples[2]
        chunks = []
        for start in range(0, n, step):
            feed = dict(zip(self._bu_names, features))
            feed.update((name, e[start:start + step]) for name, e in zip(self._eps_names, eps))
            out = self._execute(slot, "decoder", feed, ["samples"])["samples"]
            chunks.append(out.copy() if self.cuda_graphs else out)
        return chunks[0] if len(chunks) == 1 else self._cp.concatenate(chunks)

    # ----------------------------------------------------------------- contract
    def _encode(self, image: np.ndarray) -> list:
        """Host image -> cupy features (stay on the device, owned by the Features handle)."""
        with self._slot() as slot:
            return self._run_encoder(slot, self._cp.asarray(image))

    def _decode(self, features: list, eps: list):
        """cupy features and eps -> cupy samples (N, 1, H, W), ready on return."""
        with self._slot() as slot:
            return self._run_decoder(slot, features, eps)

    def _draw(self, spec: EpsSpec, height: int, width: int) -> list:
        if self.latents == "host":
            return [self._cp.asarray(e) for e in super()._draw(spec, height, width)]
        with self._lock:
            if self._device_latents is None:
                self._device_latents = DeviceLatents(cupy=self._cp)
        return self._device_latents.tile_eps(spec.sampler, spec.samples, self._level_specs,
                                             spec.y0, spec.x0, height, width)

    def _prepare_eps(self, eps) -> list:
        return [self._cp.ascontiguousarray(e, self._cp.float32) for e in eps]

    def _to_host(self, array) -> np.ndarray:
        return array.get()

    def describe(self) -> dict:
        return {"name": self.name, "tensorrt_version": str(self._trt.__version__),
                "precision": self.precision, "gpu": self.gpu[0], "compute_capability": self.gpu[1],
                "profile": self.profile.to_dict(), "compatibility": self.compatibility,
                "cuda_graphs": self.cuda_graphs, "latents": self.latents,
                "engines": {g: str(e[2]) for g, e in self._engines.items()}}

    def close(self) -> None:
        """Drop contexts, captured graphs and engines (no call may be running)."""
        slots, self._all_slots = self._all_slots, []
        for slot in slots:
            slot.graphs.clear()
            slot.contexts.clear()
        self._engines = {}


def engine_builder():
    """``hdn_deploy.export.tensorrt``, imported only when an engine must be built."""
    try:
        return importlib.import_module("hdn_deploy.export.tensorrt")
    except ImportError as exc:
        raise MissingDependencyError(
            f"building TensorRT engines needs hdn-deploy's export tools ({exc}); install them "
            "with pip install 'hdn-deploy[export,tensorrt]', or build the engines elsewhere "
            "with `hdn-deploy build-engine` and copy the cache folder") from exc
