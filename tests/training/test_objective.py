"""The training objective, optimiser choices, fine-tuning (--init) and presets."""
from types import SimpleNamespace

import numpy as np
import pytest
import tifffile
import torch

from conftest import SIGMA, TINY_ARCH, noisy, synthetic_clean
from hdn_deploy.errors import ConfigError, InputError
from hdn_deploy.training.checkpoint import load_checkpoint
from hdn_deploy.training.config import PRESETS, ModelConfig, TrainConfig
from hdn_deploy.training.data import Normalization
from hdn_deploy.training.model import LadderVAE, TopDownResult
from hdn_deploy.training.noise_models import GaussianNoiseModel
from hdn_deploy.training.trainer import TrainingRun, hdn_loss, init_weights, train


def _loss_with_kl(kl_per_level, free_bits=1.0, patch=8):
    """hdn_loss on a fake model output whose signal equals the observation (recon = 0)."""
    model = SimpleNamespace(config=SimpleNamespace(free_bits=free_bits))
    batch = torch.zeros(len(kl_per_level[0]), 1, patch, patch)
    result = TopDownResult(signal=batch.clone(), kl=[torch.tensor(k) for k in kl_per_level], z=[])
    return hdn_loss(model, batch, result, GaussianNoiseModel(1.0), Normalization(0.0, 1.0))


def test_free_bits_clamp_each_sample_before_the_batch_mean():
    # Level 0: samples at 0.5 and 3.0 nats straddle the floor of 1 nat.
    #   per sample (reference): mean(max(0.5, 1), max(3.0, 1)) = mean(1.0, 3.0) = 2.0
    #   batch mean first (wrong): max(mean(0.5, 3.0), 1) = 1.75
    # Level 1: 0.2 and 0.4 are both below the floor: 1.0 either way.
    losses = _loss_with_kl([[0.5, 3.0], [0.2, 0.4]], free_bits=1.0, patch=8)
    assert float(losses["kl"]) == pytest.approx((2.0 + 1.0) / 64)
    assert float(losses["kl_raw"]) == pytest.approx((1.75 + 0.3) / 64)
    assert float(losses["loss"] - losses["recon"]) == pytest.approx((2.0 + 1.0) / 64)
    np.testing.assert_allclose(losses["kl_levels"].numpy(), [1.75 / 64, 0.3 / 64], rtol=1e-6)


@pytest.fixture(scope="module")
def noisy_tif(tmp_path_factory):
    path = tmp_path_factory.mktemp("objective") / "noisy.tif"
    tifffile.imwrite(path, noisy(synthetic_clean(128, 128)))
    return path


def _run(noisy_tif, run_dir, **train):
    cfg = dict(batch_size=4, max_steps=6, steps_per_epoch=3, val_patches=8, seed=3)
    cfg.update(train)
    return TrainingRun(run_dir=run_dir, data=[str(noisy_tif)], model_config=ModelConfig(**TINY_ARCH),
                       train_config=TrainConfig(**cfg), noise_model=GaussianNoiseModel(SIGMA))


def test_virtual_batches_accumulate_the_same_gradient_without_batchnorm(noisy_tif, tmp_path):
    arch = {**TINY_ARCH, "batchnorm": False, "dropout": 0.0}

    def grads(vbs):
        torch.manual_seed(0)
        run = TrainingRun(run_dir=tmp_path, data=[str(noisy_tif)], model_config=ModelConfig(**arch),
                          train_config=TrainConfig(batch_size=4, max_steps=1, val_patches=8, seed=3,
                                                   virtual_batch_size=vbs, lr=1e-12),
                          noise_model=GaussianNoiseModel(SIGMA))
        torch.manual_seed(1)  # same eps draws
        before = {k: v.clone() for k, v in run.model.state_dict().items()}
        run.train_step()
        return [p.grad.clone() for p in run.model.parameters()], before

    whole, _ = grads(None)
    split, _ = grads(2)
    # Two chunks draw their eps in two calls, so compare with the whole-batch gradient only in
    # size: same order of magnitude, finite, and not identical to zero.
    for a, b in zip(whole, split):
        assert torch.isfinite(b).all()
    total_a = torch.sqrt(sum((g ** 2).sum() for g in whole))
    total_b = torch.sqrt(sum((g ** 2).sum() for g in split))
    assert 0.5 < float(total_b / total_a) < 2.0


def test_cosine_schedule_warms_up_and_decays(noisy_tif, tmp_path):
    run = _run(noisy_tif, tmp_path, lr=1e-3, lr_schedule="cosine", warmup_steps=4, max_steps=100,
               final_lr_fraction=0.1)
    assert run.lr_at(0) == pytest.approx(1e-3 / 4)
    assert run.lr_at(3) == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * 0.03))))
    assert run.lr_at(100) == pytest.approx(1e-4)
    lrs = [run.lr_at(s) for s in range(4, 100)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
    plateau = _run(noisy_tif, tmp_path / "p", lr=1e-3, warmup_steps=2)
    assert plateau.lr_at(0) == pytest.approx(5e-4) and plateau.lr_at(2) is None


@pytest.mark.parametrize("name", ["adam", "adamw", "adamax"])
def test_optimizer_choice(noisy_tif, tmp_path, name):
    run = _run(noisy_tif, tmp_path, optimizer=name)
    assert type(run.optimizer).__name__.lower() == name


def test_unknown_optimizer_and_bad_virtual_batch_are_clear_errors():
    with pytest.raises(ConfigError, match="optimizer 'sgd' unknown"):
        TrainConfig(optimizer="sgd")
    with pytest.raises(ConfigError, match="virtual_batch_size"):
        TrainConfig(batch_size=4, virtual_batch_size=8)


def test_init_starts_from_the_checkpoint_weights(noisy_tif, tmp_path):
    first = train([noisy_tif], tmp_path / "a", model_config=ModelConfig(**TINY_ARCH),
                  train_config=TrainConfig(batch_size=4, max_steps=3, steps_per_epoch=3,
                                           val_patches=8, seed=3),
                  noise_model=GaussianNoiseModel(SIGMA), progress=False)
    run = _run(noisy_tif, tmp_path / "b", init=str(first.best_checkpoint), seed=99)
    ref = load_checkpoint(first.best_checkpoint).model_state
    for key, value in run.model.state_dict().items():
        assert torch.equal(value, ref[key]), key
    # A folder holding checkpoint.safetensors (a package exported with its checkpoint) works too.
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "checkpoint.safetensors").write_bytes(first.best_checkpoint.read_bytes())
    run = _run(noisy_tif, tmp_path / "c", init=str(pkg))
    assert torch.equal(run.model.state_dict()["top_prior"], ref["top_prior"])


def test_init_with_another_architecture_names_what_differs(noisy_tif, tmp_path):
    first = train([noisy_tif], tmp_path / "a", model_config=ModelConfig(**TINY_ARCH),
                  train_config=TrainConfig(batch_size=4, max_steps=3, steps_per_epoch=3,
                                           val_patches=8, seed=3),
                  noise_model=GaussianNoiseModel(SIGMA), progress=False)
    other = LadderVAE(ModelConfig(**{**TINY_ARCH, "n_filters": TINY_ARCH["n_filters"] * 2}))
    with pytest.raises(ConfigError, match=r"do not fit this model.*n_filters"):
        init_weights(other, first.best_checkpoint)
    with pytest.raises(InputError, match="no checkpoint.safetensors"):
        init_weights(other, tmp_path)


def test_cpu_preset_is_a_valid_config():
    preset = PRESETS["cpu"]
    ModelConfig.from_dict(preset["model"])
    cfg = TrainConfig.from_dict(preset["train"])
    assert cfg.lr_schedule == "cosine" and cfg.max_steps
    # measured: dropout 0.2 cost 0.6 dB; holding out a quarter of a single image 0.4 dB
    assert preset["model"]["dropout"] == 0.0 and cfg.val_fraction == 0.0


def test_snapshots_are_kept_every_n_steps(noisy_tif, tmp_path):
    train([noisy_tif], tmp_path / "s", model_config=ModelConfig(**TINY_ARCH),
          train_config=TrainConfig(batch_size=4, max_steps=6, steps_per_epoch=2, val_patches=8,
                                   seed=3, snapshot_every=3),
          noise_model=GaussianNoiseModel(SIGMA), progress=False)
    assert sorted(p.name for p in (tmp_path / "s").glob("step_*.safetensors")) == [
        "step_4.safetensors", "step_6.safetensors"]
