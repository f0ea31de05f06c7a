"""Issue 16: the distilled direct denoiser (`distill`, `export --direct`, `--mode direct`)
and the calibrated, checked int8 export (`export --int8`), on the tiny test model."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner

from hdn_deploy.cli.main import main
from hdn_deploy.denoiser import Denoiser
from hdn_deploy.errors import ConfigError, PackageError
from hdn_deploy.io import read_hdn_metadata
from hdn_deploy.manifest import DIRECT_FORMAT_VERSION, FORMAT_VERSION
from hdn_deploy.package import DIRECT_FILE, MANIFEST_FILE, load_package

pytest.importorskip("torch")
pytest.importorskip("onnx")

FAST = ["--backend", "cpu", "--threads", "1", "--quiet"]


@pytest.fixture(scope="module")
def distill_run(tmp_path_factory, tiny_run, data_dir) -> tuple[Path, dict]:
    from hdn_deploy.training.distill import DirectConfig, DistillConfig, distill

    run = tmp_path_factory.mktemp("distill") / "run"
    summary = distill(tiny_run / "best.safetensors", [data_dir / "noisy.tif"], run,
                      config=DistillConfig(steps=60, batch_size=4, patch_size=32, lr=3e-3,
                                           val_patches=8, val_samples=4, validate_every=30),
                      direct_config=DirectConfig(channels=8, depth=2), progress=False)
    return run, summary


@pytest.fixture(scope="module")
def direct_package(tmp_path_factory, tiny_package, distill_run) -> Path:
    from hdn_deploy.export.direct import add_direct

    return add_direct(tiny_package, distill_run[0], tmp_path_factory.mktemp("pkg") / "direct")


def test_distillation_lowers_the_loss_and_resumes(distill_run):
    from hdn_deploy.training.distill import resume_distill

    run, summary = distill_run
    history = summary["history"]
    assert [row["step"] for row in history] == [0, 30, 60]
    # Validation: distance to a 4-sample MMSE of the teacher on held-out patches.
    assert history[-1]["val_mse"] < 0.8 * history[0]["val_mse"]
    resumed = resume_distill(run, steps=70, progress=False)
    assert [row["step"] for row in resumed["history"]] == [0, 30, 60, 70]
    assert resumed["history"][:3] == history


def test_exported_direct_graph_matches_pytorch(direct_package, distill_run):
    import onnxruntime as ort
    import torch

    from hdn_deploy.training.distill import load_direct

    manifest = load_package(direct_package).manifest
    assert manifest.format_version == DIRECT_FORMAT_VERSION
    assert manifest.graphs.direct.file == DIRECT_FILE
    assert manifest.direct.teacher_sha256 == manifest.weights_sha256
    assert manifest.direct.verified_max_abs_diff <= 1e-4
    # Another size than export's verification: the graph's H and W are dynamic.
    student = load_direct(distill_run[0]).build()
    image = np.random.default_rng(5).standard_normal((1, 1, 40, 72), dtype=np.float32)
    with torch.no_grad():
        expected = student(torch.from_numpy(image)).numpy()
    got = ort.InferenceSession(str(direct_package / DIRECT_FILE),
                               providers=["CPUExecutionProvider"]).run(None, {"image": image})[0]
    assert np.abs(got - expected).max() <= 1e-4


def test_direct_mode_runs_the_graph_through_the_tiling(direct_package, distill_run, data_dir):
    import torch

    from hdn_deploy.training.distill import load_direct

    image = tifffile.imread(data_dir / "noisy.tif")[:64, :64]
    den = Denoiser(direct_package, backend="cpu", threads=1)
    result = den.denoise(image, mode="direct", tile=64, overlap=0, margin=0)
    assert result.std is None and result.samples is None
    meta = result.metadata
    assert meta["mode"] == "direct" and meta["n_samples"] == 0 and "not available" in meta["std"]
    pkg = den.package
    with torch.no_grad():
        x = torch.from_numpy(((image - pkg.mean) / pkg.std).astype(np.float32))[None, None]
        expected = load_direct(distill_run[0]).build()(x)[0, 0].numpy() * pkg.std + pkg.mean
    assert np.abs(result.mmse - expected).max() <= 1e-4 * pkg.std
    # Several overlapping tiles, blended like the sampler's: close to the one-tile result
    # (tile borders differ a little: the network sees less context there).
    tiled = den.denoise(image, mode="direct", tile=32, overlap=16)
    assert len(tiled.metadata["samples_per_tile"][0]) > 1
    change = np.mean((image - result.mmse) ** 2)
    assert np.mean((tiled.mmse - result.mmse) ** 2) < 0.1 * change
    # The sampler still works on the same package and says which mode it used.
    sampled = den.denoise(image, n_samples=2, tile=64, overlap=0, margin=0)
    assert sampled.std is not None and sampled.metadata["mode"] == "sampler"


def test_direct_mode_refuses_sample_options(direct_package, data_dir):
    image = tifffile.imread(data_dir / "noisy.tif")[:32, :32]
    den = Denoiser(direct_package, backend="cpu", threads=1)
    for options in ({"keep_samples": 2}, {"checkpoints": [1]}, {"tolerance": 2.0}):
        with pytest.raises(ConfigError, match="not available in direct mode"):
            den.denoise(image, mode="direct", **options)
    with pytest.raises(ConfigError, match="unknown mode"):
        den.denoise(image, mode="fast")


def test_direct_mode_without_direct_graph_is_a_clear_error(tiny_package, data_dir, tmp_path):
    assert load_package(tiny_package).manifest.format_version == FORMAT_VERSION  # stays 2
    image = tifffile.imread(data_dir / "noisy.tif")[:32, :32]
    with pytest.raises(PackageError, match="direct denoiser graph.*has none.*hdn-deploy distill"):
        Denoiser(tiny_package, backend="cpu", threads=1).denoise(image, mode="direct")
    tifffile.imwrite(tmp_path / "img.tif", image)
    res = CliRunner().invoke(main, ["denoise", str(tmp_path / "img.tif"), "-m", str(tiny_package),
                                    "-o", str(tmp_path / "out"), "--mode", "direct", *FAST])
    assert res.exit_code == 2 and "has none" in res.output and "direct.onnx" in res.output
    assert not list((tmp_path / "out").glob("*.tif"))


def test_cli_direct_mode_writes_mmse_only(direct_package, data_dir, tmp_path):
    image = tifffile.imread(data_dir / "noisy.tif")[:40, :56]
    tifffile.imwrite(tmp_path / "img.tif", image)
    args = ["denoise", str(tmp_path / "img.tif"), "-m", str(direct_package), "-o",
            str(tmp_path / "out"), "--mode", "direct", *FAST]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert "std is not available in direct mode" in res.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["img_mmse.tif"]
    meta = read_hdn_metadata(tmp_path / "out" / "img_mmse.tif")
    assert meta["mode"] == "direct" and meta["settings"]["mode"] == "direct"
    refused = CliRunner().invoke(main, args + ["--save-std", "--overwrite"])
    assert refused.exit_code == 2 and "--save-std" in refused.output


def test_add_direct_refuses_another_models_student(tmp_path, tiny_package, distill_run):
    from hdn_deploy.export.direct import add_direct

    other = tmp_path / "other"
    other.mkdir()
    for item in tiny_package.iterdir():
        (other / item.name).write_bytes(item.read_bytes())
    manifest = json.loads((other / MANIFEST_FILE).read_text())
    manifest["weights_sha256"] = "0" * 64
    (other / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(PackageError, match="distilled from the HDN"):
        add_direct(other, distill_run[0], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_int8_export_is_checked_and_refused_above_the_bound(tiny_package, data_dir, tmp_path):
    from hdn_deploy.export.int8 import Int8CheckError, int8_package

    data = [data_dir / "noisy.tif"]
    with pytest.raises(Int8CheckError, match="int8 export refused.*above the bound"):
        int8_package(tiny_package, tmp_path / "strict", data, max_loss_db=1e-9, n_calibration=4)
    assert not (tmp_path / "strict").exists()
    out = int8_package(tiny_package, tmp_path / "int8", data, max_loss_db=10.0, n_calibration=4)
    manifest = load_package(out).manifest
    check = manifest.export.int8.check
    assert manifest.format_version == DIRECT_FORMAT_VERSION
    assert 0 < check.estimated_psnr_loss_db <= 10.0 and check.mean_sq_diff > 0
    assert list(manifest.export.int8.calibration["data"]) == [str(data[0])]
    image = tifffile.imread(data_dir / "noisy.tif")[:32, :32]
    assert np.isfinite(Denoiser(out, backend="cpu", threads=1).denoise(image, n_samples=2).mmse).all()
    # 7-bit weights (reduce_range): AVX2 without VNNI saturates int16 sums of 8-bit products
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(out / manifest.graphs.decoder.file)).graph
    weights = [numpy_helper.to_array(t) for t in graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert weights and all(-64 <= int(w.min()) and int(w.max()) <= 64 for w in weights), [
        (int(w.min()), int(w.max())) for w in weights]


def test_cli_export_int8_refusal_exits_2(tiny_package, data_dir, tmp_path):
    res = CliRunner().invoke(main, ["export", str(tiny_package), "-o", str(tmp_path / "q"),
                                    "--int8", "--calibration-data", str(data_dir / "noisy.tif"),
                                    "--int8-max-loss-db", "1e-9"])
    assert res.exit_code == 2 and "int8 export refused" in res.output
    res = CliRunner().invoke(main, ["export", str(tiny_package), "-o", str(tmp_path / "q"),
                                    "--int8"])
    assert res.exit_code == 2 and "--calibration-data" in res.output


def test_sampler_only_manifests_stay_version_2_without_the_new_keys(tiny_package, direct_package):
    """Older releases reject unknown keys: a package without a direct graph or an int8 check
    must not carry the version-3 keys, not even as null."""
    plain = json.loads((tiny_package / MANIFEST_FILE).read_text())
    assert plain["format_version"] == 2 and "direct" not in plain
    assert "direct" not in plain["graphs"]
    rich = json.loads((direct_package / MANIFEST_FILE).read_text())
    assert rich["format_version"] == 3 and rich["graphs"]["direct"]["file"] == DIRECT_FILE
    assert load_package(tiny_package).summary()["direct"] is None
