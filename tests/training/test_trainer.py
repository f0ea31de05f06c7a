"""Training loop: learning, exact resume, KL warm-up, collapse warning, bad input."""
import csv
import math

import numpy as np
import pytest
import tifffile
import torch

from conftest import SIGMA, TINY_ARCH, noisy, synthetic_clean
from hdn_deploy.errors import ConfigError, InputError
from hdn_deploy.training.checkpoint import load_checkpoint
from hdn_deploy.training.config import ModelConfig, TrainConfig
from hdn_deploy.training.noise_models import GaussianNoiseModel
from hdn_deploy.training.trainer import TrainingRun, resume, train


@pytest.fixture(scope="module")
def noisy_tif(tmp_path_factory):
    path = tmp_path_factory.mktemp("train") / "noisy.tif"
    tifffile.imwrite(path, noisy(synthetic_clean(128, 128)))
    return path


def _train(data, run_dir, max_steps, **overrides):
    cfg = dict(batch_size=4, max_steps=max_steps, steps_per_epoch=5, val_patches=8, seed=3)
    cfg.update(overrides)
    return train([data], run_dir, model_config=ModelConfig(**TINY_ARCH),
                 train_config=TrainConfig(**cfg), noise_model=GaussianNoiseModel(SIGMA),
                 progress=False)


def test_interrupted_and_resumed_run_ends_with_the_same_weights(noisy_tif, tmp_path):
    straight = _train(noisy_tif, tmp_path / "a", 20)
    _train(noisy_tif, tmp_path / "b", 10)
    resumed = resume(tmp_path / "b", overrides={"max_steps": 20}, progress=False)
    assert straight.steps == resumed.steps == 20
    a = load_checkpoint(tmp_path / "a" / "last.safetensors").model_state
    b = load_checkpoint(tmp_path / "b" / "last.safetensors").model_state
    for key in a:
        assert torch.equal(a[key], b[key]), key
    rows_a = list(csv.DictReader(open(tmp_path / "a" / "metrics.csv")))
    rows_b = list(csv.DictReader(open(tmp_path / "b" / "metrics.csv")))
    assert [r["val_loss"] for r in rows_a] == [r["val_loss"] for r in rows_b]


@pytest.mark.slow
def test_tiny_model_learns_on_synthetic_noisy_data(noisy_tif, tmp_path):
    result = _train(noisy_tif, tmp_path / "learn", 300, batch_size=8, steps_per_epoch=50,
                    val_patches=32)
    first, best = result.history[0]["val_loss"], result.best_val_loss
    # Gaussian NLL per pixel: an untrained net is far off; a trained one approaches
    # log(sigma * sqrt(2 pi)) + 0.5 = 4.41 for sigma=20 plus the KL.
    assert best < first - 0.5, (first, best)
    assert math.isfinite(best)
    header = open(tmp_path / "learn" / "metrics.csv").readline()
    for column in ("val_loss", "val_recon", "val_kl", "train_kl_level_0", "patches_per_s"):
        assert column in header


def test_max_epochs_is_honoured(noisy_tif, tmp_path):
    result = _train(noisy_tif, tmp_path / "e", None, max_epochs=2)
    assert result.steps == 10 and result.epochs == 2


def test_refuses_to_overwrite_a_run(noisy_tif, tmp_path):
    _train(noisy_tif, tmp_path / "r", 5)
    with pytest.raises(ConfigError, match="already holds a run"):
        _train(noisy_tif, tmp_path / "r", 5)


def test_kl_warmup_ramps_weight(noisy_tif, tmp_path):
    run = TrainingRun(run_dir=tmp_path, data=[str(noisy_tif)], model_config=ModelConfig(**TINY_ARCH),
                      train_config=TrainConfig(max_steps=10, kl_warmup_steps=4, val_patches=4),
                      noise_model=GaussianNoiseModel(SIGMA))
    weights = []
    for step in range(6):
        run.step = step
        weights.append(run.kl_weight())
    assert weights == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]


def test_collapse_warning_when_kl_vanishes_and_recon_stalls(noisy_tif, tmp_path, caplog):
    run = TrainingRun(run_dir=tmp_path, data=[str(noisy_tif)], model_config=ModelConfig(**TINY_ARCH),
                      train_config=TrainConfig(max_steps=10, val_patches=4),
                      noise_model=GaussianNoiseModel(SIGMA))
    run.history = [{"val_recon": 5.0}] * 4
    run._check_collapse({"kl_raw": 0.001})
    assert run.collapse_warning and "posterior collapse" in caplog.text
    healthy = TrainingRun(run_dir=tmp_path, data=[str(noisy_tif)], model_config=ModelConfig(**TINY_ARCH),
                          train_config=TrainConfig(max_steps=10, val_patches=4),
                          noise_model=GaussianNoiseModel(SIGMA))
    healthy.history = [{"val_recon": 5.0}] * 4
    healthy._check_collapse({"kl_raw": 0.3})
    assert not healthy.collapse_warning


def test_small_images_are_refused_with_the_file_name(tmp_path):
    path = tmp_path / "tiny.tif"
    tifffile.imwrite(path, np.ones((16, 16), np.float32))
    with pytest.raises(InputError, match="tiny.tif.*smaller than the training patch"):
        _train(path, tmp_path / "run", 5)
    assert not (tmp_path / "run").exists()
