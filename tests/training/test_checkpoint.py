"""Checkpoints: safetensors + JSON header, no pickle, clear errors."""
import json

import pytest
import torch
from safetensors.torch import save_file

from hdn_deploy.errors import PackageError
from hdn_deploy.training.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from hdn_deploy.training.config import ModelConfig
from hdn_deploy.training.data import Normalization
from hdn_deploy.training.model import LadderVAE

CFG = ModelConfig(z_dims=(4, 4), n_filters=8, blocks_per_level=1, patch_size=32)


def _ckpt() -> Checkpoint:
    torch.manual_seed(0)
    return Checkpoint(model_config=CFG, normalization=Normalization(10.0, 2.0),
                      model_state=LadderVAE(CFG).state_dict(),
                      likelihood={"kind": "gaussian", "sigma": 3.0}, provenance={"step": 5})


def test_round_trip(tmp_path):
    path = save_checkpoint(tmp_path / "c.safetensors", _ckpt())
    loaded = load_checkpoint(path)
    assert loaded.model_config == CFG
    assert loaded.normalization == Normalization(10.0, 2.0)
    assert loaded.provenance == {"step": 5}
    for key, value in _ckpt().model_state.items():
        assert torch.equal(loaded.model_state[key], value)
    assert isinstance(loaded.build_model(), LadderVAE)
    assert not list(tmp_path.glob(".*tmp"))


def test_file_is_safetensors_not_pickle(tmp_path):
    path = save_checkpoint(tmp_path / "c.safetensors", _ckpt())
    raw = path.read_bytes()
    header_len = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + header_len])
    assert "hdn" in header["__metadata__"]
    assert b"\x80\x04" not in raw[:2]  # no pickle protocol marker at the start


def test_unknown_format_version_is_refused(tmp_path):
    path = tmp_path / "future.safetensors"
    header = {"format": "hdn-deploy-checkpoint", "format_version": 99}
    save_file({"model.x": torch.zeros(1)}, str(path), metadata={"hdn": json.dumps(header)})
    with pytest.raises(PackageError, match="version 99 is not supported"):
        load_checkpoint(path)


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"\x10\x00\x00\x00\x00\x00\x00\x00{broken"])
def test_corrupt_file_is_refused_with_its_name(tmp_path, content):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(PackageError, match="bad.safetensors"):
        load_checkpoint(path)


def test_truncated_file_is_refused(tmp_path):
    path = save_checkpoint(tmp_path / "c.safetensors", _ckpt())
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(PackageError, match="c.safetensors"):
        load_checkpoint(path)


def test_missing_file(tmp_path):
    with pytest.raises(PackageError, match="not found"):
        load_checkpoint(tmp_path / "nope.safetensors")


def _rewrite_header(path, edit) -> None:
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as f:
        header = json.loads(f.metadata()["hdn"])
    edit(header)
    save_file(load_file(str(path)), str(path), metadata={"hdn": json.dumps(header)})


def test_data_range_round_trips_and_old_checkpoints_have_none(tmp_path):
    import numpy as np

    from hdn_deploy.training.data import compute_normalization

    frames = [np.arange(10_000, dtype=np.float32).reshape(100, 100)]
    norm = compute_normalization(frames)
    rng = norm.data_range
    assert (rng.min, rng.max) == (0.0, 9999.0)
    assert rng.p0_1 == pytest.approx(9.999) and rng.p99_9 == pytest.approx(9989.001)
    ckpt = _ckpt()
    ckpt.normalization = norm
    path = save_checkpoint(tmp_path / "c.safetensors", ckpt)
    assert load_checkpoint(path).normalization == norm
    # a checkpoint written before the range existed: mean and std only
    _rewrite_header(path, lambda h: h["normalization"].pop("data_range"))
    old = load_checkpoint(path).normalization
    assert (old.mean, old.std, old.data_range) == (norm.mean, norm.std, None)


def test_malformed_normalization_names_the_file_and_key(tmp_path):
    path = save_checkpoint(tmp_path / "c.safetensors", _ckpt())
    _rewrite_header(path, lambda h: h["normalization"].update(std="two"))
    with pytest.raises(PackageError, match=r"c.safetensors: expected a finite number.*'normalization.std'"):
        load_checkpoint(path)
