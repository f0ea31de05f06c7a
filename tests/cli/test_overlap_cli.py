"""`hdn-deploy denoise --overlap 0`: warned on stderr as one line, documented in --help."""
from __future__ import annotations

import tifffile
from click.testing import CliRunner

from hdn_deploy.cli.main import main


def _run(tiny_package, tmp_path, data_dir, overlap):
    path = tmp_path / "img.tif"
    tifffile.imwrite(path, tifffile.imread(data_dir / "noisy.tif")[:64, :96])
    return CliRunner().invoke(main, ["denoise", str(path), "-m", str(tiny_package), "-o",
                                     str(tmp_path / f"out{overlap}"), "--samples", "1",
                                     "--backend", "cpu", "--threads", "1", "--quiet",
                                     "--tile", "32", "--overlap", str(overlap)])


def test_overlap_zero_warns_in_one_line(tiny_package, tmp_path, data_dir):
    result = _run(tiny_package, tmp_path, data_dir, 0)
    assert result.exit_code == 0, result.output
    lines = [ln for ln in result.stderr.splitlines() if "seams" in ln]
    assert len(lines) == 1 and lines[0].startswith("Warning: overlap=0")
    assert "SeamWarning" not in result.stderr  # no Python warning boilerplate
    quiet = _run(tiny_package, tmp_path, data_dir, 8)
    assert quiet.exit_code == 0 and "seams" not in quiet.stderr


def test_help_says_overlap_zero_leaves_seams():
    result = CliRunner().invoke(main, ["denoise", "--help"])
    assert result.exit_code == 0 and "0 leaves visible seams" in " ".join(result.output.split())
