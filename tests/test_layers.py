"""The import-linter contracts of pyproject.toml hold (and fail when broken).

``lint-imports`` runs on the package laid out as a wheel installs it (``training/`` and
``export/`` copied into ``hdn_deploy/`` as the ``package-dir`` mapping says): in the
source tree they live beside ``hdn_deploy/``, where the import graph cannot see them.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"
LINT = Path(sys.executable).parent / "lint-imports"
SKIP = shutil.ignore_patterns("__pycache__", "models", "sample_data", "*.tif", "*.onnx")

pytestmark = pytest.mark.skipif(not LINT.is_file(), reason="import-linter is not installed "
                                "(pip install -e '.[dev]')")


def _installed_layout(dest: Path) -> Path:
    mapping = tomllib.loads(PYPROJECT.read_text())["tool"]["setuptools"]["package-dir"]
    shutil.copytree(ROOT / mapping["hdn_deploy"], dest / "hdn_deploy", ignore=SKIP)
    for package, folder in mapping.items():
        if package != "hdn_deploy":
            target = dest.joinpath(*package.split("."))
            shutil.copytree(ROOT / folder, target, ignore=SKIP)
    return dest


def _lint(layout: Path, *contracts: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(layout)}
    only = [arg for c in contracts for arg in ("--contract", c)]
    return subprocess.run([str(LINT), str(PYPROJECT), "--no-cache", "--no-logo", *only],
                          cwd=layout, env=env, capture_output=True, text=True, timeout=300)


def test_contracts_hold(tmp_path):
    layout = _installed_layout(tmp_path)
    result = _lint(layout)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 kept, 0 broken" in result.stdout
    assert "Analyzed" in result.stdout


@pytest.mark.parametrize("module, text, contract", [
    ("hdn_deploy/tiling.py", "from .training import model", "layers"),
    ("hdn_deploy/stats.py", "from .export import onnx_export", "layers"),
    ("hdn_deploy/io/reading.py", "import torch", "no-torch"),
    ("hdn_deploy/cli/info.py", "from ..training import noise_models", "cli-lazy"),
])
def test_a_violation_is_reported(tmp_path, module, text, contract):
    layout = _installed_layout(tmp_path)
    assert _lint(layout, contract).returncode == 0
    path = layout / module
    path.write_text(path.read_text() + f"\n\ndef _bad():\n    {text}\n")  # lazy imports count
    result = _lint(layout, contract)
    assert result.returncode != 0 and "1 broken" in result.stdout, result.stdout
    dotted = module.removesuffix(".py").replace("/", ".")
    assert dotted in result.stdout


def test_a_new_module_must_be_given_a_layer(tmp_path):
    layout = _installed_layout(tmp_path)
    (layout / "hdn_deploy" / "newthing.py").write_text("X = 1\n")
    result = _lint(layout)
    assert result.returncode != 0 and "newthing" in result.stdout + result.stderr
