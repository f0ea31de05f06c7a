"""hdn-deploy: deployable Hierarchical DivNoising.

The runtime (this package outside ``hdn_deploy.training`` / ``hdn_deploy.export``)
needs numpy, onnxruntime and tifffile only; it never imports torch.
"""
from ._version import __version__
from .adaptive import Tolerance
from .denoiser import DenoiseResult, Denoiser, Progress
from .explain import Explanation, write_explanation
from .outofcore import ArrayOutputs
from .streaming import StreamResult
from .errors import (
    BackendError,
    ConfigError,
    HDNError,
    InputError,
    MissingDependencyError,
    OutOfRangeError,
    OutOfRangeWarning,
    PackageError,
)

__all__ = [
    "__version__",
    "Denoiser",
    "DenoiseResult",
    "Explanation",
    "write_explanation",
    "Progress",
    "ArrayOutputs",
    "StreamResult",
    "Tolerance",
    "HDNError",
    "ConfigError",
    "InputError",
    "PackageError",
    "BackendError",
    "MissingDependencyError",
    "OutOfRangeError",
    "OutOfRangeWarning",
]
