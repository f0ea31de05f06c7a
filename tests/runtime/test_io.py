"""TIFF input/output: discovery, validation, atomic ImageJ-compatible writing."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile

from hdn_deploy import io as hio
from hdn_deploy.errors import ConfigError, InputError
from hdn_deploy.io import (
    cast_to_dtype,
    expand_inputs,
    output_path,
    read_hdn_metadata,
    read_image,
    write_tiff_atomic,
)

META = {"model": "tiny", "seed": 3, "n_samples": 8, "nested": {"levels": [0, 1]}}


# -- round trips ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "dtype, axes, shape",
    [
        (np.float32, "YX", (7, 9)),
        (np.uint16, "ZYX", (3, 7, 9)),
        (np.uint8, "TYX", (2, 5, 4)),
        (np.int16, "YX", (4, 4)),
        (np.int32, "YX", (4, 4)),  # not an ImageJ type: plain TIFF, metadata still found
    ],
)
def test_write_read_round_trip(tmp_path, dtype, axes, shape):
    data = (np.arange(np.prod(shape)) % 200).reshape(shape).astype(dtype)
    path = write_tiff_atomic(tmp_path / "out.tif", data, metadata=META, axes=axes)
    image = read_image(path)
    np.testing.assert_array_equal(image.array, data.astype(np.float32))
    assert image.array.dtype == np.float32 and image.dtype == np.dtype(dtype)
    assert image.axes == axes and image.path == path
    assert read_hdn_metadata(path) == META
    assert [p.name for p in tmp_path.iterdir()] == ["out.tif"]


def test_written_file_is_imagej_and_stack_axes_map(tmp_path):
    path = write_tiff_atomic(tmp_path / "s.tif", np.zeros((2, 4, 4)), metadata={}, axes="SYX")
    with tifffile.TiffFile(path) as tif:
        assert tif.is_imagej and tif.series[0].axes == "ZYX"
        assert tif.series[0].dtype == np.float32  # float64 stored as float32
    assert read_image(path).axes == "ZYX"
    four = write_tiff_atomic(tmp_path / "t.tif", np.zeros((2, 3, 4, 4)), metadata={}, axes="TZYX")
    with tifffile.TiffFile(four) as tif:
        assert tif.is_imagej and tif.series[0].axes == "TZYX"


def test_unknown_stack_axis_is_q_and_singletons_are_dropped(tmp_path):
    tifffile.imwrite(tmp_path / "q.tif", np.ones((5, 8, 9), np.float32))  # 3 planes would be RGB
    assert read_image(tmp_path / "q.tif").axes == "QYX"
    tifffile.imwrite(
        tmp_path / "one.tif", np.ones((1, 1, 4, 5), np.float32), imagej=True, metadata={"axes": "TZYX"}
    )
    image = read_image(tmp_path / "one.tif")
    assert image.axes == "YX" and image.array.shape == (4, 5)


def test_overwrite_is_atomic_replace(tmp_path):
    path = tmp_path / "x.tif"
    write_tiff_atomic(path, np.zeros((4, 4), np.float32), metadata={"v": 1}, axes="YX")
    write_tiff_atomic(path, np.ones((4, 4), np.float32), metadata={"v": 2}, axes="YX")
    assert read_hdn_metadata(path) == {"v": 2} and read_image(path).array.max() == 1.0


def test_metadata_absent_or_unreadable(tmp_path):
    tifffile.imwrite(tmp_path / "plain.tif", np.zeros((4, 4), np.uint8))
    (tmp_path / "text.tif").write_text("not a tiff")
    tifffile.imwrite(
        tmp_path / "badjson.tif", np.zeros((4, 4), np.uint8), imagej=True, metadata={"Info": "{oops"}
    )
    for name in ("plain.tif", "text.tif", "badjson.tif", "missing.tif"):
        assert read_hdn_metadata(tmp_path / name) is None


# -- reading errors ---------------------------------------------------------------------


def _text(path: Path) -> Path:
    path.write_text("hello")
    return path


def _write(path: Path, data, **kwargs) -> Path:
    with warnings.catch_warnings():  # tifffile warns about zero-size arrays
        warnings.simplefilter("ignore")
        tifffile.imwrite(path, data, **kwargs)
    return path


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda p: p / "missing.tif", "does not exist"),
        (lambda p: _text(p / "a.tif"), "cannot read .* as a TIFF"),
        (lambda p: _write(p / "rgb.tif", np.zeros((8, 8, 3), np.uint8), photometric="rgb"),
         "expects one channel here; split channels first"),
        (lambda p: _write(p / "c.tif", np.zeros((2, 8, 8), np.float32), imagej=True,
                          metadata={"axes": "CYX"}), "expects one channel"),
        (lambda p: _write(p / "4d.tif", np.zeros((2, 5, 8, 8), np.float32)), r"QQYX.*\(2, 5, 8, 8\).*ZYX"),
        (lambda p: _write(p / "chlast.tif", np.zeros((64, 64, 4), np.uint8), photometric="minisblack"),
         r"64x4-pixel images.*--axes YXC"),
        (lambda p: _write(p / "nan.tif", np.array([[0, np.nan], [1, 2]], np.float32)), "NaN or infinite"),
        (lambda p: _write(p / "inf.tif", np.array([[0, 1e300], [1, 2]], np.float64)), "NaN or infinite"),
        (lambda p: _write(p / "empty.tif", np.zeros((0, 4), np.float32)), "empty"),
        (lambda p: _write(p / "1d.tif", np.zeros(8, np.float32)), "1-D"),
        (lambda p: _write(p / "cplx.tif", np.zeros((4, 4), np.complex64)), "complex64"),
    ],
)
def test_read_errors_name_the_file(tmp_path, make, match):
    path = make(tmp_path)
    with pytest.raises(InputError, match=match) as info:
        read_image(path)
    assert path.name in str(info.value)


# -- writing errors ------------------------------------------------------------------------


def test_unwritable_folder_names_it_and_leaves_nothing(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InputError, match="file"):
        write_tiff_atomic(blocker / "out.tif", np.zeros((4, 4)), metadata={}, axes="YX")
    if os.geteuid() != 0:  # root may write anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(InputError, match="locked"):
            write_tiff_atomic(locked / "out.tif", np.zeros((4, 4)), metadata={}, axes="YX")


def test_failed_write_removes_temp_and_keeps_old_file(tmp_path, monkeypatch):
    path = write_tiff_atomic(tmp_path / "o.tif", np.zeros((4, 4)), metadata={"v": 1}, axes="YX")

    def broken(*args, **kwargs):
        Path(args[0]).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(hio.tifffile, "imwrite", broken)
    with pytest.raises(OSError, match="disk full"):
        write_tiff_atomic(path, np.ones((4, 4)), metadata={"v": 2}, axes="YX")
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["o.tif"]
    assert read_hdn_metadata(path) == {"v": 1}


@pytest.mark.parametrize(
    "array, axes, metadata, match",
    [
        (np.zeros((4, 4)), "ZYX", {}, "do not fit"),
        (np.zeros((4, 4)), "XY", {}, "do not fit"),
        (np.zeros((4, 4)), "YX", {"x": object()}, "JSON"),
        (np.zeros((4, 4), complex), "YX", {}, "complex"),
    ],
)
def test_write_rejects_bad_arguments_before_touching_disk(tmp_path, array, axes, metadata, match):
    with pytest.raises(ConfigError, match=match):
        write_tiff_atomic(tmp_path / "o.tif", array, metadata=metadata, axes=axes)
    assert list(tmp_path.iterdir()) == []


# -- casting and names -------------------------------------------------------------------------


def test_cast_to_dtype_rounds_and_clips():
    values = np.array([-3.6, 0.4, 0.5, 1.5, 254.6, 300.0, np.nan])
    np.testing.assert_array_equal(cast_to_dtype(values, np.uint8), [0, 0, 0, 2, 255, 255, 0])
    np.testing.assert_array_equal(cast_to_dtype(values[:6], "int16"), [-4, 0, 0, 2, 255, 300])
    assert cast_to_dtype(np.array([1e30]), np.int64)[0] == np.iinfo(np.int64).max - 1023
    out = cast_to_dtype(values, np.float32)
    assert out.dtype == np.float32 and out[0] == np.float32(-3.6)
    np.testing.assert_array_equal(cast_to_dtype(np.array([70000, -5]), np.uint16), [65535, 0])
    with pytest.raises(ConfigError, match="bool"):
        cast_to_dtype(values, bool)


def test_output_path(tmp_path):
    assert output_path("in/cells.tif", tmp_path, "mmse") == tmp_path / "cells_mmse.tif"
    assert output_path("in/cells.ome.TIFF", tmp_path, "std") == tmp_path / "cells_std.tif"
    src = tmp_path / "cells.tif"
    with pytest.raises(InputError, match="overwrite the input"):
        output_path(src, tmp_path, "")
    with pytest.raises(InputError, match="overwrite"):
        output_path(tmp_path / "a.tif", tmp_path / "sub" / "..", "")  # same file, other spelling


# -- discovering inputs -----------------------------------------------------------------------------


@pytest.fixture
def tree(tmp_path):
    for name in ("b.tif", "a.TIFF", "c.png", ".hidden.tif", "sub/d.tif", "e.tif"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    return tmp_path


def test_expand_inputs_files_folders_globs(tree):
    got = expand_inputs([tree / "e.tif", tree, str(tree / "sub" / "*.tif")])
    assert [p.name for p in got] == ["e.tif", "a.TIFF", "b.tif", "d.tif"]  # e not repeated
    assert expand_inputs([str(tree / "**" / "d.tif")]) == [tree / "sub" / "d.tif"]
    assert expand_inputs(tree / "c.png") == [tree / "c.png"]  # an explicit file is taken


@pytest.mark.parametrize(
    "item, match",
    [("nope.tif", "does not exist"), ("sub/*.png", "matches no files"), ("empty", "no .tif")],
)
def test_expand_inputs_errors(tree, item, match):
    (tree / "empty").mkdir()
    with pytest.raises(InputError, match=match):
        expand_inputs([str(tree / item)])
    with pytest.raises(InputError, match="no input"):
        expand_inputs([])
