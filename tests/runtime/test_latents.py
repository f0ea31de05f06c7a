"""LatentSampler: eps is a pure function of (seed, sample, level, global position)."""
from __future__ import annotations

import numpy as np
import pytest

from hdn_deploy.errors import ConfigError
from hdn_deploy.latents import LatentSampler, SamplingMode
from hdn_deploy.philox import box_muller, philox4x32

LEVELS = [(0, 3), (1, 2), (2, 4)]  # (level index, channels); tiles are multiples of 8 px


def _eps(sampler, samples=(0, 1), y0=0, x0=0, h=64, w=64, levels=LEVELS):
    return sampler.tile_eps(list(samples), levels, y0, x0, h, w)


def test_shapes_dtype_contiguity():
    eps = _eps(LatentSampler(1), samples=[0, 1, 2], h=64, w=32)
    assert [e.shape for e in eps] == [(3, 3, 32, 16), (3, 2, 16, 8), (3, 4, 8, 4)]
    assert all(e.dtype == np.float32 and e.flags.c_contiguous for e in eps)


def test_same_arguments_same_numbers():
    a, b = _eps(LatentSampler(7)), _eps(LatentSampler(7))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_batching_does_not_change_results():
    sampler = LatentSampler(3)
    whole = _eps(sampler, samples=range(8))
    parts = [_eps(sampler, samples=range(4)), _eps(sampler, samples=range(4, 8))]
    single = [_eps(sampler, samples=[5])]
    for lvl, full in enumerate(whole):
        np.testing.assert_array_equal(full, np.concatenate([p[lvl] for p in parts]))
        np.testing.assert_array_equal(full[5:6], single[0][lvl])


def test_threads_do_not_change_results():
    one, many = LatentSampler(3), LatentSampler(3, workers=3)
    for x, y in zip(_eps(one, samples=range(6)), _eps(many, samples=range(6))):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("seed", [11, 2**63 + 5])
def test_overlapping_tiles_agree_at_every_level(seed):
    sampler = LatentSampler(seed, mode="antithetic")
    # Tile A covers pixels [0, 96) x [32, 160); tile B [48, 112) x [8, 104).
    a = _eps(sampler, samples=[2, 3], y0=0, x0=32, h=96, w=128)
    b = _eps(sampler, samples=[2, 3], y0=48, x0=8, h=64, w=96)
    big = _eps(sampler, samples=[2, 3], y0=0, x0=0, h=128, w=192)
    for (level, _), ea, eb, ebig in zip(LEVELS, a, b, big):
        f = 2 ** (level + 1)
        ys, xs = slice(48 // f, 96 // f), slice(32 // f, 104 // f)  # shared pixels [48,96)x[32,104)
        shared_a = ea[:, :, ys.start : ys.stop, xs.start - 32 // f : xs.stop - 32 // f]
        shared_b = eb[:, :, ys.start - 48 // f : ys.stop - 48 // f, xs.start - 8 // f : xs.stop - 8 // f]
        np.testing.assert_array_equal(shared_a, shared_b)
        np.testing.assert_array_equal(ea, ebig[:, :, : 96 // f, 32 // f : 160 // f])


def test_seeds_samples_levels_channels_differ():
    base = _eps(LatentSampler(5), samples=[0, 1])
    other_seed = _eps(LatentSampler(6), samples=[0, 1])
    assert not np.array_equal(base[0], other_seed[0])
    assert not np.array_equal(base[0][0], base[0][1])  # samples
    assert not np.array_equal(base[0][0, 0, :4, :4], base[1][0, 0, :4, :4])  # levels
    assert not np.array_equal(base[0][0, 0], base[0][0, 1])  # channels
    assert not np.array_equal(base[0][0, 0, :16, :16], base[0][0, 0, 16:32, :16])  # blocks


def test_huge_seed_and_sample_index_are_exact():
    sampler = LatentSampler(2**64 - 1)
    top = _eps(sampler, samples=[2**32 - 1, 2**32 - 2], levels=[(0, 1)])[0]
    assert not np.array_equal(top[0], top[1])  # would collide if indices went through float64
    with pytest.raises(ConfigError, match="sample index"):
        _eps(sampler, samples=[2**32], levels=[(0, 1)])  # the counter holds 32 bits
    # Coordinates beyond 2**21 still address distinct counters.
    far = sampler.tile_eps([0], [(0, 1)], 2**31, 0, 2, 2)[0]
    far2 = sampler.tile_eps([0], [(0, 1)], 2**31, 64, 2, 2)[0]
    assert not np.array_equal(far, far2)


def test_antithetic_pairs_are_negated_and_mc_matches_even_samples():
    anti = _eps(LatentSampler(9, mode=SamplingMode.ANTITHETIC), samples=[0, 1, 2, 3, 5])
    mc = _eps(LatentSampler(9, mode="mc"), samples=[0, 2, 4])
    for lvl_anti, lvl_mc in zip(anti, mc):
        np.testing.assert_array_equal(lvl_anti[1], -lvl_anti[0])
        np.testing.assert_array_equal(lvl_anti[3], -lvl_anti[2])
        np.testing.assert_array_equal(lvl_anti[[0, 2]], lvl_mc[[0, 1]])
        np.testing.assert_array_equal(lvl_anti[4], -lvl_mc[2])  # 5 alone is -eps(4)


def test_repeated_sample_index_repeats_rows():
    eps = _eps(LatentSampler(4), samples=[3, 3])
    np.testing.assert_array_equal(eps[0][0], eps[0][1])


def test_mean_mode_is_zero():
    eps = _eps(LatentSampler(1, mode="mean"), samples=range(3))
    assert all(e.dtype == np.float32 and not e.any() for e in eps)


def test_standard_normal_statistics():
    eps = LatentSampler(123).tile_eps(range(4), [(0, 8)], 0, 0, 128, 128)[0]  # 131k values
    assert abs(float(eps.mean())) < 0.01
    assert abs(float(eps.std()) - 1.0) < 0.01
    # Neighbouring blocks are not correlated.
    a, b = eps[:, :, :32, :32].ravel(), eps[:, :, :32, 32:].ravel()
    assert abs(float(np.corrcoef(a, b)[0, 1])) < 0.03


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"seed": -1}, "seed"),
        ({"seed": 2**64}, "seed"),
        ({"seed": 1.5}, "integer"),
        ({"seed": True}, "integer"),
        ({"seed": 0, "mode": "gibbs"}, "'mc', 'antithetic', 'mean'"),
        ({"seed": 0, "workers": 0}, "workers"),
    ],
)
def test_bad_configuration(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        LatentSampler(**kwargs)


@pytest.mark.parametrize(
    "args, match",
    [
        (([0], [(2, 1)], 4, 0, 8, 8), "multiple of 8"),
        (([0], [(0, 1)], 0, 0, 0, 2), "height"),
        (([-1], [(0, 1)], 0, 0, 2, 2), "sample index"),
        (([0], [(0, 0)], 0, 0, 2, 2), "channels"),
        (([0], [], 0, 0, 2, 2), "levels is empty"),
        (([0], [3], 0, 0, 2, 2), "pair"),
    ],
)
def test_bad_tile_arguments(args, match):
    with pytest.raises(ConfigError, match=match):
        LatentSampler(0).tile_eps(*args)


def _contract_value(seed, stream, level, channel, y, x):
    """The contract of hdn_deploy.latents written out for one element."""
    words = philox4x32((x >> 2, y, (level << 24) | channel, stream), (seed & 0xFFFFFFFF, seed >> 32))
    return box_muller(words)[x & 3]


@pytest.mark.parametrize("mode", ["mc", "antithetic"])
def test_every_value_is_the_contract_formula(mode):
    seed = 2**64 - 12345
    sampler = LatentSampler(seed, mode=mode)
    eps = sampler.tile_eps([4, 5], LEVELS, 8, 24, 16, 40)  # odd latent column origins
    rng = np.random.default_rng(1)
    for _ in range(40):
        row, lvl = int(rng.integers(2)), int(rng.integers(len(LEVELS)))
        level, channels = LEVELS[lvl]
        arr = eps[lvl][row]
        c, y, x = (int(rng.integers(n)) for n in arr.shape)
        stream = 4 if mode == "antithetic" else 4 + row
        sign = -1.0 if (mode == "antithetic" and row == 1) else 1.0
        shift = level + 1
        want = sign * _contract_value(seed, stream, level, c, (8 >> shift) + y, (24 >> shift) + x)
        assert arr[c, y, x] == np.float32(want)
