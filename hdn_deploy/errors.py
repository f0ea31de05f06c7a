"""One exception hierarchy for the whole package: catch ``HDNError`` to catch them all."""


class HDNError(Exception):
    """Base class of every error hdn-deploy raises on purpose."""


class ConfigError(HDNError, ValueError):
    """A configuration value or manifest key is invalid."""


class InputError(HDNError, ValueError):
    """An input image or data file cannot be used (names the file and the problem)."""


class PackageError(HDNError):
    """A model package or checkpoint is missing, corrupt or of an unknown version."""


class BackendError(HDNError, RuntimeError):
    """An inference backend is unavailable or failed."""


class MissingDependencyError(HDNError, ImportError):
    """An optional dependency (torch, onnx, tensorrt...) is not installed."""


class HDNWarning(UserWarning):
    """Base class of every warning hdn-deploy emits (the CLI prints them as one line)."""
