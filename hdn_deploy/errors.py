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


class OutputError(HDNError):
    """An output cannot be written: it would overwrite a file that is not ours, or no space."""


class DiskSpaceError(OutputError):
    """The output folder has not enough free space (names the folder and the bytes needed)."""
