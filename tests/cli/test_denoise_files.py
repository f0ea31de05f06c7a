"""`hdn-deploy denoise` on real microscope file layouts (issue 10): every series, missing
companions, axes, metadata kept, mirrored trees, overwrite protection, disk full, stale
temporaries, memory, and never exit 0 after skipping data."""
from __future__ import annotations

import errno
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner

from conftest import noisy, synthetic_clean
from hdn_deploy import Denoiser
from hdn_deploy.cli.main import main
from hdn_deploy.io import read_hdn_metadata, read_image
from hdn_deploy.io import writing as hwriting

FAST = ["--samples", "2", "--backend", "cpu", "--threads", "1", "--quiet"]
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runtime"))
from test_io_files import huge_header, multi_file_ome  # noqa: E402


def _denoise(package, inputs, out, *extra):
    inputs = [str(p) for p in (inputs if isinstance(inputs, (list, tuple)) else [inputs])]
    return CliRunner().invoke(main, ["denoise", *inputs, "-m", str(package), "-o", str(out),
                                     *FAST, *map(str, extra)])


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tree(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def _planes(n: int, size: int = 64, seed: int = 0) -> np.ndarray:
    clean = synthetic_clean(size, size, seed=seed)
    return np.stack([noisy(clean, seed=seed + i) for i in range(n)])


@pytest.fixture(scope="module")
def den(tiny_package):
    return Denoiser(tiny_package, backend="cpu", threads=1)


# -- 1. series ----------------------------------------------------------------------------


def test_every_series_is_denoised_and_the_thumbnail_reported(tiny_package, den, tmp_path):
    stack = np.clip(_planes(3), 0, None).astype(np.uint16)
    path = tmp_path / "in" / "two.tif"
    path.parent.mkdir()
    with tifffile.TiffWriter(path) as tw:
        tw.write(np.zeros((16, 16), np.uint16), subfiletype=1)
        tw.write(stack, photometric="minisblack")
    out = tmp_path / "out"
    res = _denoise(tiny_package, path, out)
    assert res.exit_code == 0, res.output
    assert "series 0: reduced-resolution thumbnail" in res.output and "not denoised" in res.output
    assert _tree(out) == ["two_s1_mmse.tif", "two_s1_std.tif"]
    expected = den.denoise(stack.astype(np.float32), n_samples=2, seed=0)
    np.testing.assert_array_equal(tifffile.imread(out / "two_s1_mmse.tif"), expected.mmse)
    assert read_hdn_metadata(out / "two_s1_mmse.tif")["source"]["series"] == 1

    res = _denoise(tiny_package, path, tmp_path / "out1", "--series", 1)
    assert res.exit_code == 0 and _tree(tmp_path / "out1") == ["two_s1_mmse.tif", "two_s1_std.tif"]
    res = _denoise(tiny_package, path, tmp_path / "out5", "--series", 5)
    assert res.exit_code == 2 and str(path) in res.output and "--series 5 does not exist" in res.output


def test_two_image_series_give_two_outputs(tiny_package, tmp_path):
    path = tmp_path / "pos.tif"
    planes = _planes(2, 32)
    with tifffile.TiffWriter(path) as tw:
        tw.write(planes[0])
        tw.write(planes[1][:24])
    res = _denoise(tiny_package, path, tmp_path / "out", "--no-save-std")
    assert res.exit_code == 0, res.output
    assert _tree(tmp_path / "out") == ["pos_s0_mmse.tif", "pos_s1_mmse.tif"]
    assert tifffile.imread(tmp_path / "out" / "pos_s1_mmse.tif").shape == (24, 32)


# -- 2. multi-file OME ------------------------------------------------------------------------


def test_multi_file_ome_is_one_input_and_a_missing_file_writes_nothing(tiny_package, tmp_path):
    files = multi_file_ome(tmp_path / "ome")
    out = tmp_path / "out"
    res = _denoise(tiny_package, tmp_path / "ome", out)
    assert res.exit_code == 0, res.output
    assert _tree(out) == ["m_0_mmse.tif", "m_0_std.tif"]  # m_1, m_2: planes of the same set
    assert f"'{files[1]}': read as part of the multi-file OME-TIFF of '{files[0]}'" in res.output
    assert tifffile.imread(out / "m_0_mmse.tif").shape == (3, 32, 32)

    files[2].unlink()
    before = {p: _sha(p) for p in files[:2]}
    out2 = tmp_path / "out2"
    res = _denoise(tiny_package, tmp_path / "ome", out2)
    assert res.exit_code == 2, res.output
    assert "'m_2.ome.tif' are missing" in res.output and str(files[0]) in res.output
    assert not out2.exists() or _tree(out2) == []
    assert {p: _sha(p) for p in files[:2]} == before


# -- 3. axes ---------------------------------------------------------------------------------------


def test_channel_last_needs_axes_and_is_denoised_per_channel(tiny_package, den, tmp_path):
    data = np.clip(np.moveaxis(_planes(4), 0, -1), 0, 255).astype(np.uint8)  # (64, 64, 4)
    path = tmp_path / "rgba.tif"
    tifffile.imwrite(path, data, photometric="minisblack")
    res = _denoise(tiny_package, path, tmp_path / "o1")
    assert res.exit_code == 2 and "--axes YXC" in res.output and str(path) in res.output
    assert not (tmp_path / "o1").exists() or _tree(tmp_path / "o1") == []

    res = _denoise(tiny_package, path, tmp_path / "o2", "--axes", "YXC", "--save-samples", 2)
    assert res.exit_code == 0, res.output
    mmse = tifffile.imread(tmp_path / "o2" / "rgba_mmse.tif")
    assert mmse.shape == (64, 64, 4)
    expected = den.denoise(np.moveaxis(data, -1, 0).astype(np.float32), n_samples=2, seed=0,
                           keep_samples=2)
    np.testing.assert_array_equal(mmse, np.moveaxis(expected.mmse, 0, -1))
    samples = tifffile.imread(tmp_path / "o2" / "rgba_samples.tif")
    np.testing.assert_array_equal(samples, np.moveaxis(expected.samples, 1, -1))
    assert read_image(tmp_path / "o2" / "rgba_mmse.tif", allow_channels=True).file_axes == "YXC"  # axes recorded


def test_imagej_channels_are_written_back_as_a_hyperstack(tiny_package, tmp_path):
    data = _planes(2, 32)
    path = tmp_path / "cyx.tif"
    tifffile.imwrite(path, data, imagej=True, metadata={"axes": "CYX"})
    res = _denoise(tiny_package, path, tmp_path / "out")
    assert res.exit_code == 0, res.output
    with tifffile.TiffFile(tmp_path / "out" / "cyx_mmse.tif") as tif:
        assert tif.is_imagej and tif.series[0].axes == "CYX" and tif.series[0].shape == (2, 32, 32)


# -- 5. metadata -----------------------------------------------------------------------------------


def test_imagej_pixel_size_and_unit_are_kept(tiny_package, tmp_path):
    path = tmp_path / "cal.tif"
    tifffile.imwrite(path, _planes(2, 32), imagej=True, resolution=(1 / 0.65, 1 / 0.65),
                     metadata={"axes": "ZYX", "unit": "um", "spacing": 0.3})
    res = _denoise(tiny_package, path, tmp_path / "out", "--save-samples", 1)
    assert res.exit_code == 0, res.output
    for kind in ("mmse", "std", "samples"):
        with tifffile.TiffFile(tmp_path / "out" / f"cal_{kind}.tif") as tif:
            assert tif.pages[0].get_resolution() == pytest.approx((1 / 0.65, 1 / 0.65), rel=1e-6)
            assert tif.imagej_metadata["unit"] == "um" and tif.imagej_metadata["spacing"] == 0.3
        meta = read_hdn_metadata(tmp_path / "out" / f"cal_{kind}.tif")
        assert meta["kind"] == kind and meta["input_metadata"]["unit"] == "um"
        assert meta["input_metadata"]["description"].startswith("ImageJ=")


def test_ome_physical_sizes_and_channel_names_are_kept(tiny_package, tmp_path):
    path = tmp_path / "cells.ome.tif"
    tifffile.imwrite(path, _planes(2, 32).astype(np.float32), ome=True, metadata={
        "axes": "CYX", "PhysicalSizeX": 0.108, "PhysicalSizeXUnit": "µm", "PhysicalSizeY": 0.108,
        "PhysicalSizeYUnit": "µm", "Channel": {"Name": ["DAPI", "GFP"]}})
    res = _denoise(tiny_package, path, tmp_path / "out")
    assert res.exit_code == 0, res.output
    for kind in ("mmse", "std"):
        image = read_image(tmp_path / "out" / f"cells_{kind}.tif", allow_channels=True)
        assert image.physical.source == "ome" and image.physical.pixel_size == (0.108, 0.108)
        assert image.physical.unit == "µm" and image.physical.channel_names == ("DAPI", "GFP")
        assert read_hdn_metadata(tmp_path / "out" / f"cells_{kind}.tif")["kind"] == kind


# -- 6. same names in two folders ----------------------------------------------------------------


def test_same_name_in_two_folders_is_mirrored_and_resume_keys_on_content(tiny_package, tmp_path):
    root = tmp_path / "acq"
    for i in (0, 1):
        (root / f"Pos{i}").mkdir(parents=True)
        tifffile.imwrite(root / f"Pos{i}" / "img_000000000.tif", _planes(1, 32, seed=i)[0])
    out = tmp_path / "out"
    res = _denoise(tiny_package, str(root / "*" / "*.tif"), out, "--no-save-std")
    assert res.exit_code == 0 and "denoised 2 file(s), skipped 0" in res.output, res.output
    assert _tree(out) == ["Pos0/img_000000000_mmse.tif", "Pos1/img_000000000_mmse.tif"]
    a, b = (tifffile.imread(out / f"Pos{i}" / "img_000000000_mmse.tif") for i in (0, 1))
    assert not np.array_equal(a, b)
    assert read_hdn_metadata(out / "Pos1" / "img_000000000_mmse.tif")["source"]["path"] == \
        "Pos1/img_000000000.tif"

    res = _denoise(tiny_package, str(root / "*" / "*.tif"), out, "--no-save-std")
    assert res.exit_code == 0 and "denoised 0 file(s), skipped 2" in res.output, res.output
    tifffile.imwrite(root / "Pos1" / "img_000000000.tif", _planes(1, 32, seed=5)[0])  # new content
    res = _denoise(tiny_package, str(root / "*" / "*.tif"), out, "--no-save-std")
    assert res.exit_code == 0 and "denoised 1 file(s), skipped 1" in res.output, res.output


def test_inputs_with_the_same_output_name_are_refused(tiny_package, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    tifffile.imwrite(src / "a.tif", _planes(1, 32)[0])
    tifffile.imwrite(src / "a.tiff", _planes(1, 32, seed=2)[0])
    out = tmp_path / "out"
    res = _denoise(tiny_package, src, out, "--no-save-std")
    assert res.exit_code == 2, res.output
    assert (f"output '{out / 'a_mmse.tif'}' of '{src / 'a.tiff'}' is also the output of "
            f"'{src / 'a.tif'}'") in res.output
    assert read_hdn_metadata(out / "a_mmse.tif")["input"] == str(src / "a.tif")
    res = _denoise(tiny_package, src, out, "--no-save-std")  # the same on a rerun: no ping-pong
    assert res.exit_code == 2 and "skipped 1" in res.output, res.output


# -- 7. output folder = input folder ---------------------------------------------------------


def test_output_folder_is_input_folder(tiny_package, tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    tifffile.imwrite(d / "a.tif", _planes(1, 32)[0])
    tifffile.imwrite(d / "a_mmse.tif", _planes(1, 32, seed=3)[0])  # unrelated, not ours
    before = {p.name: _sha(p) for p in d.iterdir()}
    res = _denoise(tiny_package, d, d)
    assert res.exit_code == 2, res.output
    assert f"output '{d / 'a_mmse.tif'}' of '{d / 'a.tif'}'" in res.output
    assert {p.name: _sha(p) for p in d.iterdir() if p.name in before} == before
    assert not (d / "a_std.tif").exists()  # nothing of a.tif's group written
    assert "FAILED" in res.output


def test_own_outputs_are_never_inputs_and_rerun_skips(tiny_package, tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    tifffile.imwrite(d / "a.tif", _planes(1, 32)[0])
    assert _denoise(tiny_package, d, d).exit_code == 0
    assert _tree(d) == ["a.tif", "a_mmse.tif", "a_std.tif"]
    (d / "a_mmse.tif").rename(d / "renamed.tif")  # ours, whatever its name
    res = _denoise(tiny_package, d, d)
    assert res.exit_code == 0, res.output
    assert f"'{d / 'renamed.tif'}': not an input, an output of hdn-deploy" in res.output
    assert _tree(d) == ["a.tif", "a_mmse.tif", "a_std.tif", "renamed.tif"]
    res = _denoise(tiny_package, d, d)
    assert res.exit_code == 0 and "skipped 1" in res.output, res.output
    res = _denoise(tiny_package, d / "renamed.tif", tmp_path / "o")
    assert res.exit_code == 2 and "nothing to denoise" in res.output, res.output


# -- 8. disk full ----------------------------------------------------------------------------------


def test_disk_full_before_writing_names_folder_and_size(tiny_package, tmp_path, monkeypatch):
    tifffile.imwrite(tmp_path / "a.tif", _planes(1, 32)[0])
    monkeypatch.setattr(hwriting.shutil, "disk_usage",
                        lambda p: shutil._ntuple_diskusage(10**12, 10**12 - 4096, 4096))
    out = tmp_path / "out"
    res = _denoise(tiny_package, tmp_path / "a.tif", out)
    assert res.exit_code == 2, res.output
    assert f"not enough space in output folder '{out}'" in res.output and "MiB" in res.output
    assert _tree(out) == []


def test_disk_full_while_writing_then_resume(tiny_package, tmp_path, monkeypatch):
    src = tmp_path / "in"
    src.mkdir()
    for name in ("a.tif", "b.tif"):
        tifffile.imwrite(src / name, _planes(1, 32)[0])
    real = hwriting._write
    calls = []

    def full_on_second(tmp, *args):
        calls.append(tmp)
        if len(calls) == 2:  # a's mmse is written, a's std hits a full disk
            Path(tmp).write_bytes(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        real(tmp, *args)

    monkeypatch.setattr(hwriting, "_write", full_on_second)
    out = tmp_path / "out"
    res = _denoise(tiny_package, src, out)
    assert res.exit_code == 2, res.output
    assert f"not enough space in output folder '{out}'" in res.output
    assert f"'{src / 'b.tif'}': not attempted" in res.output  # the batch stops
    assert "2 input(s) or series FAILED" in res.output
    assert _tree(out) == []  # neither a's mmse without its std, nor a temporary
    monkeypatch.undo()
    res = _denoise(tiny_package, src, out)
    assert res.exit_code == 0 and "denoised 2 file(s)" in res.output, res.output


# -- 9. stale temporaries ----------------------------------------------------------------------


def test_kill_9_during_a_write_leaves_a_temp_the_next_run_removes(tiny_package, tmp_path):
    out = tmp_path / "out" / "sub"
    code = (
        "import sys, time, numpy as np\n"
        "from hdn_deploy import io\n"
        "def slow(path, *a, **k):\n"
        "    open(path, 'wb').write(b'partial')\n"
        "    print('writing', flush=True)\n"
        "    time.sleep(60)\n"
        "io.tifffile.imwrite = slow\n"
        "io.write_tiff_atomic(sys.argv[1], np.zeros((8, 8)), metadata={}, axes='YX')\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(out / "x_mmse.tif")],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    temps = [p for p in out.iterdir() if p.name.endswith(".tmp")]
    assert len(temps) == 1 and temps[0].name.startswith(".x_mmse.tif.")
    old = time.time() - 3600  # a killed run's temporary is old by the next run
    os.utime(temps[0], (old, old))
    fresh = out / ".y_mmse.tif.0123456789ab.tmp"  # a live writer's: young, kept
    fresh.write_bytes(b"live")
    tifffile.imwrite(tmp_path / "a.tif", _planes(1, 32)[0])
    res = _denoise(tiny_package, tmp_path / "a.tif", tmp_path / "out")
    assert res.exit_code == 0, res.output
    assert "removed 1 stale temporary file(s)" in res.output
    assert not temps[0].exists() and fresh.exists()


# -- 13. memory -----------------------------------------------------------------------------------


def test_huge_header_is_refused_with_advice(tiny_package, tmp_path, monkeypatch):
    from hdn_deploy.io import reading

    monkeypatch.setattr(reading, "available_memory", lambda: 16 * 2**30)
    path = huge_header(tmp_path / "huge.tif")
    res = _denoise(tiny_package, path, tmp_path / "out", "--out-of-core-above", 2**40)
    assert res.exit_code == 2, res.output
    assert str(path) in res.output and "100000 x 100000 float32" in res.output
    assert "out of core" in res.output and "--out-of-core-above" in res.output
    assert _tree(tmp_path / "out") == []


def test_huge_header_out_of_core_needs_no_memory_but_disk(tiny_package, tmp_path, monkeypatch):
    """Above --out-of-core-above (default) memory is not the limit; a 40 GB image's
    outputs (and their raw row files) do not fit a 100 GiB disk: refused before any work."""
    import collections

    from hdn_deploy.io import reading, writing

    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(reading, "available_memory", lambda: 16 * 2**30)
    monkeypatch.setattr(writing.shutil, "disk_usage", lambda p: usage(2**40, 0, 100 * 2**30))
    monkeypatch.setattr(writing.RowFile, "__init__", lambda *a, **k: pytest.fail("started"))
    path = huge_header(tmp_path / "huge.tif")
    res = _denoise(tiny_package, path, tmp_path / "out")
    assert res.exit_code == 2, res.output
    assert "not enough space in output folder" in res.output and "GiB" in res.output
    assert _tree(tmp_path / "out") == []


# -- never exit 0 after skipping ---------------------------------------------------------------------


def test_a_failure_does_not_stop_the_rest_and_exits_2(tiny_package, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    (src / "b_bad.tif").write_text("not a tiff")
    tifffile.imwrite(src / "a.tif", _planes(1, 32)[0])
    tifffile.imwrite(src / "c.tif", _planes(1, 32)[0])
    res = _denoise(tiny_package, src, tmp_path / "out", "--no-save-std")
    assert res.exit_code == 2
    assert str(src / "b_bad.tif") in res.output and "1 input(s) or series FAILED" in res.output
    assert _tree(tmp_path / "out") == ["a_mmse.tif", "c_mmse.tif"]
