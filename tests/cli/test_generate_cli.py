"""`hdn-deploy generate`: prior samples of any size, deterministic by seed."""
import numpy as np
import tifffile
from click.testing import CliRunner

from hdn_deploy.cli.main import main
from hdn_deploy.io import read_hdn_metadata


def _generate(ckpt, out, *args):
    result = CliRunner().invoke(main, ["generate", str(ckpt), "-o", str(out), *args])
    assert result.exit_code == 0, result.output
    return tifffile.imread(out / "generated.tif")


def test_any_size_deterministic_by_seed(tiny_run, tmp_path):
    ckpt = tiny_run / "best.safetensors"
    a = _generate(ckpt, tmp_path / "a", "--size", "37", "53", "-n", "3", "--seed", "5")
    b = _generate(ckpt, tmp_path / "b", "--size", "37", "53", "-n", "3", "--seed", "5")
    c = _generate(ckpt, tmp_path / "c", "--size", "37", "53", "-n", "3", "--seed", "6")
    assert a.shape == (3, 37, 53) and a.dtype == np.float32
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.isfinite(a).all() and a.std() > 0
    assert (tmp_path / "a" / "generated.png").stat().st_size > 0
    assert read_hdn_metadata(tmp_path / "a" / "generated.tif")["seed"] == 5


def test_bad_size_is_refused(tiny_run, tmp_path):
    result = CliRunner().invoke(main, ["generate", str(tiny_run / "best.safetensors"),
                                       "--size", "0", "8", "-o", str(tmp_path)])
    assert result.exit_code == 2 and "0" in result.output
