"""A package whose graphs do not match its manifest fails at load, naming the mismatch."""
from __future__ import annotations

import json
import re
import shutil

import pytest

from hdn_deploy.errors import PackageError
from hdn_deploy.graph_check import graph_io
from hdn_deploy.package import DECODER_FILE, ENCODER_FILE, MANIFEST_FILE, load_package, sha256_file
from conftest import TINY_ARCH


def _untrained_package(folder, **arch):
    """Export an untrained model of architecture TINY_ARCH updated by ``arch``."""
    torch = pytest.importorskip("torch")
    from hdn_deploy.export import package_from_checkpoint
    from hdn_deploy.training.checkpoint import Checkpoint, save_checkpoint
    from hdn_deploy.training.config import ModelConfig
    from hdn_deploy.training.data import Normalization
    from hdn_deploy.training.model import LadderVAE

    torch.manual_seed(0)
    config = ModelConfig(**{**TINY_ARCH, **arch})
    ckpt = Checkpoint(model_config=config, normalization=Normalization(100.0, 50.0),
                      model_state=LadderVAE(config).state_dict(),
                      likelihood={"kind": "gaussian", "sigma": 20.0})
    save_checkpoint(folder / "ckpt.safetensors", ckpt)
    return package_from_checkpoint(folder / "ckpt.safetensors", folder / "pkg", verify=False)


@pytest.fixture(scope="module")
def other_models(tmp_path_factory):
    """Models that differ from the tiny one: latent channels, levels, feature channels."""
    root = tmp_path_factory.mktemp("other")
    (root / "channels").mkdir()
    (root / "levels").mkdir()
    for name in ("filters",):
        (root / name).mkdir()
    return {"channels": _untrained_package(root / "channels", z_dims=(2, 2, 2)),
            "levels": _untrained_package(root / "levels", z_dims=(4, 4)),
            "filters": _untrained_package(root / "filters", n_filters=4)}


def _swap_graph(package, other, graph_file, tmp_path):
    """Copy ``package`` with ``graph_file`` taken from ``other`` and the hash updated."""
    folder = shutil.copytree(package, tmp_path / "swapped")
    shutil.copy(other / graph_file, folder / graph_file)
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    graph = "decoder" if graph_file == DECODER_FILE else "encoder"
    manifest["graphs"][graph]["sha256"] = sha256_file(folder / graph_file)
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest))
    return folder


def test_the_tiny_package_passes(tiny_package):
    inputs, outputs = graph_io(tiny_package / DECODER_FILE)
    assert sorted(t.name for t in inputs) == [f"{k}_{i}" for k in ("bu", "eps") for i in range(3)]
    assert [(t.name, t.dims[1]) for t in outputs] == [("samples", 1)]
    assert {t.name: t.dims[1] for t in inputs}["eps_2"] == 4
    _, encoder_outputs = graph_io(tiny_package / ENCODER_FILE)
    assert [(t.name, t.dims[1]) for t in encoder_outputs] == [(f"bu_{i}", 8) for i in range(3)]
    load_package(tiny_package)


def test_encoder_with_other_feature_channels(tiny_package, other_models, tmp_path):
    folder = _swap_graph(tiny_package, other_models["filters"], ENCODER_FILE, tmp_path)
    with pytest.raises(PackageError) as err:
        load_package(folder)
    message = str(err.value)
    assert "encoder graph (encoder.onnx)" in message
    assert "output bu_0 has 4 channels, the manifest says 8" in message


def test_decoder_with_other_latent_channels(tiny_package, other_models, tmp_path):
    folder = _swap_graph(tiny_package, other_models["channels"], DECODER_FILE, tmp_path)
    with pytest.raises(PackageError) as err:
        load_package(folder)
    message = str(err.value)
    assert str(folder) in message and "decoder graph (decoder.onnx)" in message
    assert "input eps_0 has 2 channels, the manifest says 4" in message
    assert "another model" in message


def test_denoiser_refuses_at_load(tiny_package, other_models, tmp_path):
    from hdn_deploy import Denoiser

    folder = _swap_graph(tiny_package, other_models["channels"], DECODER_FILE, tmp_path)
    with pytest.raises(PackageError, match="eps_1 has 2 channels"):
        Denoiser(folder, backend="cpu")


@pytest.mark.parametrize("graph_file, expected", [
    (DECODER_FILE, "inputs ['bu_2', 'eps_2'] are missing"),
    (ENCODER_FILE, "outputs ['bu_2'] are missing"),
])
def test_graph_from_a_model_with_fewer_levels(tiny_package, other_models, tmp_path,
                                              graph_file, expected):
    folder = _swap_graph(tiny_package, other_models["levels"], graph_file, tmp_path)
    with pytest.raises(PackageError, match=re.escape(expected)) as err:
        load_package(folder)
    assert f"({graph_file})" in str(err.value)


def test_graph_that_is_not_onnx(tiny_package, tmp_path):
    other = tmp_path / "junk"
    other.mkdir()
    (other / DECODER_FILE).write_bytes(b"\xff" * 64)
    folder = _swap_graph(tiny_package, other, DECODER_FILE, tmp_path)
    with pytest.raises(PackageError, match="decoder.onnx: not a readable ONNX model"):
        load_package(folder)


def test_cli_exits_2_before_any_output(tiny_package, other_models, tmp_path, data_dir):
    from click.testing import CliRunner

    from hdn_deploy.cli.main import main

    folder = _swap_graph(tiny_package, other_models["channels"], DECODER_FILE, tmp_path)
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["denoise", str(data_dir / "noisy.tif"), "-m", str(folder),
                                    "-o", str(out), "--n-samples", "1", "--quiet"])
    assert res.exit_code == 2, res.output
    assert f"Error: {folder}: the decoder graph (decoder.onnx) does not match" in res.output
    assert "Traceback" not in res.output and not out.exists()
