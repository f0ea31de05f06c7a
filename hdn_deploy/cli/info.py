"""`hdn-deploy info`: what a model package holds."""
from __future__ import annotations

import json

import click

from ..package import load_package
from .main import handle_errors, main


@main.command()
@click.argument("model", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@handle_errors
def info(model, as_json):
    """Describe the model package MODEL."""
    summary = load_package(model).summary()
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    for key, value in summary.items():
        if isinstance(value, (dict, list)):
            value = json.dumps(value)
        click.echo(f"{key:>22}: {value}")
