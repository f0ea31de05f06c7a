"""Training loop: learning, exact resume, KL warm-up, collapse warning, bad input."""
import csv
import math

import numpy as np
import pytest
import tifffile
import torch

from conftest import SIGMA, TINY_ARCH, noisy, synthetic_clean
from hdn_deploy.errors import ConfigError, InputError, TrainingError
from hdn_deploy.training.checkpoint import load_checkpoint
from hdn_deploy.training.config import ModelConfig, TrainConfig
from hdn_deploy.training.noise_models import GaussianNoiseModel
from hdn_deploy.training.trainer import TrainingRun, collapse_diagnosis, resume, train


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


def test_collapse_diagnosis_rules():
    assert collapse_diagnosis([5.0, 3.0, 1.0], free_bits=1.0, output_var_ratio=0.8) is None
    # A flat output with informative latents is a model that has not learned yet.
    assert collapse_diagnosis([50.0, 30.0, 10.0], free_bits=1.0, output_var_ratio=0.001) is None
    # The reported structured collapse: 0.004 nats/pixel = 16.4 nats per 64x64 patch over 6
    # levels, output std 0.58 against the clean image's 28.8.
    flat = collapse_diagnosis([1.0, 1.0, 1.0, 1.0, 1.4, 11.0], free_bits=1.0,
                              output_var_ratio=(0.58 / 28.8) ** 2)
    assert "flat image" in flat and "0.0 %" in flat and "16.4 nats" in flat
    floor = collapse_diagnosis([1.0, 1.02, 0.4], free_bits=1.0, output_var_ratio=0.9)
    assert "free-bits floor" in floor


def test_healthy_first_validation_is_not_flagged(noisy_tif, tmp_path):
    result = _train(noisy_tif, tmp_path / "ok", 10)
    assert not result.collapse_warning
    rows = list(csv.DictReader((tmp_path / "ok" / "metrics.csv").open()))
    assert rows[0]["collapse"] == "0" and float(rows[0]["val_output_var_ratio"]) >= 0
    assert {f"val_kl_patch_{i}" for i in range(len(TINY_ARCH["z_dims"]))} <= set(rows[0])


def _collapsed_validation(run):
    """Make every validation report the reported structured collapse's figures."""
    real = run.validate

    def validate():
        val = real()
        val.update({f"kl_patch_{i}": 1.0 for i in range(run.model_config.n_levels)})
        val["output_var_ratio"] = 0.0004
        return val

    run.validate = validate


def test_forced_collapse_is_caught_at_the_first_validation(noisy_tif, tmp_path, caplog):
    run = TrainingRun(run_dir=tmp_path, data=[str(noisy_tif)], model_config=ModelConfig(**TINY_ARCH),
                      train_config=TrainConfig(max_steps=4, steps_per_epoch=2, val_patches=4,
                                               batch_size=2),
                      noise_model=GaussianNoiseModel(SIGMA))
    _collapsed_validation(run)
    result = run.run(progress=False)
    assert result.collapse_warning and "free-bits floor" in caplog.text
    assert run.history[0]["collapse"] == 1


def test_export_refuses_a_collapsed_model_unless_allowed(noisy_tif, tmp_path):
    """A collapsed model returns a flat image, worse than its input: its checkpoints say so
    and export refuses them (API and CLI, exit 2) unless explicitly allowed."""
    from click.testing import CliRunner

    from hdn_deploy.cli.main import main
    from hdn_deploy.errors import PackageError
    from hdn_deploy.export import package_from_checkpoint
    from hdn_deploy.training.checkpoint import load_checkpoint

    run = TrainingRun(run_dir=tmp_path / "run", data=[str(noisy_tif)],
                      model_config=ModelConfig(**TINY_ARCH),
                      train_config=TrainConfig(max_steps=4, steps_per_epoch=2, val_patches=4,
                                               batch_size=2, snapshot_every=2),
                      noise_model=GaussianNoiseModel(SIGMA))
    _collapsed_validation(run)
    run.run(progress=False)
    for name in ("best", "last", "step_2"):
        collapse = load_checkpoint(tmp_path / "run" / f"{name}.safetensors").provenance["collapse"]
        assert collapse.startswith("step ") and "free-bits floor" in collapse
    best = tmp_path / "run" / "best.safetensors"
    with pytest.raises(PackageError, match="collapsed in training.*--allow-collapsed"):
        package_from_checkpoint(best, tmp_path / "pkg", verify=False)
    assert not (tmp_path / "pkg").exists()
    res = CliRunner().invoke(main, ["export", str(best), "-o", str(tmp_path / "pkg"), "--no-verify"])
    assert res.exit_code == 2 and "collapsed in training" in res.output
    res = CliRunner().invoke(main, ["export", str(best), "-o", str(tmp_path / "pkg"), "--no-verify",
                                    "--allow-collapsed"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "pkg" / "manifest.json").is_file()


def test_stop_on_collapse_ends_the_run_with_a_clear_error(noisy_tif, tmp_path):
    run = TrainingRun(run_dir=tmp_path, data=[str(noisy_tif)], model_config=ModelConfig(**TINY_ARCH),
                      train_config=TrainConfig(max_steps=4, steps_per_epoch=2, val_patches=4,
                                               batch_size=2, stop_on_collapse=True),
                      noise_model=GaussianNoiseModel(SIGMA))
    _collapsed_validation(run)
    with pytest.raises(TrainingError, match=r"step 2: posterior collapse.*Try: a KL warm-up"):
        run.run(progress=False)
    assert run.step == 2  # stopped at the first validation, not at max_steps


def test_small_images_are_refused_with_the_file_name(tmp_path):
    path = tmp_path / "tiny.tif"
    tifffile.imwrite(path, np.ones((16, 16), np.float32))
    with pytest.raises(InputError, match="tiny.tif.*smaller than the training patch"):
        _train(path, tmp_path / "run", 5)
    assert not (tmp_path / "run").exists()


def test_run_end_records_the_tile_check_in_the_best_weights_and_export_uses_it(noisy_tif, tmp_path):
    from hdn_deploy.export.onnx_export import package_from_checkpoint
    from hdn_deploy.package import load_package

    result = _train(noisy_tif, tmp_path / "run", 10)
    record = load_checkpoint(result.best_checkpoint).provenance["tile_check"]
    assert record == result.tile_check
    # tiles of 8, 4, 2 x the 32-px patch (256 on the 128-px image mirrored)
    assert set(record["drift"]) == {"256", "128", "64"}
    assert record["safe_tile"] in (256, 128, 64, None)
    package = load_package(package_from_checkpoint(result.best_checkpoint, tmp_path / "pkg"))
    assert package.recommended_tile == (record["safe_tile"] or 64)
    assert package.manifest.provenance["tile_check"]["drift"] == record["drift"]


def test_split_holds_out_bottom_rows_or_whole_frames_and_nothing_at_zero():
    from hdn_deploy.training.data import split_frames

    image = np.arange(256 * 100, dtype=np.float32).reshape(256, 100)
    (train_part,), (val_part,) = split_frames([image], 0.1, 64)
    assert train_part.shape == (192, 100) and val_part.shape == (64, 100)  # >= one patch
    frames = [image + i for i in range(20)]
    train_frames, val_frames = split_frames(frames, 0.1, 64)
    assert len(train_frames) == 18 and val_frames[0] is frames[18]
    train_all, val_all = split_frames([image], 0.0, 64)
    assert train_all[0] is image and val_all[0] is image  # every pixel trained on
    with pytest.raises(ConfigError, match=r"val_fraction must be in \[0, 1\)"):
        TrainConfig(val_fraction=1.0)


def test_val_fraction_zero_trains_on_the_whole_image(noisy_tif, tmp_path):
    result = _train(noisy_tif, tmp_path / "all", 5, val_fraction=0.0)
    assert math.isfinite(result.best_val_loss) and result.steps == 5


def test_resuming_a_finished_run_records_the_tile_check(noisy_tif, tmp_path):
    from hdn_deploy.training.checkpoint import save_checkpoint

    result = _train(noisy_tif, tmp_path / "old", 5)
    ckpt = load_checkpoint(result.best_checkpoint)
    ckpt.provenance = {k: v for k, v in ckpt.provenance.items() if k != "tile_check"}
    save_checkpoint(result.best_checkpoint, ckpt)  # as written before the check existed
    again = resume(tmp_path / "old", progress=False)
    assert again.steps == 5
    assert load_checkpoint(result.best_checkpoint).provenance["tile_check"] == result.tile_check
