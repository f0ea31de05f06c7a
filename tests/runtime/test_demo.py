"""The bundled model and sample: present, loadable, and the demo runs without torch."""
import textwrap

import numpy as np
from click.testing import CliRunner

from conftest import run_without_torch

from hdn_deploy.cli.main import main
from hdn_deploy.demo import DEFAULT_MODEL, SAMPLE_CLEAN, SAMPLE_NOISY, bundled_path, run_demo
from hdn_deploy.io import read_image
from hdn_deploy.package import load_package


def test_bundled_model_and_sample_are_installed():
    package = load_package(bundled_path(DEFAULT_MODEL))
    assert "Poisson-Gaussian" in package.manifest.noise_description
    size = sum(p.stat().st_size for p in package.path.iterdir())
    assert size < 20 * 2**20
    noisy = read_image(bundled_path(SAMPLE_NOISY)).array
    clean = read_image(bundled_path(SAMPLE_CLEAN)).array
    assert noisy.shape == clean.shape == (256, 256)


def test_demo_short_run_denoises_visibly(tmp_path):
    report = run_demo(tmp_path, n_samples=4, threads=1)
    assert report.psnr_mmse > report.psnr_noisy + 3, report
    for path in report.outputs.values():
        assert path.is_file() and path.stat().st_size > 1000
    assert read_image(report.outputs["mmse"]).array.dtype == np.float32


def test_demo_cli_prints_psnrs(tmp_path):
    result = CliRunner().invoke(main, ["demo", "-o", str(tmp_path), "--samples", "2",
                                       "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert "PSNR MMSE" in result.output and "PSNR noisy input" in result.output


def test_demo_runs_where_torch_cannot_be_imported(tmp_path):
    code = textwrap.dedent(f"""
        from hdn_deploy.demo import run_demo
        report = run_demo({str(tmp_path)!r}, n_samples=2, threads=1)
        assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules)
        print("ok", report.psnr_mmse)
    """)
    out = run_without_torch(code, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok")
