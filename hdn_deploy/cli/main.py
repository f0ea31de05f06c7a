"""Root click group; registers the subcommands."""
from __future__ import annotations

import functools
import sys
import warnings

import click

from .._version import __version__
from ..errors import HDNError, HDNWarning


def _show_warning(message, category, filename, lineno, file=None, line=None, *, fallback):
    """hdn-deploy's own warnings as one ``Warning: ...`` line; others as Python shows them."""
    if issubclass(category, HDNWarning):
        click.echo(f"Warning: {message}", err=True)
    else:
        fallback(message, category, filename, lineno, file, line)


def handle_errors(func):
    """Turn HDNError into a one-line message on stderr and exit status 2; print
    hdn-deploy's warnings (HDNWarning) as one ``Warning:`` line each."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with warnings.catch_warnings():
            warnings.showwarning = functools.partial(_show_warning, fallback=warnings.showwarning)
            warnings.simplefilter("default", HDNWarning)
            try:
                return func(*args, **kwargs)
            except HDNError as exc:
                click.echo(f"Error: {exc}", err=True)
                sys.exit(2)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hdn-deploy")
def main() -> None:
    """hdn-deploy: unsupervised HDN denoising, from training to deployment."""


def _register() -> None:
    from . import (bench, build_engine, demo, denoise, distill, explain, export,  # noqa: F401
                   export_bmz, generate, info, noise_model, train, watch)  # (each adds commands)


_register()
