"""The one place the CLI loads training and export code, lazily, when a subcommand runs.

``hdn_deploy.training`` and ``hdn_deploy.export`` need torch (and onnx, matplotlib ...);
the runtime and ``hdn-deploy --help`` must work without them. The import-linter contracts
in ``pyproject.toml`` forbid every other CLI module (and every runtime module) to import
them; subcommands call :func:`load` instead, which checks the dependencies first and
names the pip extra to install.
"""
from __future__ import annotations

import importlib
from types import ModuleType

from .._optional import require

_PACKAGES = ("training", "export")


def load(module: str, *, purpose: str, requires: tuple[str, ...] = ("torch",),
         extra: str | None = None) -> ModuleType:
    """Import ``hdn_deploy.<module>`` (e.g. ``"training.trainer"``, ``"export"``).

    Parameters
    ----------
    module
        A module of ``hdn_deploy.training`` or ``hdn_deploy.export``, relative to
        ``hdn_deploy``.
    purpose
        What needs it, for the error message (e.g. "`hdn-deploy train`").
    requires
        Third-party packages imported first (default torch).
    extra
        The pip extra to suggest when one is missing (default: the package's usual one).

    Raises
    ------
    MissingDependencyError
        A package of ``requires`` is not installed (the message names the extra).
    ValueError
        ``module`` is not part of training or export (a programming error).
    """
    if module.split(".")[0] not in _PACKAGES:
        raise ValueError(f"cli.heavy loads training/export modules only, not {module!r}")
    for name in requires:
        require(name, purpose=purpose, extra=extra)
    return importlib.import_module(f"hdn_deploy.{module}")
