"""Every option vocabulary of the API and the CLI, as one enum each.

The enums are ``str`` enums: wherever an option is taken, a member or its string value is
accepted (``sampling="mc"`` or ``SamplingMode.MC``), and CLI choices, checks and error
messages list the enum's values, so a vocabulary is written once.
"""
from __future__ import annotations

import enum
from typing import TypeVar

from .errors import ConfigError
from .latents import SamplingMode
from .tiling import BlendMode, PadMode

__all__ = ["BackendName", "BlendMode", "Compatibility", "DenoiseMode", "EnginePrecision", "Graph",
           "GraphOptimization", "GraphPrecision", "NoiseModelKind", "OutputDtype", "PadMode",
           "SamplingMode", "parse", "values"]

E = TypeVar("E", bound=enum.Enum)


class BackendName(str, enum.Enum):
    """Inference backends (see :mod:`hdn_deploy.backends`)."""

    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"
    ORT_TENSORRT = "ort-tensorrt"
    TENSORRT = "tensorrt"


class DenoiseMode(str, enum.Enum):
    """How the MMSE is computed: ``sampler`` averages posterior samples of the HDN (MMSE
    and std); ``direct`` runs the package's distilled direct denoiser once (MMSE only, no
    std: it draws no samples)."""

    SAMPLER = "sampler"
    DIRECT = "direct"


class EnginePrecision(str, enum.Enum):
    """Arithmetic precision of TensorRT engines."""

    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"


class GraphPrecision(str, enum.Enum):
    """Precision of the arithmetic inside a package's ONNX graphs (I/O is always float32)."""

    FP32 = "fp32"
    FP16 = "fp16"


class Compatibility(str, enum.Enum):
    """TensorRT engine compatibility: none, across GPU generations, across TRT versions."""

    NONE = "none"
    HARDWARE = "hardware"
    VERSION = "version"


class Graph(str, enum.Enum):
    """The two graphs of a model package."""

    ENCODER = "encoder"
    DECODER = "decoder"


class GraphOptimization(str, enum.Enum):
    """onnxruntime graph optimisation level."""

    DISABLE = "disable"
    BASIC = "basic"
    EXTENDED = "extended"
    ALL = "all"


class OutputDtype(str, enum.Enum):
    """dtype of written MMSE/sample images: float32, or the input's dtype (clipped)."""

    FLOAT32 = "float32"
    INPUT = "input"


class NoiseModelKind(str, enum.Enum):
    """Noise models (``likelihood.kind`` in checkpoints and manifests)."""

    GAUSSIAN = "gaussian"
    GMM = "gmm"
    HISTOGRAM = "histogram"
    LINES = "lines"  # Gaussian pixel noise plus marginalised row/column offsets


def values(enum_type: type[enum.Enum]) -> tuple[str, ...]:
    """The string values of ``enum_type``, in definition order (for CLI choices)."""
    return tuple(m.value for m in enum_type)


def parse(enum_type: type[E], value: object, what: str) -> E:
    """``enum_type(value)``; ConfigError ``"unknown <what> 'x'; expected one of ..."``."""
    try:
        return enum_type(value)
    except ValueError:
        options = ", ".join(repr(v) for v in values(enum_type))
        raise ConfigError(f"unknown {what} {value!r}; expected one of {options}") from None
