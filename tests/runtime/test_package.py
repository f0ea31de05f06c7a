"""load_package: every way a package can be broken gives a PackageError that says so."""
from __future__ import annotations

import json
import shutil

import pytest

from hdn_deploy.errors import PackageError
from hdn_deploy.package import DECODER_FILE, MANIFEST_FILE, ModelPackage, load_package


@pytest.fixture()
def package_copy(tiny_package, tmp_path):
    return shutil.copytree(tiny_package, tmp_path / "model")


def _edit_manifest(folder, edit) -> None:
    path = folder / MANIFEST_FILE
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))


def test_loads_and_summarises(tiny_package):
    package = load_package(tiny_package)
    assert isinstance(package, ModelPackage)
    summary = package.summary()
    json.dumps(summary)  # printable as JSON by `hdn-deploy info --json`
    assert summary["path"] == str(tiny_package)
    assert summary["model_sha256"] == package.model_hash == package.manifest.weights_sha256
    assert summary["levels"] == 3 and summary["latent_channels"] == [4, 4, 4]
    assert summary["spatial_multiple"] == 8 and summary["uncond_levels"] == []
    assert (summary["recommended_tile"], summary["recommended_overlap"]) == (64, 16)
    assert summary["format_version"] == 2 and summary["precision"] == "fp32"
    assert summary["likelihood"]["kind"] == "gaussian"
    assert [lv.index for lv in package.sampled_levels] == [0, 1, 2]


def test_missing_folder(tmp_path):
    with pytest.raises(PackageError, match="folder not found") as err:
        load_package(tmp_path / "nope")
    assert "nope" in str(err.value)


def test_folder_without_manifest(tmp_path):
    with pytest.raises(PackageError, match="no manifest.json.*hdn-deploy export"):
        load_package(tmp_path)


def test_corrupt_json(package_copy):
    (package_copy / MANIFEST_FILE).write_text('{"format": "hdn-deploy-model", ')
    with pytest.raises(PackageError, match="corrupt manifest") as err:
        load_package(package_copy)
    assert MANIFEST_FILE in str(err.value)


@pytest.mark.parametrize("content", ["[1, 2]", '{"format": "something-else"}'])
def test_not_a_model_manifest(package_copy, content):
    (package_copy / MANIFEST_FILE).write_text(content)
    with pytest.raises(PackageError, match="not an hdn-deploy model manifest"):
        load_package(package_copy)


def test_unknown_format_version(package_copy):
    _edit_manifest(package_copy, lambda m: m.update(format_version=99))
    with pytest.raises(PackageError, match=r"format version 99 is not supported.*reads versions 1, 2"):
        load_package(package_copy)


def test_missing_key(package_copy):
    _edit_manifest(package_copy, lambda m: m.pop("levels"))
    with pytest.raises(PackageError, match=r"manifest.json: missing key at key 'levels'"):
        load_package(package_copy)


@pytest.mark.parametrize("edit, what", [
    (lambda m: m["graphs"].pop("decoder"), "graphs.decoder"),
    (lambda m: m["graphs"]["encoder"].pop("sha256"), "graphs.encoder"),
    (lambda m: m.update(graphs=[]), "expected an object, got an array at key 'graphs'"),
    (lambda m: m["levels"][0].update(extra=1), r"unknown key 'extra'.*at key 'levels\[0\].extra'"),
    (lambda m: m.update(levels=[]), "levels must be a non-empty list"),
    (lambda m: m["levels"][1].update(channels="4"), r"expected an int, got a string '4' at key 'levels\[1\].channels'"),
    (lambda m: m["normalization"].update(std=0), "normalization.std must be > 0"),
    (lambda m: m["normalization"].pop("mean"), "normalization.mean"),
    (lambda m: m.update(normalization="z-score"), "normalization"),
    (lambda m: m.update(precision={"kind": "int4", "source_package_graphs": {}, "fp32_nodes": {}}),
     r"'int4' is not one of \['fp32', 'fp16'\] at key 'precision.kind'"),
])
def test_malformed_entries(package_copy, edit, what):
    _edit_manifest(package_copy, edit)
    with pytest.raises(PackageError, match=what) as err:
        load_package(package_copy)
    assert str(package_copy / MANIFEST_FILE) in str(err.value)


def test_missing_graph_file(package_copy):
    (package_copy / DECODER_FILE).unlink()
    with pytest.raises(PackageError, match=f"graph file {DECODER_FILE} is missing"):
        load_package(package_copy)


def test_changed_graph_bytes_are_detected(package_copy):
    graph = package_copy / DECODER_FILE
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 0xFF
    graph.write_bytes(bytes(data))
    with pytest.raises(PackageError, match="sha256 does not match.*corrupt") as err:
        load_package(package_copy)
    assert str(graph) in str(err.value)
    assert load_package(package_copy, check_hashes=False).path == package_copy
