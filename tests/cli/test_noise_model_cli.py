"""`hdn-deploy noise-model calibrate|bootstrap` end to end with click's CliRunner."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("matplotlib")
tifffile = pytest.importorskip("tifffile")

from click.testing import CliRunner  # noqa: E402

from hdn_deploy.cli.main import main  # noqa: E402
from hdn_deploy.training.noise_models import (  # noqa: E402
    GMMNoiseModel,
    HistogramNoiseModel,
    load_noise_model,
)

FAST = ["--iterations", "30", "--batch-size", "4000", "--quiet"]


@pytest.fixture()
def images(tmp_path):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:24, 0:24]
    clean = (50.0 + 950.0 * (xx + 24 * yy) / (24 * 24 - 1)).astype(np.float32)
    stack = 3.0 * rng.poisson(clean / 3.0, (10, 24, 24)) + rng.normal(0, 6, (10, 24, 24))
    stack = np.clip(stack, 0, 65535).astype(np.uint16)
    folder = tmp_path / "in"
    folder.mkdir()
    tifffile.imwrite(folder / "stack.tif", stack)
    tifffile.imwrite(folder / "noisy.tif", stack[:2])
    tifffile.imwrite(folder / "denoised.tif", np.stack([clean, clean]))
    return folder


def _digests(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}


def _invoke(args):
    return CliRunner().invoke(main, ["noise-model", *map(str, args)])


def test_calibrate_writes_gmm_and_plot(images, tmp_path):
    before = _digests(images)
    out = tmp_path / "out" / "nm.npz"
    result = _invoke(["calibrate", images / "stack.tif", "-o", out, *FAST])
    assert result.exit_code == 0, result.output
    assert isinstance(load_noise_model(out), GMMNoiseModel)
    png = out.with_suffix(".png")
    assert png.stat().st_size > 1000 and png.read_bytes()[:4] == b"\x89PNG"
    assert str(out) in result.output and "noise std at signal" in result.output
    assert sorted(p.name for p in out.parent.iterdir()) == ["nm.npz", "nm.png"]
    assert _digests(images) == before  # inputs never modified


@pytest.mark.parametrize("name", ["h.npy", "h.npz"])
def test_bootstrap_writes_histogram(images, tmp_path, name):
    out = tmp_path / name
    result = _invoke(["bootstrap", images / "noisy.tif", "--signal", images / "denoised.tif",
                      "-o", out, "--kind", "histogram", "--bins", "16"])
    assert result.exit_code == 0, result.output
    model = load_noise_model(out)
    assert isinstance(model, HistogramNoiseModel) and model.bins == 16
    assert out.with_suffix(".png").stat().st_size > 1000


def test_bootstrap_gmm(images, tmp_path):
    out = tmp_path / "boot.npz"
    result = _invoke(["bootstrap", images / "noisy.tif", "--signal", images / "denoised.tif",
                      "-o", out, "--n-gaussian", "2", "--min-sigma", "4", *FAST])
    assert result.exit_code == 0, result.output
    model = load_noise_model(out)
    assert model.n_gaussian == 2 and model.min_sigma == 4.0


def _bad_input(folder, case):
    path = folder / f"{case}.tif"
    if case == "not_tiff":
        path.write_text("this is not an image\n")
    elif case == "rgb":
        tifffile.imwrite(path, np.zeros((3, 16, 16, 3), np.uint8), photometric="rgb")
    elif case == "nan":
        stack = np.ones((4, 16, 16), np.float32)
        stack[1, 2, 3] = np.nan
        tifffile.imwrite(path, stack)
    elif case == "single_image":
        tifffile.imwrite(path, np.ones((16, 16), np.float32))
    elif case == "too_many_axes":
        tifffile.imwrite(path, np.ones((2, 3, 16, 16), np.float32))
    return path


BAD = ["missing", "not_tiff", "rgb", "nan", "single_image", "too_many_axes"]


@pytest.mark.parametrize("case", BAD)
def test_calibrate_rejects_bad_input(images, tmp_path, case):
    bad = _bad_input(images, case)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    result = _invoke(["calibrate", bad, "-o", out_dir / "nm.npz", *FAST])
    assert result.exit_code != 0
    assert bad.name in result.output
    assert list(out_dir.iterdir()) == []


@pytest.mark.parametrize("case", ["missing", "not_tiff", "rgb", "nan", "shape_mismatch"])
@pytest.mark.parametrize("role", ["noisy", "signal"])
def test_bootstrap_rejects_bad_input(images, tmp_path, case, role):
    if case == "shape_mismatch":
        bad = images / "stack.tif"
    else:
        bad = _bad_input(images, case)
    noisy, signal = images / "noisy.tif", images / "denoised.tif"
    noisy, signal = (bad, signal) if role == "noisy" else (noisy, bad)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    result = _invoke(["bootstrap", noisy, "--signal", signal, "-o", out_dir / "nm.npz", *FAST])
    assert result.exit_code != 0
    assert bad.name in result.output
    assert list(out_dir.iterdir()) == []


def test_wrong_output_suffix_is_rejected_before_work(images, tmp_path):
    result = _invoke(["calibrate", images / "stack.tif", "-o", tmp_path / "nm.npy", *FAST])
    assert result.exit_code != 0 and "nm.npy" in result.output
    assert list(tmp_path.glob("nm.*")) == []


def test_missing_torch_gives_an_install_hint(images, tmp_path, monkeypatch):
    from hdn_deploy.cli import heavy
    from hdn_deploy.errors import MissingDependencyError

    def fake_require(module, *, purpose, extra=None):
        raise MissingDependencyError(f"{purpose} needs '{module}': pip install 'hdn-deploy[train]'")

    monkeypatch.setattr(heavy, "require", fake_require)  # the one place training is loaded
    result = _invoke(["calibrate", images / "stack.tif", "-o", tmp_path / "nm.npz", *FAST])
    assert result.exit_code != 0 and "hdn-deploy[train]" in result.output
    assert not (tmp_path / "nm.npz").exists()
