"""Checkpoint -> model package: layout, manifest, parity with PyTorch, graph hygiene."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from hdn_deploy.backends import create_backend  # noqa: E402
from hdn_deploy.denoiser import Denoiser  # noqa: E402
from hdn_deploy.errors import PackageError  # noqa: E402
from hdn_deploy.export import package_from_checkpoint  # noqa: E402
from hdn_deploy.package import (  # noqa: E402
    DECODER_FILE,
    ENCODER_FILE,
    FORMAT_NAME,
    FORMAT_VERSION,
    MANIFEST_FILE,
    load_package,
    sha256_file,
)
from hdn_deploy.training.checkpoint import load_checkpoint  # noqa: E402

RANDOM_OPS = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
              "Multinomial", "Bernoulli", "Dropout"}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _all_nodes(graph):
    """Every node of an ONNX graph, including those of subgraphs (If/Loop bodies)."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _all_nodes(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    yield from _all_nodes(sub)


def _torch_samples(model, image: np.ndarray, eps: list[np.ndarray | None]) -> np.ndarray:
    with torch.no_grad():
        bu = model.bottom_up(torch.from_numpy(image))
        t_eps = [None if e is None else torch.from_numpy(e) for e in eps]
        return model.top_down(bu, t_eps, prediction=True, compute_kl=False).signal.numpy()


def test_package_layout_and_manifest(tiny_package, tiny_run):
    assert sorted(p.name for p in tiny_package.iterdir()) == sorted(
        [MANIFEST_FILE, ENCODER_FILE, DECODER_FILE])
    # the staging folder was renamed, not left beside the package
    assert not [p for p in tiny_package.parent.iterdir() if p.name.startswith(".")]
    m = json.loads((tiny_package / MANIFEST_FILE).read_text())
    expected_keys = {"format", "format_version", "created", "normalization", "spatial_multiple",
                     "training_patch_size", "recommended_tile", "recommended_overlap",
                     "levels", "graphs", "weights_sha256", "likelihood", "intensity_range",
                     "model_config", "provenance", "export", "noise_description",
                     "posterior_logvar_max", "precision"}
    assert set(m) == expected_keys
    assert (m["format"], m["format_version"]) == (FORMAT_NAME, FORMAT_VERSION)
    assert set(m["normalization"]) == {"mean", "std"} and m["normalization"]["std"] > 0
    assert m["spatial_multiple"] == 8 and m["training_patch_size"] == 32
    assert (m["recommended_tile"], m["recommended_overlap"]) == (64, 16)
    assert m["precision"] is None  # an FP32 package
    assert m["levels"] == [{"index": i, "channels": 4, "feature_channels": 8,
                            "downsample": 2 ** (i + 1), "sampled": True} for i in range(3)]
    for name, file in (("encoder", ENCODER_FILE), ("decoder", DECODER_FILE)):
        assert m["graphs"][name] == {"file": file, "sha256": sha256_file(tiny_package / file)}
    assert m["weights_sha256"] == sha256_file(tiny_run / "best.safetensors")
    assert m["likelihood"]["kind"] == "gaussian"
    assert m["export"]["opset"] >= 18
    diff = m["export"]["verified_max_abs_diff"]
    assert diff is not None and 0 <= diff <= 1e-4


def test_files_follow_umask(tiny_package, tiny_run):
    """Atomic writes go through temporary files; the results must not stay 0600/0700."""
    mask = _umask()
    assert (tiny_package.stat().st_mode & 0o777) == 0o777 & ~mask
    assert ((tiny_run / "best.safetensors").stat().st_mode & 0o777) == 0o666 & ~mask
    for name in (MANIFEST_FILE, ENCODER_FILE, DECODER_FILE):
        assert ((tiny_package / name).stat().st_mode & 0o777) == 0o666 & ~mask


def test_onnx_matches_pytorch_on_non_square_input_and_other_batch(tiny_package, tiny_run):
    """Dynamic spatial and sample axes: 64x96 and N=3 (export traced 32x32, N=2)."""
    model = load_checkpoint(tiny_run / "best.safetensors").build_model()
    rng = np.random.default_rng(7)
    image = rng.standard_normal((1, 1, 64, 96), dtype=np.float32)
    eps = [rng.standard_normal((3, *shape), dtype=np.float32)
           for shape in model.latent_shapes(64, 96)]
    expected = _torch_samples(model, image, eps)
    with create_backend("cpu", load_package(tiny_package), threads=1) as backend:
        features = backend.encode(image)
        assert [f.shape for f in features.to_host()] == [(1, 8, 32, 48), (1, 8, 16, 24), (1, 8, 8, 12)]
        got = backend.decode_samples(features, eps)
    assert got.shape == (3, 1, 64, 96) and got.dtype == np.float32
    assert np.abs(got - expected).max() <= 1e-4


def test_graphs_opset_and_no_random_ops(tiny_package):
    for name in (ENCODER_FILE, DECODER_FILE):
        graph = onnx.load(str(tiny_package / name))
        versions = {o.domain: o.version for o in graph.opset_import}
        assert versions.get("", versions.get("ai.onnx", 0)) >= 18
        ops = {node.op_type for node in _all_nodes(graph.graph)}
        assert not ops & RANDOM_OPS, f"{name} has random ops {ops & RANDOM_OPS}"
    decoder = onnx.load(str(tiny_package / DECODER_FILE))
    names = [f"{kind}_{i}" for kind in ("bu", "eps") for i in range(3)]
    assert [i.name for i in decoder.graph.input] == names


def test_export_refuses_existing_output(tiny_run, tmp_path):
    out = tmp_path / "pkg"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(PackageError, match="exists already.*overwrite"):
        package_from_checkpoint(tiny_run / "best.safetensors", out)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    package_from_checkpoint(tiny_run / "best.safetensors", out, overwrite=True, verify=False)
    assert load_package(out).manifest.export.verified_max_abs_diff is None
    assert not (out / "keep.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pkg"]


def test_structured_model_exports_without_level_0_inputs(data_dir, tmp_path):
    from hdn_deploy.training.config import ModelConfig, TrainConfig
    from hdn_deploy.training.noise_models import GaussianNoiseModel
    from hdn_deploy.training.trainer import train

    threads = torch.get_num_threads()
    try:
        train([data_dir / "noisy.tif"], tmp_path / "run",
              model_config=ModelConfig(z_dims=(4, 4, 4), n_filters=8, blocks_per_level=1,
                                       patch_size=32, uncond_levels=(0,)),
              train_config=TrainConfig(batch_size=4, max_steps=5, steps_per_epoch=5,
                                       val_patches=4, seed=0, num_threads=1),
              noise_model=GaussianNoiseModel(20.0), progress=False)
        pkg = package_from_checkpoint(tmp_path / "run" / "best.safetensors", tmp_path / "pkg")
    finally:
        torch.set_num_threads(threads)
    decoder = onnx.load(str(pkg / DECODER_FILE))
    encoder = onnx.load(str(pkg / ENCODER_FILE))
    assert [i.name for i in decoder.graph.input] == ["bu_1", "bu_2", "eps_1", "eps_2"]
    assert [o.name for o in encoder.graph.output] == ["bu_1", "bu_2"]
    package = load_package(pkg)
    assert package.manifest.uncond_levels == (0,)
    assert [lv.index for lv in package.sampled_levels] == [1, 2]
    assert package.manifest.export.verified_max_abs_diff <= 1e-4

    # parity on a non-square input: level 0 runs at its posterior mean in both
    model = load_checkpoint(tmp_path / "run" / "best.safetensors").build_model()
    rng = np.random.default_rng(3)
    image = rng.standard_normal((1, 1, 32, 48), dtype=np.float32)
    eps = [None] + [rng.standard_normal((2, *s), dtype=np.float32)
                    for s in model.latent_shapes(32, 48)[1:]]
    with create_backend("cpu", package, threads=1) as backend:
        got = backend.decode_samples(backend.encode(image), eps[1:])
    assert np.abs(got - _torch_samples(model, image, eps)).max() <= 1e-4

    result = Denoiser(package, backend="cpu", threads=1).denoise(
        rng.normal(100, 20, (20, 30)), n_samples=2, seed=0)
    assert result.mmse.shape == (20, 30) and np.isfinite(result.mmse).all()


def test_posterior_logvar_clamp_keeps_a_blown_up_model_finite(tiny_run, tmp_path):
    """A posterior log-variance of 15 (std ~1800 in latent units) as the reference saw on
    oversized inputs: the exported graphs clamp it to posterior_logvar_max."""
    from hdn_deploy.training.checkpoint import load_checkpoint, save_checkpoint

    ckpt = load_checkpoint(tiny_run / "best.safetensors")
    key = "top_down_levels.2.stochastic.conv_in_q.bias"
    bias = ckpt.model_state[key].clone()
    bias[bias.shape[0] // 2:] = 15.0  # the log-variance half
    ckpt.model_state[key] = bias
    blown = save_checkpoint(tmp_path / "blown.safetensors", ckpt)
    spreads = {}
    for clamp in (None, 4.0):
        # unclamped, the huge values differ between onnxruntime and torch beyond 1e-4 (absolute)
        pkg = package_from_checkpoint(blown, tmp_path / f"pkg_{clamp}", posterior_logvar_max=clamp,
                                      verify=clamp is not None)
        assert load_package(pkg).manifest.posterior_logvar_max == clamp
        image = np.full((32, 32), 100.0, np.float32)
        spreads[clamp] = float(Denoiser(pkg, backend="cpu").denoise(image, n_samples=4).std.mean())
    assert spreads[4.0] < spreads[None] / 5, spreads
