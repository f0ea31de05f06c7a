"""One exception hierarchy for the whole package: catch ``HDNError`` to catch them all."""


class HDNError(Exception):
    """Base class of every error hdn-deploy raises on purpose."""


class ConfigError(HDNError, ValueError):
    """A configuration value or manifest key is invalid."""


class InputError(HDNError, ValueError):
    """An input image or data file cannot be used (names the file and the problem)."""


class OutOfRangeError(InputError):
    """Too many pixels of an input lie outside the intensity range the model was trained
    and calibrated on (see :mod:`hdn_deploy.range_check`)."""


class PackageError(HDNError):
    """A model package or checkpoint is missing, corrupt or of an unknown version."""


class BackendError(HDNError, RuntimeError):
    """An inference backend is unavailable or failed."""


class MissingDependencyError(HDNError, ImportError):
    """An optional dependency (torch, onnx, tensorrt...) is not installed."""


class TrainingError(HDNError, RuntimeError):
    """Training stopped on purpose (e.g. a detected posterior collapse with stop_on_collapse)."""


class HDNWarning(UserWarning):
    """Base class of every warning hdn-deploy emits (the CLI prints them as one line)."""


class OutOfRangeWarning(HDNWarning):
    """Some pixels of an input lie outside the model's intensity range, or the package
    stores no range to check against."""


class OutputError(HDNError):
    """An output cannot be written: it would overwrite a file that is not ours, or no space."""


class DiskSpaceError(OutputError):
    """The output folder has not enough free space (names the folder and the bytes needed)."""
