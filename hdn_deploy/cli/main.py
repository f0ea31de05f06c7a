"""Root click group; registers the subcommands."""
from __future__ import annotations

import functools
import sys

import click

from .._version import __version__
from ..errors import HDNError


def handle_errors(func):
    """Turn HDNError into a one-line message on stderr and exit status 2."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
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
    from . import (bench, build_engine, demo, denoise, export, export_bmz, info,  # noqa: F401
                   noise_model, train)  # (each adds commands)


_register()
