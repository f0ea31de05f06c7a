"""BioImage Model Zoo export: the zoo graph, its noise, the zip and bioimageio.core's test."""
from __future__ import annotations

import io
import zipfile

import numpy as np
import onnxruntime as ort
import pytest
import yaml
from click.testing import CliRunner

from hdn_deploy.cli.main import main
from hdn_deploy.denoiser import Denoiser
from hdn_deploy.errors import ConfigError, PackageError
from hdn_deploy.export.bmz import bmz_package_from_model, check_bmz_package
from hdn_deploy.export.bmz_graph import build_bmz_graph, level_keys, reference_eps
from hdn_deploy.package import load_package

from conftest import SIGMA, noisy, synthetic_clean

RANDOM_OPS = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
              "Multinomial", "Bernoulli"}


def _session(model_bytes: bytes) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


def _by_hand(package, image: np.ndarray, n_samples: int, seed: int):
    """What the zoo graph must compute, from the package's own graphs and numpy noise."""
    enc, dec = (_session(p.read_bytes()) for p in (package.encoder_path, package.decoder_path))
    m, r = package.spatial_multiple, package.recommended_overlap // 2  # r: the runtime's margin
    h, w = image.shape
    x = np.pad((image - package.mean) / package.std, r, mode="reflect")
    x = np.pad(x, ((0, -x.shape[0] % m), (0, -x.shape[1] % m)), mode="reflect")
    feats = enc.run(None, {"image": x[None, None].astype(np.float32)})
    levels = package.sampled_levels
    keys = level_keys(seed, [lv.index for lv in levels])
    feed = {}
    for f, lv in zip(feats, levels):
        feed[f"bu_{lv.index}"] = f
        feed[f"eps_{lv.index}"] = reference_eps(keys[lv.index], n_samples // 2, lv.channels,
                                                f.shape[2], f.shape[3])
    samples = dec.run(None, feed)[0][:, 0, r:r + h, r:r + w].astype(np.float64)
    return samples.mean(0) * package.std + package.mean, samples.std(0) * package.std


@pytest.fixture(scope="module")
def package(tiny_package):
    return load_package(tiny_package)


@pytest.mark.parametrize("shape", [(64, 64), (45, 83)])
def test_graph_equals_package_graphs_with_the_same_noise(package, shape):
    image = noisy(synthetic_clean(*shape, seed=2), seed=3)
    graph = build_bmz_graph(package, n_samples=4, seed=5)
    mmse, std = _session(graph.SerializeToString()).run(None, {"raw": image[None, None]})
    want_mmse, want_std = _by_hand(package, image, 4, 5)
    assert mmse.shape == std.shape == (1, 1, *shape)
    np.testing.assert_allclose(mmse[0, 0], want_mmse, atol=1e-4 * package.std)
    np.testing.assert_allclose(std[0, 0], want_std, atol=1e-4 * package.std)
    assert std.min() >= 0 and std.mean() > 0


def test_graph_has_no_random_operator_and_depends_on_the_seed(package):
    image = noisy(synthetic_clean(64, 64))[None, None]
    graphs = [build_bmz_graph(package, n_samples=2, seed=s) for s in (0, 0, 1)]
    assert not {n.op_type for n in graphs[0].graph.node} & RANDOM_OPS
    outs = [_session(g.SerializeToString()).run(["mmse"], {"raw": image})[0] for g in graphs]
    np.testing.assert_array_equal(outs[0], outs[1])
    assert np.abs(outs[0] - outs[2]).max() > 1e-3


def test_reference_noise_is_standard_normal_and_antithetic():
    eps = reference_eps(level_keys(0, [0])[0], 4, 8, 64, 64)  # 131,072 values per sign
    first = eps[0::2]
    assert abs(first.mean()) < 0.01 and abs(first.std() - 1) < 0.01
    np.testing.assert_array_equal(eps[1::2], -first)
    # neighbours and channels uncorrelated; fraction beyond 2 sigma as for N(0, 1)
    assert abs(np.corrcoef(first[..., :-1].ravel(), first[..., 1:].ravel())[0, 1]) < 0.01
    assert abs(np.corrcoef(first[:, 0].ravel(), first[:, 1].ravel())[0, 1]) < 0.01
    assert abs(np.mean(np.abs(first) > 2) - 0.0455) < 0.003
    other = reference_eps(level_keys(0, [1])[1], 4, 8, 64, 64)
    assert abs(np.corrcoef(first.ravel(), other[0::2].ravel())[0, 1]) < 0.01


def test_odd_sample_counts_are_refused(package):
    with pytest.raises(ConfigError, match="even"):
        build_bmz_graph(package, n_samples=3)


def test_mmse_agrees_with_the_runtime_within_monte_carlo_error(package):
    """Different noise, same posterior: the zoo MMSE (8 samples) and the runtime's
    (64 samples) differ by much less than the noise they remove."""
    clean = synthetic_clean(64, 64, seed=4)
    image = noisy(clean, seed=5)
    graph = build_bmz_graph(package, n_samples=8)
    zoo, zoo_std = _session(graph.SerializeToString()).run(None, {"raw": image[None, None]})
    runtime = Denoiser(package, backend="cpu", threads=1).denoise(
        image, n_samples=64, seed=0, tile=128, overlap=16)  # one tile, same margin
    rms = float(np.sqrt(np.mean((zoo[0, 0] - runtime.mmse) ** 2)))
    assert rms < 0.3 * float(np.mean(runtime.std)), rms
    assert rms < 0.2 * SIGMA


@pytest.fixture(scope="module")
def bmz_zip(tiny_package, data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("bmz") / "tiny.zip"
    result = CliRunner().invoke(main, [
        "export-bmz", str(tiny_package), "-o", str(out), "--test-image",
        str(data_dir / "noisy.tif"), "--test-size", "64", "--author", "Test Author"])
    assert result.exit_code == 0, result.output
    assert "bioimageio.core test_model: passed" in result.output
    return out


@pytest.mark.slow
def test_zip_describes_the_model_and_its_outputs(bmz_zip, package):
    with zipfile.ZipFile(bmz_zip) as zf:
        names = set(zf.namelist())
        rdf = yaml.safe_load(zf.read("rdf.yaml"))
        readme = zf.read(rdf["documentation"]["source"]).decode()
    assert rdf["format_version"].startswith("0.5")
    assert [t["id"] for t in rdf["inputs"]] == ["raw"]
    assert [t["id"] for t in rdf["outputs"]] == ["mmse", "std"]
    assert rdf["cite"][0]["doi"] == "10.48550/arXiv.2104.01374"
    assert "Prakash" in rdf["cite"][0]["text"] and "ICLR 2022" in rdf["cite"][0]["text"]
    assert rdf["authors"][0]["name"] == "Test Author"
    assert rdf["config"]["hdn_deploy"]["model_sha256"] == package.model_hash
    assert {rdf["weights"]["onnx"]["source"], *(c["source"] for c in rdf["covers"])} <= names
    for heading in ("What the outputs are", "Training data and noise model", "Limits",
                    "Validation", "Citation"):
        assert f"## {heading}" in readme


@pytest.mark.slow
def test_test_model_fails_on_a_tampered_test_output(bmz_zip, tmp_path):
    """The check can fail: shift the expected MMSE by 5 and bioimageio.core must object.
    (The rdf pins each file's sha256; dropping the outputs' makes only the values differ.)"""
    tampered = tmp_path / "tampered.zip"
    with zipfile.ZipFile(bmz_zip) as src, zipfile.ZipFile(tampered, "w") as dst:
        rdf = yaml.safe_load(src.read("rdf.yaml"))
        target = next(t for t in rdf["outputs"] if t["id"] == "mmse")["test_tensor"]["source"]
        for tensor in rdf["outputs"]:
            tensor["test_tensor"].pop("sha256", None)
        for item in src.infolist():
            data = src.read(item)
            if item.filename == target:
                buffer = io.BytesIO()
                np.save(buffer, np.load(io.BytesIO(data)) + 5.0)
                data = buffer.getvalue()
            elif item.filename == "rdf.yaml":
                data = yaml.safe_dump(rdf).encode()
            dst.writestr(item, data)
    with pytest.raises(PackageError, match="Reproduce test outputs.*'mmse'.*disagree"):
        check_bmz_package(tampered)


def test_export_refuses_existing_output_and_bad_suffix(tiny_package, tmp_path):
    existing = tmp_path / "m.zip"
    existing.write_bytes(b"keep")
    with pytest.raises(PackageError, match="exists"):
        bmz_package_from_model(tiny_package, existing)
    assert existing.read_bytes() == b"keep"
    with pytest.raises(ConfigError, match=".zip"):
        bmz_package_from_model(tiny_package, tmp_path / "m.tar")


@pytest.mark.slow
def test_export_bmz_needs_no_torch(tiny_package, data_dir, tmp_path):
    from conftest import run_without_torch

    out = tmp_path / "no_torch.zip"
    code = ("import sys\nfrom click.testing import CliRunner\nfrom hdn_deploy.cli.main import main\n"
            "r = CliRunner().invoke(main, ['export-bmz', *sys.argv[1:]])\n"
            "print(r.exit_code, r.output)\nassert 'torch' not in sys.modules\n")
    done = run_without_torch(code, str(tiny_package), "-o", str(out), "--no-test", "--test-image",
                             str(data_dir / "noisy.tif"), "--test-size", "64", cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.startswith("0 "), done.stdout + done.stderr
    assert zipfile.is_zipfile(out)
