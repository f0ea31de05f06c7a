"""`hdn-deploy denoise`, `info` and `export` end to end with click's CliRunner."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner

from hdn_deploy.cli.main import main
from hdn_deploy.io import read_hdn_metadata
from hdn_deploy.package import DECODER_FILE, MANIFEST_FILE, load_package

FAST = ["--samples", "2", "--backend", "cpu", "--threads", "1", "--quiet"]


@pytest.fixture()
def image(data_dir) -> np.ndarray:
    return tifffile.imread(data_dir / "noisy.tif")[:40, :56]


@pytest.fixture()
def tif(tmp_path, image) -> Path:
    path = tmp_path / "in" / "img.tif"
    path.parent.mkdir()
    tifffile.imwrite(path, image)
    return path


def _denoise(package, inputs, out, *extra):
    inputs = [str(p) for p in (inputs if isinstance(inputs, (list, tuple)) else [inputs])]
    return CliRunner().invoke(main, ["denoise", *inputs, "-m", str(package), "-o", str(out),
                                     *FAST, *map(str, extra)])


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _assert_clean(out: Path, stem: str) -> None:
    """No outputs of ``stem`` and no temporary files left in ``out`` (if it exists)."""
    if out.is_dir():
        names = [p.name for p in out.iterdir()]
        assert not [n for n in names if n.startswith(f"{stem}_")], names
        assert not [n for n in names if n.endswith(".tmp")], names


def test_denoise_writes_outputs_with_metadata(tiny_package, tif, tmp_path, image):
    before = _sha(tif)
    out = tmp_path / "out"
    res = _denoise(tiny_package, tif, out, "--save-samples", 2, "--seed", 7)
    assert res.exit_code == 0, res.output
    assert "denoised 1 file(s), skipped 0" in res.output
    assert _sha(tif) == before
    names = sorted(p.name for p in out.iterdir())
    assert names == ["img_mmse.tif", "img_samples.tif", "img_std.tif"]
    mmse, std, samples = (tifffile.imread(out / f"img_{k}.tif") for k in ("mmse", "std", "samples"))
    assert mmse.shape == std.shape == image.shape and samples.shape == (2, *image.shape)
    assert mmse.dtype == std.dtype == samples.dtype == np.float32
    model_hash = load_package(tiny_package).model_hash
    for kind in ("mmse", "std", "samples"):
        meta = read_hdn_metadata(out / f"img_{kind}.tif")
        assert meta["kind"] == kind and meta["seed"] == 7 and meta["model_sha256"] == model_hash
        assert meta["hdn_deploy_version"] and meta["numpy_version"] and meta["backend"]["name"]
        assert meta["input"] == str(tif)
        settings = meta["settings"]
        assert settings["model_sha256"] == model_hash
        assert (settings["samples"], settings["seed"], settings["save_samples"]) == (2, 7, 2)
        assert settings["sampling"] == "antithetic" and settings["output_dtype"] == "float32"
    mask = os.umask(0)
    os.umask(mask)
    assert ((out / "img_mmse.tif").stat().st_mode & 0o777) == 0o666 & ~mask


def test_rerun_skips_overwrite_and_new_seed_recompute(tiny_package, tif, tmp_path):
    out = tmp_path / "out"
    assert _denoise(tiny_package, tif, out).exit_code == 0
    files = sorted(out.iterdir())
    assert [p.name for p in files] == ["img_mmse.tif", "img_std.tif"]
    for path in files:
        os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    first = tifffile.imread(out / "img_mmse.tif")

    res = _denoise(tiny_package, tif, out)
    assert res.exit_code == 0 and "skipped 1" in res.output, res.output
    assert all(p.stat().st_mtime_ns == 1_000_000_000 for p in files)

    res = _denoise(tiny_package, tif, out, "--overwrite")
    assert res.exit_code == 0 and "denoised 1 file(s), skipped 0" in res.output
    assert all(p.stat().st_mtime_ns != 1_000_000_000 for p in files)
    assert np.array_equal(tifffile.imread(out / "img_mmse.tif"), first)  # same seed

    res = _denoise(tiny_package, tif, out, "--seed", 1)
    assert res.exit_code == 0 and "denoised 1 file(s), skipped 0" in res.output
    assert read_hdn_metadata(out / "img_mmse.tif")["seed"] == 1
    assert [p.name for p in sorted(out.iterdir())] == ["img_mmse.tif", "img_std.tif"]


def test_folder_and_glob_inputs(tiny_package, tmp_path, image):
    folder = tmp_path / "many"
    folder.mkdir()
    for name in ("a.tif", "b.tiff"):
        tifffile.imwrite(folder / name, image)
    (folder / "notes.txt").write_text("not an image")
    res = _denoise(tiny_package, folder, tmp_path / "o1", "--no-save-std")
    assert res.exit_code == 0 and "denoised 2 file(s)" in res.output, res.output
    assert sorted(p.name for p in (tmp_path / "o1").iterdir()) == ["a_mmse.tif", "b_mmse.tif"]
    res = _denoise(tiny_package, str(folder / "*.tif"), tmp_path / "o2", "--no-save-std")
    assert res.exit_code == 0 and "denoised 1 file(s)" in res.output, res.output
    assert [p.name for p in (tmp_path / "o2").iterdir()] == ["a_mmse.tif"]


def test_output_dtype_input(tiny_package, tmp_path, image):
    path = tmp_path / "u16.tif"
    tifffile.imwrite(path, np.clip(image, 0, None).astype(np.uint16))
    out = tmp_path / "out"
    res = _denoise(tiny_package, path, out, "--output-dtype", "input", "--save-samples", 1)
    assert res.exit_code == 0, res.output
    assert tifffile.imread(out / "u16_mmse.tif").dtype == np.uint16
    assert tifffile.imread(out / "u16_samples.tif").dtype == np.uint16
    assert tifffile.imread(out / "u16_std.tif").dtype == np.float32


def test_info_prints_hash(tiny_package):
    model_hash = load_package(tiny_package).model_hash
    res = CliRunner().invoke(main, ["info", str(tiny_package)])
    assert res.exit_code == 0 and model_hash in res.output
    res = CliRunner().invoke(main, ["info", str(tiny_package), "--json"])
    assert res.exit_code == 0 and json.loads(res.output)["model_sha256"] == model_hash


def _write_bad(kind: str, folder: Path) -> Path:
    path = folder / f"{kind}.tif"
    if kind == "nottiff":
        path.write_text("this is not a TIFF file")
    elif kind == "nan":
        data = np.ones((16, 16), np.float32)
        data[3, 4] = np.nan
        tifffile.imwrite(path, data)
    elif kind == "empty":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tifffile: "zero-size array"
            tifffile.imwrite(path, np.zeros((0, 16), np.float32))
    elif kind == "chlast":  # (64, 64, 4) channel-last saved as grey: 64 images of 64x4
        tifffile.imwrite(path, np.zeros((64, 64, 4), np.uint8), photometric="minisblack")
    return path


@pytest.mark.parametrize("kind, message", [
    ("nottiff", "cannot read"),
    ("nan", "NaN"),
    ("empty", "empty"),
    ("chlast", "--axes YXC"),
])
def test_bad_images_fail_cleanly(tiny_package, tmp_path, kind, message):
    path = _write_bad(kind, tmp_path)
    out = tmp_path / "out"
    res = _denoise(tiny_package, path, out)
    assert res.exit_code == 2, res.output
    assert res.output.startswith("Error: ") and message in res.output
    assert str(path) in res.output
    _assert_clean(out, kind)


def test_bad_file_after_good_one_leaves_only_complete_outputs(tiny_package, tmp_path, image):
    folder = tmp_path / "mixed"
    folder.mkdir()
    tifffile.imwrite(folder / "a_good.tif", image)
    bad = _write_bad("nan", folder)
    out = tmp_path / "out"
    res = _denoise(tiny_package, folder, out)
    assert res.exit_code == 2 and str(bad) in res.output
    assert sorted(p.name for p in out.iterdir()) == ["a_good_mmse.tif", "a_good_std.tif"]


@pytest.mark.parametrize("damage, message", [("version", "format version 99"),
                                             ("graph", "sha256 does not match")])
def test_broken_package_fails_cleanly(tiny_package, tif, tmp_path, damage, message):
    package = shutil.copytree(tiny_package, tmp_path / "model")
    if damage == "version":
        manifest = json.loads((package / MANIFEST_FILE).read_text())
        manifest["format_version"] = 99
        (package / MANIFEST_FILE).write_text(json.dumps(manifest))
    else:
        with open(package / DECODER_FILE, "ab") as fh:
            fh.write(b"\0")
    out = tmp_path / "out"
    res = _denoise(package, tif, out)
    assert res.exit_code == 2 and message in res.output, res.output
    assert str(package) in res.output
    assert not out.exists()


def test_output_folder_below_a_file(tiny_package, tif, tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("a file, not a folder")
    out = blocker / "out"
    res = _denoise(tiny_package, tif, out)
    assert res.exit_code == 2, res.output
    assert "output folder" in res.output and str(out) in res.output
    assert blocker.read_text() == "a file, not a folder"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt", "in"]


def test_missing_input_and_model(tiny_package, tif, tmp_path):
    res = _denoise(tiny_package, tmp_path / "nope.tif", tmp_path / "out")
    assert res.exit_code == 2 and "nope.tif" in res.output and "does not exist" in res.output
    res = _denoise(tmp_path / "no_model", tif, tmp_path / "out")
    assert res.exit_code == 2 and "no_model" in res.output and "not found" in res.output
    assert not (tmp_path / "out").exists()


# -- export ----------------------------------------------------------------------------


def test_export_cli(tiny_run, tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "pkg"
    res = CliRunner().invoke(main, ["export", str(tiny_run / "best.safetensors"), "-o", str(out),
                                    "--tile", "64", "--overlap", "16", "--description", "test"])
    assert res.exit_code == 0, res.output
    assert "wrote model package" in res.output and "verified" in res.output
    package = load_package(out)
    assert package.recommended_tile == 64 and package.manifest.noise_description == "test"
    res = CliRunner().invoke(main, ["export", str(tiny_run / "best.safetensors"), "-o", str(out)])
    assert res.exit_code == 2 and "--overwrite" in res.output


@pytest.mark.parametrize("tiling", [["--tile", "60"], ["--tile", "64", "--overlap", "64"],
                                    ["--overlap", "12"]])
def test_export_rejects_tiling_the_model_cannot_use(tiny_run, tmp_path, tiling):
    pytest.importorskip("torch")
    out = tmp_path / "pkg"
    res = CliRunner().invoke(main, ["export", str(tiny_run / "best.safetensors"), "-o", str(out),
                                    *tiling])
    assert res.exit_code == 2 and "multiples of 8" in res.output, res.output
    assert not out.exists() and not list(tmp_path.iterdir())


def _checkpoint_with_version(source: Path, target: Path, version: int) -> Path:
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(source), framework="pt") as fh:
        header = json.loads(fh.metadata()["hdn"])
    header["format_version"] = version
    save_file(load_file(str(source)), str(target), metadata={"hdn": json.dumps(header)})
    return target


@pytest.mark.parametrize("kind, message", [("garbage", "not a readable hdn-deploy checkpoint"),
                                           ("truncated", "checkpoint"),
                                           ("version", "format version 99"),
                                           ("missing", "not found")])
def test_export_bad_checkpoint(tiny_run, tmp_path, kind, message):
    pytest.importorskip("torch")
    ckpt = tmp_path / "model.safetensors"
    if kind == "garbage":
        ckpt.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json, not tensors")
    elif kind == "truncated":
        data = (tiny_run / "best.safetensors").read_bytes()
        ckpt.write_bytes(data[: len(data) // 2])
    elif kind == "version":
        _checkpoint_with_version(tiny_run / "best.safetensors", ckpt, 99)
    out = tmp_path / "pkg"
    res = CliRunner().invoke(main, ["export", str(ckpt), "-o", str(out)])
    assert res.exit_code == 2, res.output
    assert res.output.startswith("Error: ") and message in res.output and str(ckpt) in res.output
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]



def test_stack_with_samples_writes_imagej_hyperstack(tiny_package, tmp_path, image):
    crop = image[:48, :48]
    stack = np.stack([crop, crop[::-1], crop[:, ::-1]])
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, stack, photometric="minisblack", metadata={"axes": "ZYX"})
    result = _denoise(tiny_package, [str(path)], tmp_path / "out", "--samples", "2",
                      "--save-samples", "2")
    assert result.exit_code == 0, result.output
    with tifffile.TiffFile(tmp_path / "out" / "stack_samples.tif") as tif:
        assert tif.series[0].shape == (2, *stack.shape) and tif.series[0].axes == "TZYX"
    with tifffile.TiffFile(tmp_path / "out" / "stack_mmse.tif") as tif:
        assert tif.series[0].shape == stack.shape and tif.series[0].axes == "ZYX"
