"""`hdn-deploy denoise` reading big TIFFs tile by tile and writing their MMSE/std row band
by row band (--out-of-core-above): the same files as in memory, atomic, resumable."""
from __future__ import annotations

import re

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner

from hdn_deploy.cli.main import main
from hdn_deploy.io import read_hdn_metadata

pytest.importorskip("zarr", reason="needs the [big] extra (make install-dev)")

FAST = ["--samples", "2", "--seed", "3", "--backend", "cpu", "--threads", "1", "--quiet",
        "--tile", "64", "--overlap", "16"]
_UUID = re.compile(rb'UUID="urn:uuid:[0-9a-f-]+"')


def _invoke(package, src, out, *extra):
    return CliRunner().invoke(main, ["denoise", str(src), "-m", str(package), "-o", str(out),
                                     *FAST, *map(str, extra)])


def _image(shape, dtype=np.uint16, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(100, 25, shape).clip(0, 255).astype(dtype)


def _write_imagej(path, image):
    tifffile.imwrite(path, image, imagej=True, resolution=(1 / 0.25, 1 / 0.25),
                     metadata={"unit": "um", "axes": "YX"}, tile=(32, 32))


def _write_ome(path, image):
    tifffile.imwrite(path, image, ome=True, photometric="minisblack",
                     metadata={"axes": "ZYX", "PhysicalSizeX": 0.2, "PhysicalSizeY": 0.2,
                               "PhysicalSizeZ": 1.5, "Name": "stack"})


def _write_plain(path, image):
    tifffile.imwrite(path, image, resolution=(4e4, 4e4), resolutionunit="CENTIMETER",
                     rowsperstrip=7)


CASES = {
    "imagej-2d-uint16-tiled-output-dtype-input": (_write_imagej, (150, 170), np.uint16,
                                                 ["--output-dtype", "input"]),
    "ome-zyx-float32": (_write_ome, (2, 100, 90), np.float32, []),
    "plain-2d-uint16-strips": (_write_plain, (130, 101), np.uint16, []),
}


@pytest.mark.parametrize("case", list(CASES))
def test_out_of_core_tiff_outputs_are_the_in_memory_files(tiny_package, tmp_path, case,
                                                           monkeypatch):
    import hdn_deploy.io as io

    write, shape, dtype, extra = CASES[case]
    (tmp_path / "in").mkdir()
    src = tmp_path / "in" / "big.tif"
    write(src, _image(shape, dtype))
    mem = _invoke(tiny_package, src, tmp_path / "mem", *extra)  # default threshold: in memory
    monkeypatch.setattr(io, "read_image", lambda *a, **k: pytest.fail("read whole"))
    ooc = _invoke(tiny_package, src, tmp_path / "ooc", "--out-of-core-above", 1000, *extra)
    assert mem.exit_code == 0 and ooc.exit_code == 0, mem.output + ooc.output
    for kind in ("mmse", "std"):
        a = (tmp_path / "mem" / f"big_{kind}.tif").read_bytes()
        b = (tmp_path / "ooc" / f"big_{kind}.tif").read_bytes()
        # whole files equal (tags, physical and run metadata, pixels) but OME's random UUID
        assert _UUID.sub(b"", a) == _UUID.sub(b"", b), kind
        assert tifffile.imread(tmp_path / "ooc" / f"big_{kind}.tif").shape == shape
    if extra:
        assert tifffile.imread(tmp_path / "ooc" / "big_mmse.tif").dtype == dtype


def test_out_of_core_path_is_taken_and_memory_stays_bounded(tiny_package, tmp_path, monkeypatch):
    """The lazy path runs (not read_image) and never holds a whole output array."""
    import hdn_deploy.io as io

    src = tmp_path / "a.tif"
    _write_imagej(src, _image((150, 170)))
    monkeypatch.setattr(io, "read_image", lambda *a, **k: pytest.fail("read whole"))
    res = _invoke(tiny_package, src, tmp_path / "out", "--out-of-core-above", 0)
    assert res.exit_code == 0, res.output
    assert read_hdn_metadata(tmp_path / "out" / "a_mmse.tif")["settings"]["seed"] == 3


def test_out_of_core_resumes_and_an_interrupted_run_leaves_no_output(tiny_package, tmp_path,
                                                                     monkeypatch):
    from hdn_deploy.io import writing

    src = tmp_path / "in" / "a.tif"
    src.parent.mkdir()
    _write_plain(src, _image((150, 170)))
    out = tmp_path / "out"
    calls = {"n": 0}
    real = writing.RowFile.__setitem__

    def fail_late(self, key, value):
        calls["n"] += 1
        if calls["n"] > 3:
            raise OSError("simulated failure in the middle of writing")
        real(self, key, value)

    monkeypatch.setattr(writing.RowFile, "__setitem__", fail_late)
    broken = _invoke(tiny_package, src, out, "--out-of-core-above", 0)
    assert broken.exit_code != 0
    assert not list(out.rglob("*.tif")) and not list(out.rglob(".*.tmp"))  # no partial, no temp
    monkeypatch.setattr(writing.RowFile, "__setitem__", real)
    done = _invoke(tiny_package, src, out, "--out-of-core-above", 0)
    assert done.exit_code == 0 and "denoised 1 file(s)" in done.output, done.output
    again = _invoke(tiny_package, src, out, "--out-of-core-above", 0)
    assert again.exit_code == 0 and "skipped 1 already complete" in again.output
    # a run killed with SIGKILL leaves a raw row file: a hidden temporary the next run removes
    stale = writing.RowFile(out / "a_mmse.tif", (150, 170), np.float32)
    import os
    os.utime(stale.path, (1, 1))
    res = _invoke(tiny_package, src, out, "--out-of-core-above", 0, "--overwrite")
    assert res.exit_code == 0 and "removed 1 stale temporary" in res.output
    assert not stale.path.exists()


def test_out_of_core_nan_names_the_file_and_writes_nothing(tiny_package, tmp_path):
    image = _image((150, 170), np.float32)
    image[140, 3] = np.nan
    tifffile.imwrite(tmp_path / "a.tif", image)
    res = _invoke(tiny_package, tmp_path / "a.tif", tmp_path / "out", "--out-of-core-above", 0)
    assert res.exit_code == 2 and "a.tif" in res.output and "NaN" in res.output
    assert not list((tmp_path / "out").rglob("*.tif")) and not list((tmp_path / "out").rglob(".*"))


def test_keep_samples_and_channel_last_fall_back_to_memory(tiny_package, tmp_path):
    tifffile.imwrite(tmp_path / "a.tif", _image((96, 80)))
    res = _invoke(tiny_package, tmp_path / "a.tif", tmp_path / "out", "--out-of-core-above", 0,
                  "--keep-samples", 1)
    assert res.exit_code == 0, res.output
    assert read_hdn_metadata(tmp_path / "out" / "a_samples.tif")["kind"] == "samples"
    tifffile.imwrite(tmp_path / "rgb.tif", _image((64, 72, 3), np.uint8), photometric="rgb")
    res = _invoke(tiny_package, tmp_path / "rgb.tif", tmp_path / "out", "--out-of-core-above", 0)
    assert res.exit_code == 0, res.output
    assert tifffile.imread(tmp_path / "out" / "rgb_mmse.tif").shape == (64, 72, 3)


@pytest.mark.parametrize("kwargs", [{}, {"bigtiff": True, "byteorder": ">"}, {"tile": (32, 32)}])
def test_lazy_tiff_planes_read_the_rows_asked_for(tmp_path, kwargs):
    """open_image_lazy: TZYX planes, big-endian and tiled files give numpy's values."""
    from hdn_deploy.io import open_image_lazy

    data = np.arange(2 * 3 * 50 * 70, dtype=np.uint16).reshape(2, 3, 50, 70)
    tifffile.imwrite(tmp_path / "a.tif", data, metadata={"axes": "TZYX"}, **kwargs)
    with open_image_lazy(tmp_path / "a.tif", series=0) as image:
        assert image.array.shape == (6, 50, 70) and image.shape == (2, 3, 50, 70)
        planes = data.reshape(6, 50, 70)
        assert np.array_equal(image.array[4, 3:17, :], planes[4, 3:17])
        assert np.array_equal(image.array[5][10:12, 5:9], planes[5, 10:12, 5:9])
        assert image.array[4, 3:17, :].dtype == np.uint16
    tifffile.imwrite(tmp_path / "rgb.tif", data[0].transpose(1, 2, 0).astype(np.uint8),
                     photometric="rgb")
    with open_image_lazy(tmp_path / "rgb.tif", series=0) as image:
        assert image is None  # YXC needs a transpose: read in memory
