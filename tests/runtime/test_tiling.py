"""Tiler plans aligned tiles; TileMerger blends them back exactly."""
from __future__ import annotations

import numpy as np
import pytest

from hdn_deploy.errors import ConfigError, InputError
from hdn_deploy.tiling import Tile, TileMerger, Tiler

SHAPES = [(5, 3), (64, 64), (65, 130), (97, 201), (1000, 700)]


def _add(merger, tile, mean, second):
    merger.add(tile, np.stack([mean, second]))


def _finalize(merger, **kwargs):
    """Blended (mean, std) as float32 from blended first and second moments."""
    mean, second = merger.finalize(**kwargs)
    var = np.maximum(second - mean * mean, 0.0)
    return mean.astype(np.float32), np.sqrt(var).astype(np.float32)


def _roundtrip(tiler: Tiler, image: np.ndarray, blend: str):
    plan = tiler.plan(image.shape)
    merger = TileMerger(plan, blend=blend)
    for tile, patch in tiler.iter_tiles(image, plan):
        _add(merger, tile, patch, patch.astype(np.float64) ** 2)
    return _finalize(merger)


@pytest.mark.parametrize("blend", ["constant", "hann"])
@pytest.mark.parametrize("shape", SHAPES)
def test_identity_tiles_reconstruct_image(shape, blend):
    image = np.random.default_rng(0).normal(100.0, 20.0, size=shape).astype(np.float32)
    tiler = Tiler(128, 64, multiple=32) if shape != (1000, 700) else Tiler(256, 64)
    mean, std = _roundtrip(tiler, image, blend)
    assert mean.shape == shape and mean.dtype == np.float32 and std.dtype == np.float32
    np.testing.assert_allclose(mean, image, rtol=1e-6)
    assert float(std.max()) < 1e-3 * float(image.std())


def test_std_blends_constant_moments():
    # Every tile reports the same per-pixel distribution: the blend must return it.
    tiler = Tiler(128, 64, multiple=64)
    plan = tiler.plan((300, 200))
    merger = tiler.merger(plan)
    for tile in plan.tiles:
        mean = np.full((tile.height, tile.width), 5.0)
        _add(merger, tile, mean, mean**2 + 4.0)
    mean, std = _finalize(merger)
    np.testing.assert_allclose(mean, 5.0, rtol=1e-6)
    np.testing.assert_allclose(std, 2.0, rtol=1e-5)


@pytest.mark.parametrize("shape", SHAPES + [(1, 1), (640, 64)])
@pytest.mark.parametrize("tile_size, overlap", [(256, 64), (128, 0), (192, 128)])
def test_plan_properties(shape, tile_size, overlap):
    tiler = Tiler(tile_size, overlap, multiple=64)
    plan = tiler.plan(shape)
    ph, pw = plan.padded_shape
    assert plan.image_shape == shape
    assert ph % 64 == 0 and pw % 64 == 0 and 0 <= ph - shape[0] < 64 and 0 <= pw - shape[1] < 64
    assert len(set(plan.tiles)) == len(plan.tiles)
    coverage = np.zeros((ph, pw), dtype=int)
    for t in plan.tiles:
        assert t.y0 % 64 == 0 and t.x0 % 64 == 0
        assert t.height <= min(tile_size, ph) and t.width <= min(tile_size, pw)
        assert t.y0 + t.height <= ph and t.x0 + t.width <= pw
        coverage[t.slices] += 1
    assert coverage.min() >= 1
    assert max(t.y0 + t.height for t in plan.tiles) == ph  # flush last row and column
    assert max(t.x0 + t.width for t in plan.tiles) == pw
    for axis, size in ((0, ph), (1, pw)):  # neighbours overlap by at least `overlap`
        starts = sorted({(t.y0, t.x0)[axis] for t in plan.tiles})
        length = (plan.tiles[0].height, plan.tiles[0].width)[axis]
        assert all(b - a <= length - overlap for a, b in zip(starts, starts[1:]))


def test_plan_origins_for_1000x700():
    plan = Tiler(256, 64).plan((1000, 700))
    assert plan.padded_shape == (1024, 704)
    assert sorted({t.y0 for t in plan.tiles}) == [0, 192, 384, 576, 768]
    assert sorted({t.x0 for t in plan.tiles}) == [0, 128, 320, 448]
    assert len(plan) == 20


def test_plan_uses_the_fewest_shortest_tiles():
    plan = Tiler(512, 64).plan((1024, 1024))
    assert {(t.height, t.width) for t in plan.tiles} == {(384, 384)}
    assert sorted({t.y0 for t in plan.tiles}) == [0, 320, 640]
    assert Tiler(1024, 64).plan((1024, 1000)).tiles == (Tile(0, 0, 1024, 1024),)


def test_small_image_is_one_shrunk_tile():
    plan = Tiler(256, 64).plan((5, 3))
    assert plan.padded_shape == (64, 64) and plan.tiles == (Tile(0, 0, 64, 64),)


def test_reflect_pad_larger_than_image():
    image = np.arange(15, dtype=np.float32).reshape(5, 3)
    tiler = Tiler(64, 0)
    padded = tiler.pad(image, tiler.plan(image.shape))
    assert padded.shape == (64, 64)
    np.testing.assert_array_equal(padded[:5, :3], image)
    np.testing.assert_array_equal(padded[5:9, :3], image[3::-1][:4])  # mirror without edge repeat
    np.testing.assert_array_equal(padded[:5, 3:5], image[:, 1::-1])
    assert set(np.unique(padded)) <= set(image.ravel())
    one = tiler.pad(np.ones((1, 1)), tiler.plan((1, 1)))
    np.testing.assert_array_equal(one, 1.0)


def test_constant_pad_uses_mean_and_leading_axes():
    image = np.arange(6, dtype=np.float32).reshape(2, 3)
    tiler = Tiler(64, 0, pad_mode="constant")
    padded = tiler.pad(image, tiler.plan(image.shape))
    assert padded[10, 10] == pytest.approx(2.5)
    stack = Tiler(64, 0).pad(np.stack([image, image + 1]), tiler.plan(image.shape))
    assert stack.shape == (2, 64, 64)


def test_iter_tiles_yields_contiguous_patches_and_can_stop_early():
    image = np.random.default_rng(1).random((300, 300), dtype=np.float32)
    tiler = Tiler(128, 64)
    plan = tiler.plan(image.shape)
    tiles = tiler.iter_tiles(image, plan)
    tile, patch = next(tiles)
    assert patch.flags.c_contiguous and patch.shape == (128, 128)
    np.testing.assert_array_equal(patch, image[:128, :128])
    merger = tiler.merger(plan)
    _add(merger, tile, patch, patch**2)
    assert merger.n_remaining == len(plan) - 1
    with pytest.raises(InputError, match="not added"):
        merger.finalize()
    mean, _ = _finalize(merger, allow_partial=True)
    assert np.isnan(mean[-1, -1]) and mean[0, 0] == image[0, 0]


def test_hann_window_no_fade_at_border_and_min_weight():
    tiler = Tiler(128, 64)
    plan = tiler.plan((256, 256))  # 3x3 tiles at 0, 64, 128
    merger = tiler.merger(plan)
    corner = merger.window(Tile(0, 0, 128, 128))
    assert corner[0, 0] == 1.0 and corner[0, :64].min() == 1.0  # image border: flat
    assert corner[-1, -1] < 0.01 and corner.min() >= 1e-3
    inner = merger.window(Tile(64, 64, 128, 128))
    assert inner.max() > 0.99 and inner[0, 0] == pytest.approx(1e-3)
    # Facing ramps of neighbours add up to one (a partition of unity).
    total = np.zeros((256, 256))
    for t in plan.tiles:
        total[t.slices] += merger.window(t)
    assert total.min() > 0.99 and total.max() < 1.01


def test_merger_rejects_foreign_duplicate_and_misshapen_tiles():
    tiler = Tiler(64, 0)
    plan = tiler.plan((128, 64))
    merger = tiler.merger(plan)
    with pytest.raises(InputError, match="not in the plan"):
        _add(merger, Tile(32, 0, 64, 64), np.zeros((64, 64)), np.zeros((64, 64)))
    with pytest.raises(InputError, match="shape"):
        merger.add(plan.tiles[0], np.zeros((2, 64, 63)))
    _add(merger, plan.tiles[0], np.zeros((64, 64)), np.zeros((64, 64)))
    with pytest.raises(InputError, match="already added"):
        _add(merger, plan.tiles[0], np.zeros((64, 64)), np.zeros((64, 64)))


def test_pad_rejects_other_image():
    tiler = Tiler(64, 0)
    with pytest.raises(InputError, match="does not match"):
        tiler.pad(np.zeros((10, 10)), tiler.plan((10, 11)))


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        ((100, 0), {}, "tile_size=100 must be a multiple of 64"),
        ((256, 32), {}, "overlap=32 must be a multiple of 64"),
        ((256, 256), {}, "overlap=256 must be smaller than tile_size=256"),
        ((256, -64), {}, "overlap=-64"),
        ((0, 0), {}, "tile_size=0"),
        ((256, 64), {"multiple": 0}, "multiple=0"),
        ((256, 64), {"blend": "gaussian"}, "'hann', 'constant'"),
        ((256, 64), {"pad_mode": "wrap"}, "'reflect', 'constant'"),
    ],
)
def test_bad_configuration(args, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        Tiler(*args, **kwargs)


def test_bad_plan_shape():
    with pytest.raises(InputError, match="height, width"):
        Tiler().plan((0, 10))


def test_hann_hides_seams_between_disagreeing_tiles():
    # Each tile is off by its own constant; hann ramps make the transition gradual.
    image = np.zeros((320, 320))
    offsets = np.random.default_rng(2).normal(0.0, 1.0, size=64)

    def max_jump(blend):
        tiler = Tiler(128, 64, blend=blend)
        plan = tiler.plan(image.shape)
        merger = tiler.merger(plan)
        for (tile, patch), offset in zip(tiler.iter_tiles(image, plan), offsets):
            _add(merger, tile, patch + offset, (patch + offset) ** 2)
        mean, _ = _finalize(merger)
        return max(np.abs(np.diff(mean, axis=0)).max(), np.abs(np.diff(mean, axis=1)).max())

    assert max_jump("hann") < 0.25 * max_jump("constant")


def test_merger_blends_any_stack_and_rejects_a_changing_stack():
    tiler = Tiler(64, 32, multiple=32)
    plan = tiler.plan((100, 90))
    merger = tiler.merger(plan)
    image = np.random.default_rng(3).random((100, 90))
    stack = np.stack([image, 2 * image, image**2])  # (3, H, W)
    padded = tiler.pad(stack, plan)
    for tile in plan.tiles:
        merger.add(tile, padded[(..., *tile.slices)])
    merged = merger.finalize()
    assert merged.shape == (3, 100, 90) and merged.dtype == np.float64
    np.testing.assert_allclose(merged, stack, rtol=1e-12)
    other = tiler.merger(plan)
    other.add(plan.tiles[0], np.zeros((3, 64, 64)))
    with pytest.raises(InputError, match=r"expected \(3, 64, 64\)"):
        other.add(plan.tiles[1], np.zeros((2, 64, 64)))


@pytest.mark.parametrize("pad_mode", ["reflect", "constant"])
def test_margin_pads_every_side_and_crops_back(pad_mode):
    image = np.arange(35, dtype=np.float32).reshape(5, 7)
    tiler = Tiler(64, 0, multiple=8, margin=3, pad_mode=pad_mode)
    plan = tiler.plan(image.shape)
    assert plan.padded_shape == (16, 16) and plan.margin == 3  # 5 + 6 -> 16, 7 + 6 -> 16
    padded = tiler.pad(image, plan)
    np.testing.assert_array_equal(padded[plan.crop], image)
    if pad_mode == "reflect":  # mirrored without repeating the edge, on all four sides
        np.testing.assert_array_equal(padded[3, :3], image[0, 3:0:-1])
        np.testing.assert_array_equal(padded[:3, 3], image[3:0:-1, 0])
        assert padded[0, 0] == image[3, 3]
    else:
        assert padded[0, 0] == pytest.approx(image.mean())
    merger = tiler.merger(plan)
    for tile, patch in tiler.iter_tiles(image, plan):
        merger.add(tile, patch[None])
    np.testing.assert_allclose(merger.finalize()[0], image)
    with pytest.raises(ConfigError, match="margin"):
        Tiler(64, 0, margin=-1)
