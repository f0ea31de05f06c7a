"""The manifest schema: round-trips, strict keys, version-1 packages upgraded on load."""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

import hdn_deploy
from hdn_deploy.errors import PackageError
from hdn_deploy.manifest import (
    FORMAT_VERSION,
    SignalRange,
    manifest_from_json,
    manifest_to_json,
    signal_range_of,
)
from hdn_deploy.package import MANIFEST_FILE, load_package, read_manifest

DEFAULT = Path(hdn_deploy.__file__).parent / "models" / "default"


def _as_v1(m: dict) -> dict:
    """What an hdn-deploy of format version 1 wrote for the same model."""
    v1 = {k: v for k, v in m.items() if k not in ("intensity_range", "precision")}
    v1["format_version"] = 1
    v1["uncond_levels"] = [lv["index"] for lv in m["levels"] if not lv["sampled"]]
    v1["levels"] = [{k: v for k, v in lv.items() if k != "feature_channels"} for lv in m["levels"]]
    return v1


@pytest.mark.parametrize("which", ["tiny", "default"])
def test_round_trip(tiny_package, which):
    folder = tiny_package if which == "tiny" else DEFAULT
    manifest = read_manifest(folder)
    text = json.dumps(manifest_to_json(manifest), indent=2)
    again = manifest_from_json(json.loads(text), "again.json")
    assert again == manifest and again.format_version == FORMAT_VERSION
    assert manifest_to_json(again) == json.loads(text)


def test_written_manifest_is_the_schema_verbatim(tiny_package):
    on_disk = json.loads((tiny_package / MANIFEST_FILE).read_text())
    assert manifest_to_json(read_manifest(tiny_package)) == on_disk


def test_schema_objects_are_read_only(tiny_package):
    manifest = read_manifest(tiny_package)
    with pytest.raises(dataclasses.FrozenInstanceError):
        manifest.recommended_tile = 128  # type: ignore[misc]
    with pytest.raises(TypeError):
        manifest.likelihood["sigma"] = 1.0  # free-form records are read-only mappings too
    assert isinstance(manifest.levels, tuple)


@pytest.mark.parametrize("where, key", [((), "colour"), (("export",), "int4"),
                                        (("graphs", "decoder"), "size")])
def test_unknown_keys_are_rejected(tiny_package, tmp_path, where, key):
    data = json.loads((tiny_package / MANIFEST_FILE).read_text())
    target = data
    for part in where:
        target = target[part]
    target[key] = 1
    path = tmp_path / MANIFEST_FILE
    with pytest.raises(PackageError) as err:
        manifest_from_json(data, path)
    message = str(err.value)
    dotted = ".".join((*where, key))
    assert str(path) in message and f"unknown key '{key}'" in message and f"'{dotted}'" in message


def test_bundled_package_is_version_2_with_its_ranges():
    assert json.loads((DEFAULT / MANIFEST_FILE).read_text())["format_version"] == 2
    m = load_package(DEFAULT).manifest
    assert m.format_version == 2 and len(m.levels) == 6
    assert all(lv.feature_channels == 16 and lv.channels == 32 for lv in m.levels)
    assert m.intensity_range.training_data is not None
    noise = m.intensity_range.noise_model
    assert noise.min == pytest.approx(m.likelihood["min_signal"])
    assert noise.max == pytest.approx(m.likelihood["max_signal"])
    assert m.uncond_levels == ()


def test_version_1_manifest_of_the_same_model(tiny_package, tmp_path):
    folder = shutil.copytree(tiny_package, tmp_path / "v1")
    v2 = json.loads((folder / MANIFEST_FILE).read_text())
    (folder / MANIFEST_FILE).write_text(json.dumps(_as_v1(v2)))
    from_v1 = load_package(folder).manifest
    expected = dataclasses.replace(read_manifest(tiny_package),
                                   intensity_range=from_v1.intensity_range)
    assert from_v1 == expected
    # a Gaussian noise model has no calibrated range; v1 stored no data range
    assert from_v1.intensity_range.training_data is None
    assert from_v1.intensity_range.noise_model is None


def test_version_1_without_feature_channels_is_refused(tiny_package, tmp_path):
    v1 = _as_v1(json.loads((tiny_package / MANIFEST_FILE).read_text()))
    del v1["model_config"]["n_filters"]
    with pytest.raises(PackageError, match=r"m.json: version-1 manifest lacks model_config.n_filters"):
        manifest_from_json(v1, tmp_path / "m.json")


def test_version_1_unknown_keys_are_rejected_too(tiny_package, tmp_path):
    v1 = _as_v1(json.loads((tiny_package / MANIFEST_FILE).read_text()))
    v1["tile_hint"] = 3
    with pytest.raises(PackageError, match="unknown key 'tile_hint'"):
        manifest_from_json(v1, tmp_path / "m.json")


@pytest.mark.parametrize("likelihood, expected", [
    ({"kind": "gmm", "min_signal": -2.0, "max_signal": 267.0}, SignalRange(-2.0, 267.0)),
    ({"kind": "histogram", "bins": 4, "min_value": 0, "max_value": 4096}, SignalRange(0.0, 4096.0)),
    ({"kind": "gaussian", "sigma": 3.0}, None),
    ({"kind": "lines", "row_std": 2.0, "column_std": 0.0,
      "pixel": {"kind": "gmm", "min_signal": 1.0, "max_signal": 9.0}}, SignalRange(1.0, 9.0)),
    ({"kind": "lines", "row_std": 2.0, "column_std": 0.0,
      "pixel": {"kind": "gaussian", "sigma": 3.0}}, None),
    ({"kind": "gmm"}, None),
    (None, None),
])
def test_signal_range_of_noise_models(likelihood, expected):
    assert signal_range_of(likelihood) == expected


def test_training_data_range_is_recorded(tiny_package, data_dir):
    import tifffile

    noisy = tifffile.imread(data_dir / "noisy.tif")
    rng = read_manifest(tiny_package).intensity_range.training_data
    assert noisy.min() <= rng.min <= rng.p0_1 < rng.p99_9 <= rng.max <= noisy.max()
    assert rng.max - rng.min > 0.9 * (noisy.max() - noisy.min())  # train split: most of it

