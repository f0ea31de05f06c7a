"""`hdn-deploy denoise` on OME-Zarr inputs and on a dask cluster (issue 14)."""
from __future__ import annotations

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner

from hdn_deploy import Denoiser
from hdn_deploy.cli.main import main

zarr = pytest.importorskip("zarr", reason="needs the [big] extra (make install-dev)")
writer = pytest.importorskip("ome_zarr.writer", reason="needs the [big] extra")

FAST = ["--samples", "2", "--seed", "7", "--backend", "cpu", "--threads", "1", "--quiet"]


def _invoke(package, inputs, out, *extra):
    return CliRunner().invoke(main, ["denoise", *map(str, inputs), "-m", str(package), "-o",
                                     str(out), *FAST, *map(str, extra)])


def _ome_zarr(path, data):
    group = zarr.open_group(path, mode="w")
    writer.write_image(data, group, axes="zyx", scale_factors=(),
                       scale={"z": 2.0, "y": 0.3, "x": 0.3},
                       axes_units={"z": "micrometer", "y": "micrometer", "x": "micrometer"},
                       storage_options={"chunks": (1, 40, 40)}, name="stack")
    return path


def test_ome_zarr_input_gives_ome_zarr_outputs_resumes_and_is_not_retaken(tiny_package, tmp_path):
    from hdn_deploy.io.omezarr import read_ome_zarr, read_zarr_metadata

    data = np.random.default_rng(1).normal(100, 30, (2, 80, 100)).clip(0).astype(np.uint16)
    src = _ome_zarr(tmp_path / "in" / "cells.ome.zarr", data)
    out = tmp_path / "out"
    res = _invoke(tiny_package, [src], out, "--pyramid", "1")
    assert res.exit_code == 0, res.output
    ref = Denoiser(tiny_package, backend="cpu", threads=1).denoise(data, n_samples=2, seed=7)
    mmse, std = read_ome_zarr(out / "cells_mmse.ome.zarr"), read_ome_zarr(out / "cells_std.ome.zarr")
    assert np.asarray(mmse.array).tobytes() == ref.mmse.tobytes()
    assert np.asarray(std.array).tobytes() == ref.std.tobytes()
    assert mmse.axes == "ZYX" and mmse.scale == (2.0, 0.3, 0.3) and mmse.physical.name == "stack"
    assert sorted(zarr.open_group(out / "cells_mmse.ome.zarr", mode="r").keys()) == ["0", "1"]
    assert read_zarr_metadata(out / "cells_mmse.ome.zarr")["settings"]["seed"] == 7
    again = _invoke(tiny_package, [src, out / "cells_mmse.ome.zarr"], out)
    assert again.exit_code == 0, again.output
    assert "skipped 1 already complete" in again.output
    assert "an output of hdn-deploy (ignored)" in again.output


def test_ome_zarr_refuses_samples_with_exit_2(tiny_package, tmp_path):
    src = _ome_zarr(tmp_path / "a.ome.zarr", np.full((1, 64, 64), 100, np.uint16))
    res = _invoke(tiny_package, [src], tmp_path / "out", "--keep-samples", "1")
    assert res.exit_code == 2 and "--keep-samples" in res.output


def test_both_dask_flags_are_a_clear_error(tiny_package, tmp_path):
    tifffile.imwrite(tmp_path / "a.tif", np.full((64, 64), 100, np.uint16))
    res = _invoke(tiny_package, [tmp_path / "a.tif"], tmp_path / "out", "--dask-local", "2",
                  "--dask-scheduler", "tcp://127.0.0.1:1")
    assert res.exit_code != 0 and "not both" in res.output


@pytest.mark.slow
def test_dask_local_gives_the_bytes_of_one_process(tiny_package, tmp_path):
    image = np.random.default_rng(2).normal(100, 30, (150, 170)).clip(0).astype(np.uint16)
    (tmp_path / "in").mkdir()
    tifffile.imwrite(tmp_path / "in" / "a.tif", image)
    one = _invoke(tiny_package, [tmp_path / "in" / "a.tif"], tmp_path / "one")
    assert one.exit_code == 0, one.output
    two = _invoke(tiny_package, [tmp_path / "in" / "a.tif"], tmp_path / "two", "--dask-local", "2",
                  "--dask-chunk", "64")
    assert two.exit_code == 0, two.output
    for kind in ("mmse", "std"):
        a = tifffile.imread(tmp_path / "one" / f"a_{kind}.tif")
        b = tifffile.imread(tmp_path / "two" / f"a_{kind}.tif")
        assert a.dtype == b.dtype == np.float32 and a.tobytes() == b.tobytes()


@pytest.mark.slow
def test_readme_big_images_commands_and_code_run(tiny_package, tmp_path, monkeypatch):
    from conftest import noisy, synthetic_clean
    from test_readme import readme_blocks, readme_commands

    monkeypatch.chdir(tmp_path)
    (tmp_path / "my_model").symlink_to(tiny_package)
    image = noisy(synthetic_clean(160, 200), 10).clip(0).astype(np.uint16)
    tifffile.imwrite("big.tif", image, tile=(64, 64))
    _ome_zarr(tmp_path / "scan.ome.zarr", image[None])
    (tmp_path / "noisy_images").mkdir()
    tifffile.imwrite("noisy_images/img_000.tif", image[:96, :96])
    commands = readme_commands("big-cli")
    assert len(commands) == 3 and all(c[:2] == ["hdn-deploy", "denoise"] for c in commands)
    for argv in commands:
        res = CliRunner().invoke(main, argv[1:] + ["--n-samples", "2", "--quiet"])
        assert res.exit_code == 0, f"{' '.join(argv)}\n{res.output}"
    assert len(zarr.open_group("denoised_big/scan_mmse.ome.zarr", mode="r")) == 3  # 0, 1, 2
    assert (tmp_path / "denoised_dask" / "img_000_std.tif").is_file()
    assert tifffile.imread("denoised_tiff/big_mmse.tif").shape == image.shape
    (code,) = readme_blocks("big")
    exec(compile(code, "README.md:big", "exec"), {})
