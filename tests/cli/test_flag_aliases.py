"""CLI flags follow the API keywords; the old flag names still parse but are not shown."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

from hdn_deploy.cli.main import main
from hdn_deploy.options import BackendName, BlendMode, DenoiseMode, OutputDtype, SamplingMode, values

RENAMED = [  # (command, required args, new flag, old flag, parameter, value)
    ("denoise", ["x.tif", "-m", "m", "-o", "out"], "--n-samples", "--samples", "samples", 7),
    ("denoise", ["x.tif", "-m", "m", "-o", "out"], "--keep-samples", "--save-samples",
     "save_samples", 3),
    ("bench", ["m"], "--n-samples", "--samples", "samples", 5),
    ("demo", [], "--n-samples", "--samples", "samples", 9),
]


def _params(command: str, args: list[str]) -> dict:
    cmd = main.commands[command]
    with cmd.make_context(command, list(args)) as ctx:
        return dict(ctx.params)


@pytest.mark.parametrize("command, args, new, old, param, value", RENAMED)
def test_old_and_new_flags_parse_alike(command, args, new, old, param, value):
    with_new = _params(command, [*args, new, str(value)])
    with_old = _params(command, [*args, old, str(value)])
    assert with_new[param] == with_old[param] == value
    assert with_new == with_old
    assert _params(command, args)[param] != value  # the flag did something


@pytest.mark.parametrize("command, args, new, old, param, value", RENAMED)
def test_help_shows_only_the_new_flag(command, args, new, old, param, value):
    res = CliRunner().invoke(main, [command, "--help"])
    assert res.exit_code == 0, res.output
    words = res.output.replace(",", " ").split()
    assert new in words and old not in words


def test_choices_come_from_the_enums():
    options = {p.name: p for p in main.commands["denoise"].params}
    assert tuple(options["sampling"].type.choices) == values(SamplingMode)
    assert tuple(options["backend"].type.choices) == values(BackendName)
    assert tuple(options["blend"].type.choices) == values(BlendMode)
    assert tuple(options["output_dtype"].type.choices) == values(OutputDtype)
    assert tuple(options["mode"].type.choices) == values(DenoiseMode)
