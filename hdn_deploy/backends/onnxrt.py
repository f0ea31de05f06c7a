"""onnxruntime backend: CPU, CUDA or TensorRT execution provider.

Options
-------
device : "cpu" | "cuda" | "tensorrt"
    Execution provider. CUDA/TensorRT need the ``onnxruntime-gpu`` wheel
    (``pip install 'hdn-deploy[gpu]'``, never together with ``onnxruntime``). A provider that
    is asked for and not available raises BackendError listing the available ones; there is
    no silent fallback to the CPU.
threads : int | None
    intra-op threads (None: onnxruntime's default, all physical cores).
graph_optimization : "disable" | "basic" | "extended" | "all"
spin : bool
    Let onnxruntime's worker threads busy-wait between ops (default False). Spinning
    shaves a little latency on an otherwise idle machine but wastes a core and slows
    everything down badly on shared or oversubscribed machines.
trt_fp16, trt_cache_dir : TensorRT provider options (engine cache on disk).

Data placement (the backend contract of :mod:`hdn_deploy.backends.base`): both graphs run
through onnxruntime I/O binding. The bottom-up features stay where the provider put
them (``OrtValue`` on the CPU or on the GPU) and are bound to the decoder without a
copy; eps are drawn on the host (numpy, latent contract 2) and uploaded by onnxruntime;
the samples come back to the host, where the running moments are. The CPU path is what
the tests run; the CUDA/TensorRT providers use the same code with device ``cuda`` and
have not been run on a GPU yet (untested). Fully device-resident sampling (device eps
and device moments) is the ``tensorrt`` backend's.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .._optional import require
from ..errors import BackendError, ConfigError
from ..options import GraphOptimization, parse
from ..package import ModelPackage
from .base import Backend

_PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}


class OnnxRuntimeBackend(Backend):
    """Both graphs as onnxruntime InferenceSessions (``run`` is thread-safe)."""

    name = "onnxruntime"

    def __init__(
        self,
        package: ModelPackage,
        *,
        device: str = "cpu",
        threads: int | None = None,
        graph_optimization: GraphOptimization | str = "all",
        spin: bool = False,
        trt_fp16: bool = False,
        trt_cache_dir: str | Path | None = None,
    ):
        super().__init__(package)
        ort = require("onnxruntime", purpose="the onnxruntime backend")
        self._ort = ort
        if device not in _PROVIDERS:
            raise ConfigError(f"unknown device {device!r}; choose one of {sorted(_PROVIDERS)}")
        graph_optimization = parse(GraphOptimization, graph_optimization,
                                   "graph_optimization").value
        available = ort.get_available_providers()
        wanted = _PROVIDERS[device]
        if wanted not in available:
            raise BackendError(
                f"onnxruntime has no {wanted} here (available: {available}); for GPUs install "
                "onnxruntime-gpu (pip install 'hdn-deploy[gpu]') and uninstall onnxruntime"
            )
        self.device = device
        self.threads = threads
        self.graph_optimization = graph_optimization
        providers = self._providers(device, trt_fp16, trt_cache_dir)
        options = ort.SessionOptions()
        options.graph_optimization_level = getattr(
            ort.GraphOptimizationLevel,
            {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC",
             "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}[graph_optimization],
        )
        if threads:
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
        options.log_severity_level = 3
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        self.spin = spin
        try:
            self._encoder = ort.InferenceSession(str(package.encoder_path), options, providers=providers)
            self._decoder = ort.InferenceSession(str(package.decoder_path), options, providers=providers)
            self._direct_session = (
                ort.InferenceSession(str(package.direct_path), options, providers=providers)
                if package.has_direct else None)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise BackendError(f"{package.path}: onnxruntime could not load the graphs ({exc})") from exc
        active = self._decoder.get_providers()
        if active[0] != wanted:
            raise BackendError(f"{wanted} was requested but onnxruntime activated {active}")
        self._bu_names = [o.name for o in self._encoder.get_outputs()]
        self._eps_names = [f"eps_{i}" for i in self.levels]
        self._samples_name = self._decoder.get_outputs()[0].name
        self._ort_device = "cpu" if device == "cpu" else "cuda"

    @staticmethod
    def _providers(device: str, trt_fp16: bool, trt_cache_dir) -> list:
        if device == "cpu":
            return ["CPUExecutionProvider"]
        if device == "cuda":
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        trt_options = {"trt_fp16_enable": bool(trt_fp16)}
        if trt_cache_dir:
            trt_options.update(trt_engine_cache_enable=True, trt_engine_cache_path=str(trt_cache_dir),
                               trt_timing_cache_enable=True)
        return [("TensorrtExecutionProvider", trt_options), "CUDAExecutionProvider",
                "CPUExecutionProvider"]

    def _encode(self, image: np.ndarray) -> list:
        """OrtValues of the features, on the provider's device (no copy to the host)."""
        binding = self._encoder.io_binding()
        binding.bind_cpu_input("image", image)
        for name in self._bu_names:
            binding.bind_output(name, self._ort_device)
        self._encoder.run_with_iobinding(binding)
        return binding.get_outputs()

    def _to_host(self, array) -> np.ndarray:
        """numpy copy of an OrtValue (features) or of a numpy array (samples)."""
        return array.numpy() if isinstance(array, self._ort.OrtValue) else np.array(array)

    def _decode(self, features: list, eps: list[np.ndarray]) -> np.ndarray:
        binding = self._decoder.io_binding()
        for name, value in zip(self._bu_names, features):
            binding.bind_ortvalue_input(name, value)
        for name, value in zip(self._eps_names, eps):
            binding.bind_cpu_input(name, value)
        binding.bind_output(self._samples_name, "cpu")
        self._decoder.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]

    def _direct(self, image: np.ndarray) -> np.ndarray:
        return self._direct_session.run(None, {"image": image})[0]

    def describe(self) -> dict:
        return {
            "name": self.name,
            "device": self.device,
            "onnxruntime_version": self._ort.__version__,
            "threads": self.threads,
            "graph_optimization": self.graph_optimization,
            "spin": self.spin,
        }
