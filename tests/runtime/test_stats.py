"""RunningMoments matches numpy on all samples, fed in batches."""
from __future__ import annotations

import numpy as np
import pytest

from hdn_deploy.errors import InputError
from hdn_deploy.stats import RunningMoments


def _samples(n=23, shape=(4, 5), loc=1000.0, seed=0):
    return np.random.default_rng(seed).normal(loc, 2.0, size=(n, *shape)).astype(np.float32)


@pytest.mark.parametrize("splits", [[23], [1, 22], [5, 0, 7, 11], [1] * 23])
def test_matches_numpy_over_batches(splits):
    data = _samples()
    moments = RunningMoments(data.shape[1:])
    start = 0
    for n in splits:
        moments.update(data[start : start + n])
        start += n
    ref = data.astype(np.float64)
    assert moments.count == 23
    np.testing.assert_allclose(moments.mean(), ref.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(moments.std(), ref.std(axis=0), rtol=1e-9)
    np.testing.assert_allclose(moments.std(ddof=1), ref.std(axis=0, ddof=1), rtol=1e-9)
    np.testing.assert_allclose(moments.second_moment(), (ref**2).mean(axis=0), rtol=1e-12)
    assert moments.mean().dtype == np.float64


def test_large_mean_small_spread_stays_accurate():
    data = _samples(n=50, loc=1e6)  # float32 sum of squares would lose the spread
    moments = RunningMoments(data.shape[1:])
    for chunk in np.array_split(data, 7):
        moments.update(chunk)
    np.testing.assert_allclose(moments.std(), data.astype(np.float64).std(axis=0), rtol=1e-6)


def test_keep_first_samples_only():
    data = _samples(n=10)
    moments = RunningMoments(data.shape[1:], keep=4)
    assert moments.samples.shape == (0, 4, 5)
    moments.update(data[:3])
    moments.update(data[3:])
    assert moments.samples.dtype == np.float32
    np.testing.assert_array_equal(moments.samples, data[:4])


def test_errors():
    moments = RunningMoments((2, 2))
    with pytest.raises(InputError, match="no samples"):
        moments.mean()
    with pytest.raises(InputError, match=r"expected \(N, 2, 2\)"):
        moments.update(np.zeros((3, 2, 3)))
    moments.update(np.zeros((1, 2, 2)))
    with pytest.raises(InputError, match="ddof=1"):
        moments.std(ddof=1)
    with pytest.raises(InputError, match="keep"):
        RunningMoments((2,), keep=-1)
