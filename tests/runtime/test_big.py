"""Images bigger than memory (out of core), OME-Zarr in/out and dask: same bytes as the
in-memory path (issue 14)."""
from __future__ import annotations

import os

import numpy as np
import pytest

from hdn_deploy import ArrayOutputs, Denoiser
from hdn_deploy.errors import ConfigError, InputError
from hdn_deploy.tiling import StreamingMerger, Tiler, read_tile

zarr = pytest.importorskip("zarr", reason="needs the [big] extra (make install-dev)")
da = pytest.importorskip("dask.array", reason="needs the [big] extra (make install-dev)")

OPTS = dict(n_samples=2, seed=7)


@pytest.fixture(scope="module")
def den(tiny_package):
    return Denoiser(tiny_package, backend="cpu", threads=1)


@pytest.fixture(scope="module")
def image():
    """uint16, 150 x 230: several tile rows and columns of the tiny package's 64 px tiles."""
    return np.random.default_rng(3).normal(100, 30, (150, 230)).clip(0).astype(np.uint16)


@pytest.fixture(scope="module")
def reference(den, image):
    return den.denoise(image, **OPTS)


def _nan_outputs(shape):
    return ArrayOutputs(np.full(shape, np.nan, np.float32), np.full(shape, np.nan, np.float32))


def test_out_of_core_numpy_equals_in_memory_bytes(den, image, reference):
    out = _nan_outputs(image.shape)
    res = den.denoise(image, out=out, **OPTS)
    assert res.mmse is out.mmse and res.metadata["out_of_core"] is True
    assert out.mmse.tobytes() == reference.mmse.tobytes()
    assert out.std.tobytes() == reference.std.tobytes()


def test_out_of_core_zarr_source_and_target_equal_in_memory_bytes(den, image, reference, tmp_path):
    source = zarr.create_array(tmp_path / "in.zarr", shape=image.shape, chunks=(32, 48),
                               dtype=image.dtype)
    source[:] = image
    targets = {k: zarr.create_array(tmp_path / f"{k}.zarr", shape=image.shape, chunks=(64, 64),
                                    dtype="float32", fill_value=np.nan) for k in ("mmse", "std")}
    den.denoise(source, out=ArrayOutputs(targets["mmse"], targets["std"]), **OPTS)
    assert targets["mmse"][:].tobytes() == reference.mmse.tobytes()
    assert targets["std"][:].tobytes() == reference.std.tobytes()


def test_out_of_core_stack_equals_in_memory(den):
    stack = np.random.default_rng(4).normal(100, 30, (2, 3, 70, 90)).astype(np.float32)
    ref = den.denoise(stack.reshape(-1, 70, 90), **OPTS)
    from hdn_deploy.outofcore import flat

    mmse, std = np.zeros_like(stack), np.zeros_like(stack)
    den.denoise(flat(stack), out=ArrayOutputs(flat(mmse), flat(std)), **OPTS)
    assert mmse.reshape(-1, 70, 90).tobytes() == ref.mmse.tobytes()
    assert std.reshape(-1, 70, 90).tobytes() == ref.std.tobytes()


def test_out_of_core_refuses_what_it_cannot_do(den, image):
    with pytest.raises(ConfigError, match="keep_samples and checkpoints"):
        den.denoise(image, out=_nan_outputs(image.shape), keep_samples=1, **OPTS)
    with pytest.raises(InputError, match="out.mmse has shape"):
        den.denoise(image, out=ArrayOutputs(np.zeros((5, 5), np.float32)), **OPTS)
    bad = image.astype(np.float32)
    bad[100, 7] = np.nan
    with pytest.raises(InputError, match="NaN"):
        den.denoise(bad, out=_nan_outputs(image.shape), **OPTS)


def test_streaming_merger_takes_tiles_in_plan_order_and_reads_tiles_lazily():
    tiler = Tiler(64, 16, multiple=8, margin=8)
    image = np.random.default_rng(0).normal(size=(100, 150)).astype(np.float32)
    plan = tiler.plan(image.shape)
    rows = {}
    merger = StreamingMerger(plan, lambda r, block: rows.update({r.start: block.copy()}))
    lazy = list(tiler.iter_tiles_lazy(image, plan))
    for (tile, patch), (tile2, patch2) in zip(tiler.iter_tiles(image, plan), lazy):
        assert tile == tile2 and patch.tobytes() == patch2.tobytes()
    with pytest.raises(InputError, match="out of plan order"):
        merger.add(plan.tiles[1], lazy[1][1][None])
    full = tiler.merger(plan)
    for tile, patch in lazy:
        merger.add(tile, patch[None])
        full.add(tile, patch[None])
    merger.finalize()
    streamed = np.concatenate([rows[k] for k in sorted(rows)], axis=-2)
    assert streamed.tobytes() == full.finalize().tobytes()
    assert max(b.shape[-2] for b in rows.values()) <= 64  # one row of tiles at a time
    with pytest.raises(ConfigError, match="outside the"):
        read_tile(image[:20], (0, 0), plan, plan.tiles[-1])


def test_ome_zarr_round_trip_keeps_metadata_and_bytes(den, tmp_path):
    writer = pytest.importorskip("ome_zarr.writer")
    from hdn_deploy.io.omezarr import denoise_ome_zarr, is_ome_zarr, read_ome_zarr, read_zarr_metadata

    data = np.random.default_rng(5).normal(100, 30, (2, 90, 140)).clip(0).astype(np.uint16)
    group = zarr.open_group(tmp_path / "in.ome.zarr", mode="w")
    writer.write_image(data, group, axes="cyx", scale_factors=(), scale={"y": 0.5, "x": 0.25},
                       axes_units={"y": "micrometer", "x": "micrometer"},
                       storage_options={"chunks": (1, 32, 32)}, name="cells")
    group.attrs["ome"] = {**group.attrs["ome"],
                          "omero": {"channels": [{"label": "GFP"}, {"label": "RFP"}]}}
    outputs = {"mmse": tmp_path / "out_mmse.ome.zarr", "std": tmp_path / "out_std.ome.zarr"}
    denoise_ome_zarr(den, tmp_path / "in.ome.zarr", outputs, pyramid=2, **OPTS)
    ref = den.denoise(data, **OPTS)
    for kind, expected in (("mmse", ref.mmse), ("std", ref.std)):
        assert is_ome_zarr(outputs[kind])
        back = read_ome_zarr(outputs[kind])
        assert back.axes == "CYX" and back.scale == (1.0, 0.5, 0.25)
        assert back.units == {"Y": "micrometer", "X": "micrometer"}
        assert back.physical.channel_names == ("GFP", "RFP") and back.physical.name == "cells"
        assert np.asarray(back.array).tobytes() == expected.tobytes()
        meta = read_zarr_metadata(outputs[kind])
        assert meta["kind"] == kind and meta["seed"] == 7 and meta["out_of_core"] is True
    levels = zarr.open_group(outputs["mmse"], mode="r")
    assert levels["1"].shape == (2, 45, 70) and levels["2"].shape == (2, 22, 35)
    assert np.allclose(levels["1"][0, 0, 0], ref.mmse[0, :2, :2].mean(), rtol=1e-5)
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no staging left


def test_dask_chunks_too_small_and_unknown_options_are_clear_errors(tiny_package, image):
    from hdn_deploy import dask as hdn_dask

    with pytest.raises(ConfigError, match="chunks along Y must be at least the tile size"):
        hdn_dask.denoise(da.from_array(image, chunks=(64, 115)), tiny_package, **OPTS)
    with pytest.raises(ConfigError, match="keep_samples"):
        hdn_dask.denoise(da.from_array(image, chunks=(75, 115)), tiny_package, keep_samples=1)
    with pytest.raises(ConfigError, match="tile_size=12 must be a multiple of 8"):
        hdn_dask.denoise(da.from_array(image, chunks=(75, 115)), tiny_package, tile=12)
    with pytest.raises(InputError, match="dask array"):
        hdn_dask.denoise(image, tiny_package)


def test_dask_threads_equal_single_process_bytes(tiny_package, reference, image):
    import dask
    from hdn_deploy import dask as hdn_dask

    res = hdn_dask.denoise(da.from_array(image, chunks=(75, 115)), tiny_package, **OPTS)
    mmse, std = dask.compute(res.mmse, res.std, scheduler="threads", num_workers=2)
    assert mmse.tobytes() == reference.mmse.tobytes() and std.tobytes() == reference.std.tobytes()
    assert res.metadata["tiles_run"] > res.metadata["tiles_in_plan"]  # border tiles run twice


@pytest.mark.slow
def test_dask_local_cluster_of_two_workers_equals_single_process_bytes(tiny_package, den):
    distributed = pytest.importorskip("distributed")
    from hdn_deploy import dask as hdn_dask

    stack = np.random.default_rng(6).normal(100, 30, (2, 150, 160)).astype(np.float32)
    ref = den.denoise(stack, **OPTS)
    os.environ["OMP_NUM_THREADS"] = "1"  # inherited by the worker processes
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        res = hdn_dask.denoise(da.from_array(stack, chunks=(1, 75, 80)), tiny_package, **OPTS)
        mmse, std = client.compute([res.mmse, res.std], sync=True)
        loads = client.run(lambda: hdn_dask._cached.cache_info().misses)
    assert mmse.tobytes() == ref.mmse.tobytes() and std.tobytes() == ref.std.tobytes()
    assert sorted(loads.values()) == [1, 1]  # both workers ran chunks, each loaded the model once
