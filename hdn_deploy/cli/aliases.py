"""Renamed CLI flags: the new name in ``--help``, the old one still accepted (hidden).

CLI flags follow the API keywords (``--n-samples`` for ``n_samples``, ``--keep-samples``
for ``keep_samples``); scripts written with the old flags keep working.
"""
from __future__ import annotations

from typing import Any, Sequence

import click


class AliasOption(click.Option):
    """A click option with hidden old names: ``aliases`` parse like the option's own names
    but are left out of ``--help``.

    Use as ``@click.option("--n-samples", "samples", cls=AliasOption, aliases=("--samples",))``.
    """

    def __init__(self, param_decls: Sequence[str], *, aliases: Sequence[str] = (), **attrs: Any):
        super().__init__([*param_decls, *aliases], **attrs)
        self.aliases = tuple(aliases)

    def get_help_record(self, ctx: click.Context):
        shown = [name for name in self.opts if name not in self.aliases]
        saved, self.opts = self.opts, shown
        try:
            return super().get_help_record(ctx)
        finally:
            self.opts = saved
