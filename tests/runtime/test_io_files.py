"""Real microscope files at the io level: series, multi-file OME, axes, compressions,
physical metadata, memory checks, grouped atomic writes (issue 10)."""
from __future__ import annotations

import errno
import os
import shutil
import uuid
from pathlib import Path

import numpy as np
import pytest
import tifffile

from hdn_deploy import atomic
from hdn_deploy.errors import DiskSpaceError, InputError
from hdn_deploy.io import (
    PhysicalMetadata,
    TiffOutput,
    imagej_axes,
    list_series,
    read_hdn_metadata,
    read_image,
    write_outputs_atomic,
    write_tiff_atomic,
)
from hdn_deploy.io import reading as hreading
from hdn_deploy.io import writing as hwriting

RNG = np.random.default_rng(0)


def thumbnail_and_stack(path: Path) -> np.ndarray:
    """Series 0: 16x16 reduced-resolution thumbnail; series 1: 3x64x64 uint16 stack."""
    stack = RNG.integers(0, 4000, (3, 64, 64)).astype(np.uint16)
    with tifffile.TiffWriter(path) as tw:
        tw.write(np.zeros((16, 16), np.uint16), subfiletype=1)
        tw.write(stack, photometric="minisblack")
    return stack


def multi_file_ome(folder: Path, n: int = 3, size: int = 32) -> list[Path]:
    """An OME data set of ``n`` one-plane files (Z = 0..n-1), each listing all of them."""
    folder.mkdir(parents=True, exist_ok=True)
    ids = [uuid.uuid4().urn for _ in range(n)]
    names = [f"m_{i}.ome.tif" for i in range(n)]
    tiffdata = "".join(f'<TiffData FirstZ="{i}" IFD="0" PlaneCount="1"><UUID FileName="{names[i]}">'
                       f"{ids[i]}</UUID></TiffData>" for i in range(n))
    for i in range(n):
        xml = ('<?xml version="1.0" encoding="UTF-8"?><OME xmlns="http://www.openmicroscopy.org/'
               f'Schemas/OME/2016-06" UUID="{ids[i]}"><Image ID="Image:0"><Pixels ID="Pixels:0" '
               f'DimensionOrder="XYZCT" Type="uint16" SizeX="{size}" SizeY="{size}" SizeZ="{n}" '
               f'SizeC="1" SizeT="1">{tiffdata}</Pixels></Image></OME>')
        plane = np.full((size, size), 100 * (i + 1), np.uint16)
        tifffile.imwrite(folder / names[i], plane, description=xml, metadata=None)
    return [folder / name for name in names]


# -- 1. series --------------------------------------------------------------------------


def test_thumbnail_series_is_listed_as_reduced_and_the_stack_is_read(tmp_path):
    stack = thumbnail_and_stack(tmp_path / "two.tif")
    infos = list_series(tmp_path / "two.tif")
    assert [(s.index, s.shape, s.reduced) for s in infos] == [(0, (16, 16), True),
                                                              (1, (3, 64, 64), False)]
    image = read_image(tmp_path / "two.tif")  # the only image series
    assert image.series == 1 and image.axes == "QYX"
    np.testing.assert_array_equal(image.array, stack.astype(np.float32))
    assert read_image(tmp_path / "two.tif", series=0).array.shape == (16, 16)
    with pytest.raises(InputError, match="series 4 does not exist"):
        read_image(tmp_path / "two.tif", series=4)


def test_several_image_series_need_a_choice(tmp_path):
    with tifffile.TiffWriter(tmp_path / "pos.tif") as tw:
        tw.write(np.ones((32, 32), np.uint8))
        tw.write(np.full((24, 40), 2, np.uint8))
    with pytest.raises(InputError, match=r"2 image series.*--series N") as info:
        read_image(tmp_path / "pos.tif")
    assert "pos.tif" in str(info.value)
    assert read_image(tmp_path / "pos.tif", series=1).array.shape == (24, 40)


# -- 2. multi-file OME ---------------------------------------------------------------------


def test_multi_file_ome_reads_all_planes(tmp_path):
    files = multi_file_ome(tmp_path / "ome")
    image = read_image(files[0])
    assert image.axes == "ZYX"
    np.testing.assert_array_equal(image.array[:, 0, 0], [100, 200, 300])


def test_multi_file_ome_with_a_missing_file_names_it(tmp_path):
    files = multi_file_ome(tmp_path / "ome")
    files[2].unlink()
    with pytest.raises(InputError, match=r"'m_2\.ome\.tif' are missing") as info:
        read_image(files[0])
    assert str(files[0]) in str(info.value)


# -- 3. axes --------------------------------------------------------------------------------


def test_channel_last_grey_is_refused_without_axes_and_read_with_them(tmp_path):
    data = RNG.integers(0, 255, (64, 64, 4)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "c.tif", data, photometric="minisblack")
    with pytest.raises(InputError, match=r"64x4-pixel images.*--axes YXC"):
        read_image(tmp_path / "c.tif")
    image = read_image(tmp_path / "c.tif", axes="YXC", allow_channels=True)
    assert image.axes == "CYX" and image.file_axes == "YXC" and image.array.shape == (4, 64, 64)
    np.testing.assert_array_equal(image.array, np.moveaxis(data, -1, 0))
    np.testing.assert_array_equal(image.to_file_order(image.array), data)
    samples = np.stack([image.array, image.array + 1])
    np.testing.assert_array_equal(image.to_file_order(samples, leading=1)[1], data + 1.0)


@pytest.mark.parametrize("axes, match", [("YXZ", "3 letters for 4 dimensions"),
                                         ("YXK", "unknown letter"), ("XYC", "Y before X"),
                                         ("YYX", "repeated")])
def test_bad_axes_are_refused(tmp_path, axes, match):
    tifffile.imwrite(tmp_path / "c.tif", np.zeros((8, 8, 4, 2), np.uint8), photometric="minisblack")
    with pytest.raises(InputError, match=match):
        read_image(tmp_path / "c.tif", axes=axes)


def test_channels_need_allow_channels(tmp_path):
    tifffile.imwrite(tmp_path / "c.tif", np.zeros((2, 16, 16), np.uint8), imagej=True,
                     metadata={"axes": "CYX"})
    with pytest.raises(InputError, match="several channels"):
        read_image(tmp_path / "c.tif")
    assert read_image(tmp_path / "c.tif", allow_channels=True).array.shape == (2, 16, 16)


def test_imagej_and_ome_axes_are_honoured(tmp_path):
    data = RNG.random((2, 3, 16, 16)).astype(np.float32)
    tifffile.imwrite(tmp_path / "ij.tif", data, imagej=True, metadata={"axes": "ZCYX"})
    image = read_image(tmp_path / "ij.tif", allow_channels=True)
    assert image.axes == "ZCYX" and image.array.shape == (6, 16, 16)
    tifffile.imwrite(tmp_path / "o.ome.tif", data, ome=True, metadata={"axes": "CZYX"})
    assert read_image(tmp_path / "o.ome.tif", allow_channels=True).axes == "CZYX"
    rgb = RNG.integers(0, 255, (16, 16, 3)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    assert read_image(tmp_path / "rgb.tif", allow_channels=True).file_axes == "YXC"


@pytest.mark.parametrize("axes, expected", [("YX", "YX"), ("SYX", "ZYX"), ("SZYX", "TZYX"),
                                            ("SQYX", "TZYX"), ("CYX", "CYX"), ("YXC", None),
                                            ("TCZYX", None), ("SCYX", "ZCYX")])
def test_imagej_axes(axes, expected):
    assert imagej_axes(axes) == expected


# -- 4. compressions ---------------------------------------------------------------------------

COMPRESSIONS = [
    ("lzw", None, None), ("lzw", None, "horizontal"), ("zlib", None, None),
    ("adobe_deflate", None, "horizontal"), ("deflate", None, None), ("zstd", None, None),
    ("lzma", None, None), ("packbits", None, None), ("jpeg2000", {"level": 0}, None),
    ("jpegxl", {"lossless": True}, None), ("png", None, None), ("jpegxr", {"level": 1.0}, None),
    ("lerc", None, None),
]


@pytest.mark.parametrize("dtype", ["uint8", "uint16"])
@pytest.mark.parametrize("compression, args, predictor", COMPRESSIONS)
def test_lossless_compressions_read_exactly(tmp_path, compression, args, predictor, dtype):
    data = RNG.integers(0, 250, (2, 40, 48)).astype(dtype)
    path = tmp_path / "c.tif"
    tifffile.imwrite(path, data, compression=compression, compressionargs=args,
                     predictor=predictor, photometric="minisblack")
    with tifffile.TiffFile(path) as tif:
        assert tif.pages[0].compression != tifffile.COMPRESSION.NONE
    np.testing.assert_array_equal(read_image(path).array, data.astype(np.float32))


def test_float_deflate_with_floating_point_predictor(tmp_path):
    data = RNG.random((40, 48)).astype(np.float32)
    tifffile.imwrite(tmp_path / "f.tif", data, compression="zlib", predictor="floatingpoint")
    np.testing.assert_array_equal(read_image(tmp_path / "f.tif").array, data)


@pytest.mark.parametrize("compression, args", [("jpeg", {"level": 95}), ("jpegxl", {"level": 90})])
def test_lossy_compressions_read_close(tmp_path, compression, args):
    data = np.tile(np.linspace(20, 230, 48), (40, 1)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "l.tif", data, compression=compression, compressionargs=args,
                     photometric="minisblack")
    assert np.abs(read_image(tmp_path / "l.tif").array - data).max() <= 8


@pytest.mark.parametrize("compression", ["lzw", "zlib", "zstd", "jpeg2000"])
def test_damaged_compressed_data_is_a_clear_error(tmp_path, compression):
    path = tmp_path / "bad.tif"
    tifffile.imwrite(path, RNG.integers(0, 255, (64, 64)).astype(np.uint8), compression=compression,
                     rowsperstrip=64)
    with tifffile.TiffFile(path) as tif:
        offset, count = tif.pages[0].dataoffsets[0], tif.pages[0].databytecounts[0]
    data = bytearray(path.read_bytes())
    data[offset + 8:offset + count - 8] = b"\xff" * (count - 16)
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"cannot decode the pixel data of .*bad\.tif.*damaged"):
        read_image(path)


def test_webp_lossless_rgb_reads_as_channels(tmp_path):
    data = RNG.integers(0, 250, (40, 48, 3)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "w.tif", data, compression="webp", compressionargs={"lossless": True},
                     photometric="rgb")
    image = read_image(tmp_path / "w.tif", allow_channels=True)
    np.testing.assert_array_equal(image.to_file_order(image.array), data)


# -- 5. physical metadata -----------------------------------------------------------------------


def test_imagej_calibration_is_read_and_written(tmp_path):
    data = np.zeros((3, 16, 16), np.float32)
    tifffile.imwrite(tmp_path / "ij.tif", data, imagej=True, resolution=(1 / 0.65, 1 / 0.65),
                     metadata={"axes": "ZYX", "unit": "um", "spacing": 2.5})
    phys = read_image(tmp_path / "ij.tif").physical
    assert phys.source == "imagej" and phys.unit == "um" and phys.z_spacing == 2.5
    assert phys.pixel_size == pytest.approx((0.65, 0.65), rel=1e-6)
    out = write_tiff_atomic(tmp_path / "o.tif", data, metadata={"k": 1}, axes="ZYX", physical=phys)
    with tifffile.TiffFile(out) as tif:
        assert tif.pages[0].get_resolution() == pytest.approx((1 / 0.65, 1 / 0.65), rel=1e-6)
        assert tif.imagej_metadata["unit"] == "um" and tif.imagej_metadata["spacing"] == 2.5
    assert read_hdn_metadata(out) == {"k": 1}


def test_imagej_frame_interval_is_kept(tmp_path):
    data = np.zeros((4, 16, 16), np.uint16)
    tifffile.imwrite(tmp_path / "t.tif", data, imagej=True, metadata={"axes": "TYX", "finterval": 2.5})
    image = read_image(tmp_path / "t.tif")
    assert image.axes == "TYX" and image.physical.time_interval == 2.5
    out = write_tiff_atomic(tmp_path / "o.tif", image.array, metadata={}, axes="TYX",
                            physical=image.physical)
    with tifffile.TiffFile(out) as tif:
        assert tif.imagej_metadata["finterval"] == 2.5 and tif.series[0].axes == "TYX"


def test_ome_calibration_and_channel_names_are_carried(tmp_path):
    data = np.zeros((2, 3, 16, 16), np.uint16)
    tifffile.imwrite(tmp_path / "in.ome.tif", data, ome=True, metadata={
        "axes": "TCYX", "PhysicalSizeX": 0.2, "PhysicalSizeXUnit": "µm", "PhysicalSizeY": 0.25,
        "PhysicalSizeYUnit": "µm", "TimeIncrement": 30.0, "TimeIncrementUnit": "s",
        "Channel": {"Name": ["DAPI", "GFP", "RFP"]}, "Name": "well A1", "Description": "2 ms"})
    image = read_image(tmp_path / "in.ome.tif", allow_channels=True)
    phys = image.physical
    assert phys.pixel_size == (0.2, 0.25) and phys.unit == "µm" and phys.time_interval == 30.0
    assert phys.channel_names == ("DAPI", "GFP", "RFP") and phys.description == "2 ms"
    out = write_tiff_atomic(tmp_path / "o.tif", image.to_file_order(image.array),
                            metadata={"kind": "mmse"}, axes=image.file_axes, physical=phys)
    back = read_image(out, allow_channels=True).physical
    assert (back.source, back.pixel_size, back.unit) == ("ome", (0.2, 0.25), "µm")
    assert back.channel_names == ("DAPI", "GFP", "RFP") and back.time_interval == 30.0
    assert read_hdn_metadata(out) == {"kind": "mmse"}


def test_plain_tiff_resolution_in_centimetres(tmp_path):
    tifffile.imwrite(tmp_path / "p.tif", np.zeros((16, 16), np.uint8),
                     resolution=(1e4 / 0.5, 1e4 / 0.5), resolutionunit="CENTIMETER")
    phys = read_image(tmp_path / "p.tif").physical
    assert phys.pixel_size == pytest.approx((0.5, 0.5)) and phys.unit == "um"


# -- 13. memory -------------------------------------------------------------------------------


def huge_header(path: Path) -> Path:
    """A ~1 MiB TIFF whose header claims 100,000 x 100,000 float32 pixels."""
    tifffile.imwrite(path, np.zeros((512, 512), np.float32), metadata=None)
    with tifffile.TiffFile(path, mode="r+b") as tif:
        tags = tif.pages[0].tags
        tags["ImageWidth"].overwrite(100_000)
        tags["ImageLength"].overwrite(100_000)
        tags["RowsPerStrip"].overwrite(100_000)
    return path


def test_header_larger_than_memory_is_refused_before_reading(tmp_path, monkeypatch):
    assert 2**20 < hreading.available_memory() < 2**50  # the real figure (psutil)
    monkeypatch.setattr(hreading, "available_memory", lambda: 16 * 2**30)
    path = huge_header(tmp_path / "huge.tif")
    assert path.stat().st_size < 2**21
    with pytest.raises(InputError, match=r"100000 x 100000 float32.*out of core") as info:
        read_image(path)
    assert str(path) in str(info.value) and "--out-of-core-above" in str(info.value)


# -- 8. grouped writes ----------------------------------------------------------------------------


def _outputs(folder: Path) -> list[TiffOutput]:
    return [TiffOutput(folder / f"x_{k}.tif", np.ones((8, 8), np.float32), "YX", {"kind": k})
            for k in ("mmse", "std", "samples")]


def test_disk_full_while_writing_leaves_none_of_the_group(tmp_path, monkeypatch):
    calls = []
    real = hwriting._write

    def full_on_second(tmp, *args):
        calls.append(tmp)
        if len(calls) == 2:
            Path(tmp).write_bytes(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        real(tmp, *args)

    monkeypatch.setattr(hwriting, "_write", full_on_second)
    with pytest.raises(DiskSpaceError, match=f"not enough space in output folder '{tmp_path}'"):
        write_outputs_atomic(_outputs(tmp_path))
    assert list(tmp_path.iterdir()) == []


def test_numpy_short_write_message_counts_as_disk_full(tmp_path, monkeypatch):
    def short(tmp, *args):
        raise OSError("8192 requested and 0 written")

    monkeypatch.setattr(hwriting, "_write", short)
    with pytest.raises(DiskSpaceError, match="need about"):
        write_outputs_atomic(_outputs(tmp_path))
    assert list(tmp_path.iterdir()) == []


def test_free_space_is_checked_before_writing(tmp_path, monkeypatch):
    monkeypatch.setattr(hwriting.shutil, "disk_usage",
                        lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(DiskSpaceError, match=r"need about .*MiB; 0\.0 MiB free"):
        write_outputs_atomic(_outputs(tmp_path))
    assert list(tmp_path.iterdir()) == []


def test_failed_rename_removes_the_renamed_outputs(tmp_path, monkeypatch):
    real = os.replace
    calls = []

    def fail_third(src, dst):
        calls.append(dst)
        if len(calls) == 3:
            raise OSError(errno.EIO, "I/O error")
        real(src, dst)

    monkeypatch.setattr(atomic.os, "replace", fail_third)
    with pytest.raises(OSError, match="I/O error"):
        write_outputs_atomic(_outputs(tmp_path))
    assert list(tmp_path.iterdir()) == []


def test_physical_metadata_json():
    phys = PhysicalMetadata(source="ome", pixel_size=(0.1, 0.1), unit="µm", channel_names=("a",))
    assert phys.to_json() == {"source": "ome", "pixel_size": [0.1, 0.1], "unit": "µm",
                              "channel_names": ["a"]}
