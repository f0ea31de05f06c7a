"""`hdn-deploy train`: config files, flag overrides, resume and every bad input."""
import json

import numpy as np
import pytest
import tifffile
import torch
from click.testing import CliRunner
from safetensors.torch import save_file

from conftest import noisy, synthetic_clean
from hdn_deploy.cli.main import main
from hdn_deploy.cli.train import merge_settings, read_config_file
from hdn_deploy.errors import ConfigError
from hdn_deploy.training.checkpoint import load_checkpoint
from hdn_deploy.training.noise_models import GMMNoiseModel

TINY = ["--levels", "3", "--latent-channels", "4", "--filters", "8", "--blocks", "1",
        "--patch-size", "32", "--batch-size", "4", "--steps-per-epoch", "2", "--val-patches", "4",
        "--quiet"]


@pytest.fixture(scope="module")
def good_tif(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "noisy.tif"
    tifffile.imwrite(path, noisy(synthetic_clean(96, 96)))
    return path


def _invoke(args):
    return CliRunner().invoke(main, args, catch_exceptions=False)


def _assert_no_results(run_dir):
    assert not (run_dir / "best.safetensors").exists()
    assert not (run_dir / "metrics.csv").exists()


def test_train_with_flags_then_resume(good_tif, tmp_path):
    run_dir = tmp_path / "run"
    result = _invoke(["train", str(good_tif), "-o", str(run_dir), "--gaussian-sigma", "20",
                      "--max-steps", "2", *TINY])
    assert result.exit_code == 0, result.output
    assert "trained 2 steps" in result.output
    ckpt = load_checkpoint(run_dir / "best.safetensors")
    assert ckpt.model_config.z_dims == (4, 4, 4) and ckpt.model_config.n_filters == 8
    result = _invoke(["train", "--resume", str(run_dir), "--max-steps", "4", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "trained 4 steps" in result.output


@pytest.mark.parametrize("suffix", [".yaml", ".toml"])
def test_config_file_with_flags_overriding(good_tif, tmp_path, suffix):
    if suffix == ".yaml":
        text = (f"data: ['{good_tif}']\ngaussian_sigma: 20\nstructured: true\n"
                "model: {z_dims: [4, 4, 4], n_filters: 8, blocks_per_level: 1, patch_size: 32}\n"
                "train: {batch_size: 4, max_steps: 50, steps_per_epoch: 2, val_patches: 4}\n")
    else:
        text = (f"data = ['{good_tif}']\ngaussian_sigma = 20\nstructured = true\n[model]\n"
                "z_dims = [4, 4, 4]\nn_filters = 8\nblocks_per_level = 1\npatch_size = 32\n"
                "[train]\nbatch_size = 4\nmax_steps = 50\nsteps_per_epoch = 2\nval_patches = 4\n")
    config = tmp_path / f"cfg{suffix}"
    config.write_text(text)
    run_dir = tmp_path / "run"
    result = _invoke(["train", "--config", str(config), "-o", str(run_dir), "--max-steps", "2",
                      "--filters", "6", "--quiet"])
    assert result.exit_code == 0, result.output
    ckpt = load_checkpoint(run_dir / "best.safetensors")
    assert ckpt.model_config.n_filters == 6  # the flag wins over the file
    assert ckpt.likelihood["kind"] == "lines"  # structured from the file
    assert ckpt.model_config.uncond_levels == ()
    assert ckpt.provenance["step"] == 2


def test_merge_settings_flags_override_file():
    merged = merge_settings({"model": {"n_filters": 64}, "train": {"lr": 1e-3}},
                            {"filters": 16, "lr": None, "levels": 2, "latent_channels": 8})
    assert merged["model"] == {"n_filters": 16, "z_dims": [8, 8]}
    assert merged["train"] == {"lr": 1e-3}


def test_config_file_unknown_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("dat: [x]\n")
    with pytest.raises(ConfigError, match="unknown keys"):
        read_config_file(path)


def _bad(tmp_path, name, array=None, raw=None):
    path = tmp_path / name
    if raw is not None:
        path.write_bytes(raw)
    else:
        tifffile.imwrite(path, array, photometric="rgb" if array.ndim == 3 else None)
    return path


@pytest.mark.parametrize("case, expected", [
    ("missing", "does not exist"),
    ("empty_dir", "contains no .tif"),
    ("not_tiff", "not_tiff.tif"),
    ("rgb", "rgb.tif"),
    ("nan", "nan.tif"),
    ("inf", "inf.tif"),
    ("small", "small.tif"),
])
def test_bad_data_fails_cleanly(tmp_path, case, expected):
    data = {
        "missing": lambda: tmp_path / "missing.tif",
        "empty_dir": lambda: (tmp_path / "empty").mkdir() or tmp_path / "empty",
        "not_tiff": lambda: _bad(tmp_path, "not_tiff.tif", raw=b"hello, not an image"),
        "rgb": lambda: _bad(tmp_path, "rgb.tif", np.zeros((64, 64, 3), np.uint8)),
        "nan": lambda: _bad(tmp_path, "nan.tif", np.full((64, 64), np.nan, np.float32)),
        "inf": lambda: _bad(tmp_path, "inf.tif", np.full((64, 64), np.inf, np.float32)),
        "small": lambda: _bad(tmp_path, "small.tif", np.ones((16, 16), np.float32)),
    }[case]()
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", str(data), "-o", str(run_dir),
                                       "--gaussian-sigma", "5", "--max-steps", "1", *TINY])
    assert result.exit_code != 0
    assert expected.lower() in result.output.lower(), result.output
    _assert_no_results(run_dir)


def test_noise_model_of_wrong_layout(good_tif, tmp_path):
    nm = tmp_path / "nm.npz"
    np.savez(nm, weights=np.zeros(3))
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", str(good_tif), "-o", str(run_dir),
                                       "--noise-model", str(nm), "--max-steps", "1", *TINY])
    assert result.exit_code != 0 and "nm.npz" in result.output
    _assert_no_results(run_dir)


def test_needs_exactly_one_likelihood(good_tif, tmp_path):
    result = CliRunner().invoke(main, ["train", str(good_tif), "-o", str(tmp_path / "r"), *TINY])
    assert result.exit_code != 0 and "exactly one likelihood" in result.output


def test_resume_from_unknown_checkpoint_version(good_tif, tmp_path):
    run_dir = tmp_path / "run"
    assert _invoke(["train", str(good_tif), "-o", str(run_dir), "--gaussian-sigma", "20",
                    "--max-steps", "2", *TINY]).exit_code == 0
    header = {"format": "hdn-deploy-checkpoint", "format_version": 99}
    save_file({"model.x": torch.zeros(1)}, str(run_dir / "last.safetensors"),
              metadata={"hdn": json.dumps(header)})
    result = CliRunner().invoke(main, ["train", "--resume", str(run_dir), "--max-steps", "4"])
    assert result.exit_code != 0
    assert "last.safetensors" in result.output and "version 99" in result.output


def test_preset_then_file_then_flags():
    merged = merge_settings({"preset": "cpu", "train": {"lr": 5e-4}}, {"batch_size": 8})
    assert merged["model"]["n_filters"] == 16 and merged["model"]["blocks_per_level"] == 3
    assert merged["train"]["lr_schedule"] == "cosine"
    assert merged["train"]["lr"] == 5e-4 and merged["train"]["batch_size"] == 8
    with pytest.raises(ConfigError, match="unknown preset 'gpu'"):
        merge_settings({"preset": "gpu"}, {})


def test_preset_train_and_fine_tune_with_init(good_tif, tmp_path):
    first = _invoke(["train", str(good_tif), "-o", str(tmp_path / "a"), "--preset", "cpu",
                     "--gaussian-sigma", "20", *TINY, "--max-steps", "2"])
    assert first.exit_code == 0, first.output
    cfg = load_checkpoint(tmp_path / "a" / "best.safetensors").provenance["train_config"]
    assert cfg["optimizer"] == "adamax" and cfg["lr_schedule"] == "cosine"
    tuned = _invoke(["train", str(good_tif), "-o", str(tmp_path / "b"), "--gaussian-sigma", "20",
                     "--preset", "cpu", *TINY, "--max-steps", "2",
                     "--init", str(tmp_path / "a" / "best.safetensors")])
    assert tuned.exit_code == 0, tuned.output
    wrong = CliRunner().invoke(main, ["train", str(good_tif), "-o", str(tmp_path / "c"),
                                      "--gaussian-sigma", "20", *TINY, "--filters", "16",
                                      "--max-steps", "2", "--init",
                                      str(tmp_path / "a" / "best.safetensors")])
    assert wrong.exit_code == 2 and "do not fit this model" in wrong.output
    _assert_no_results(tmp_path / "c")


def test_line_artefacts_estimate_the_offsets_and_reach_the_checkpoint(tmp_path):
    rng = np.random.default_rng(3)
    image = noisy(synthetic_clean(96, 96)) + rng.normal(0, 8.0, 96)[:, None]
    data = tmp_path / "rows.tif"
    tifffile.imwrite(data, image.astype(np.float32))
    run_dir = tmp_path / "run"
    result = _invoke(["train", str(data), "-o", str(run_dir), "--gaussian-sigma", "20",
                      "--line-artefacts", "rows", "--max-steps", "2", *TINY])
    assert result.exit_code == 0, result.output
    assert "offset std estimated from the data: rows" in result.output
    likelihood = load_checkpoint(run_dir / "best.safetensors").likelihood
    assert likelihood["kind"] == "lines" and likelihood["column_std"] == 0
    assert 6.0 < likelihood["row_std"] < 10.0  # 8 drawn; the estimate's own spread
    result = _invoke(["train", "--resume", str(run_dir), "--max-steps", "3", "--quiet"])
    assert result.exit_code == 0, result.output


def test_line_artefacts_on_a_noise_model_file(good_tif, tmp_path):
    gmm = tmp_path / "gmm.npz"
    GMMNoiseModel(np.random.default_rng(0).normal(0, 0.1, (9, 2)).astype(np.float32),
                  min_signal=0.0, max_signal=255.0, min_sigma=50.0).save(gmm)
    run_dir = tmp_path / "run"
    result = _invoke(["train", str(good_tif), "-o", str(run_dir), "--noise-model", str(gmm),
                      "--structured", "--max-steps", "2", *TINY])
    assert result.exit_code == 0, result.output
    likelihood = load_checkpoint(run_dir / "best.safetensors").likelihood
    assert likelihood["kind"] == "lines" and likelihood["pixel"]["kind"] == "gmm"


def test_uncond_levels_flag(good_tif, tmp_path):
    run_dir = tmp_path / "run"
    result = _invoke(["train", str(good_tif), "-o", str(run_dir), "--gaussian-sigma", "20",
                      "--uncond-levels", "0,1", "--max-steps", "2", *TINY])
    assert result.exit_code == 0, result.output
    ckpt = load_checkpoint(run_dir / "best.safetensors")
    assert ckpt.model_config.uncond_levels == (0, 1) and ckpt.likelihood["kind"] == "gaussian"
    result = CliRunner().invoke(main, ["train", str(good_tif), "-o", str(tmp_path / "bad"),
                                       "--gaussian-sigma", "20", "--uncond-levels", "zero",
                                       "--max-steps", "2", *TINY])
    assert result.exit_code != 0 and "comma-separated level numbers" in result.output


def test_line_artefacts_with_a_noise_model_without_variance_name_the_file(good_tif, tmp_path):
    nm = tmp_path / "empty.npz"
    hist = np.zeros((3, 4, 4))  # no counts (a histogram without data: no variance anywhere)
    edges = np.arange(5.0) * 80  # bin i spans edges[i] to edges[i + 1]
    hist[1], hist[2] = np.tile(edges[:-1, None], (1, 4)), np.tile(edges[1:, None], (1, 4))
    np.savez(nm, histogram=hist)
    result = CliRunner().invoke(main, ["train", str(good_tif), "-o", str(tmp_path / "r"),
                                       "--noise-model", str(nm), "--structured",
                                       "--max-steps", "1", *TINY])
    assert result.exit_code != 0, result.output
    assert "empty.npz" in result.output and "no variance" in result.output
    _assert_no_results(tmp_path / "r")
