"""Adaptive sampling: the standard error from running moments (pair means for antithetic
samples), tolerance parsing, per-tile stopping reproducible by seed, its metadata, and the
progress callback's current MMSE."""
from __future__ import annotations

import numpy as np
import pytest
import tifffile

from hdn_deploy.adaptive import MIN_SAMPLES, Tolerance, should_stop
from hdn_deploy.denoiser import Denoiser
from hdn_deploy.errors import ConfigError, InputError
from hdn_deploy.stats import RunningMoments


@pytest.fixture(scope="module")
def den(tiny_package):
    return Denoiser(tiny_package, backend="cpu", threads=1)


@pytest.fixture(scope="module")
def noisy_image(data_dir):
    return tifffile.imread(data_dir / "noisy.tif")  # (160, 160) float32


def test_standard_error_of_independent_samples():
    samples = np.random.default_rng(0).normal(3.0, 2.0, (10, 4, 5))
    moments = RunningMoments((4, 5))
    moments.update(samples[:3])
    moments.update(samples[3:])
    expected = np.sqrt(np.mean(samples.var(axis=0, ddof=1)) / 10)
    assert moments.standard_error() == pytest.approx(expected, rel=1e-12)


def test_standard_error_of_pairs_uses_pair_means():
    rng = np.random.default_rng(1)
    eps = rng.normal(size=(4, 3, 3))
    samples = np.empty((8, 3, 3))
    samples[0::2], samples[1::2] = 5 + eps, 5 - 0.9 * eps  # strongly anticorrelated pairs
    moments = RunningMoments((3, 3), pairs=True)
    for one in samples[:5]:  # odd counts leave the last pair open
        moments.update(one[None])
    pair_means = (samples[0::2] + samples[1::2]) / 2
    assert moments.standard_error() == pytest.approx(
        np.sqrt(np.mean(pair_means[:2].var(axis=0, ddof=1)) / 2), rel=1e-12)
    moments.update(samples[5:])
    paired = moments.standard_error()
    assert paired == pytest.approx(np.sqrt(np.mean(pair_means.var(axis=0, ddof=1)) / 4), rel=1e-12)
    naive = RunningMoments((3, 3))
    naive.update(samples)
    assert paired < naive.standard_error() / 5  # i.i.d. formula would be far too pessimistic
    # the mean and variance of all samples are not changed by tracking pairs
    assert np.array_equal(moments.mean(), naive.mean())


def test_standard_error_needs_two():
    moments = RunningMoments((2, 2), pairs=True)
    moments.update(np.ones((3, 2, 2)))
    with pytest.raises(InputError, match="at least 2 pairs, got 1"):
        moments.standard_error()


@pytest.mark.parametrize("value, expected", [
    (2.5, Tolerance(2.5)), ("2.5", Tolerance(2.5)), ("0.05sigma", Tolerance(0.05, True)),
    (" 0.1 σ", Tolerance(0.1, True)), (None, None)])
def test_tolerance_parse(value, expected):
    parsed = Tolerance.parse(value)
    assert parsed == expected
    if parsed is not None:
        assert Tolerance.parse(parsed.describe()) == parsed


@pytest.mark.parametrize("value", [0, -1, "abc", "sigma", float("nan"), "inf", [1]])
def test_tolerance_refused(value):
    with pytest.raises(ConfigError, match="tolerance .* is not valid"):
        Tolerance.parse(value)


def test_should_stop_waits_for_minimum_and_complete_pairs():
    moments = RunningMoments((2, 2), pairs=True)
    huge = Tolerance(1e9)
    moments.update(np.zeros((3, 2, 2)))
    assert not should_stop(moments, np.zeros((2, 2)), huge, scale=1.0, paired=True, minimum=0)
    moments.update(np.ones((2, 2, 2)))  # 5: above the minimum but a pair is open
    assert not should_stop(moments, np.zeros((2, 2)), huge, scale=1.0, paired=True, minimum=0)
    moments.update(np.ones((1, 2, 2)))
    assert should_stop(moments, np.zeros((2, 2)), huge, scale=1.0, paired=True, minimum=0)
    assert not should_stop(moments, np.zeros((2, 2)), huge, scale=1.0, paired=True, minimum=8)
    assert not should_stop(moments, np.zeros((2, 2)), None, scale=1.0, paired=True, minimum=0)
    assert not should_stop(moments, np.zeros((2, 2)), Tolerance(1e-9), scale=1.0, paired=True,
                           minimum=0)


@pytest.mark.parametrize("sampling", ["antithetic", "mc"])
def test_adaptive_stops_at_the_first_count_within_tolerance(den, noisy_image, sampling):
    image = noisy_image[:64, :64]
    opts = dict(seed=3, sampling=sampling, tile=64, margin=0)  # one tile: the image itself
    step = 2 if sampling == "antithetic" else 1
    se = {}
    for n in range(MIN_SAMPLES, 17, step):
        samples = den.denoise(image, n_samples=n, keep_samples=n, **opts).samples
        pairs = sampling == "antithetic"
        moments = RunningMoments(image.shape, pairs=pairs)
        moments.update(samples)
        se[n] = moments.standard_error()  # raw intensity units: the samples are
    assert se[16] < se[MIN_SAMPLES]
    tolerance = float(np.sqrt(se[8] * se[8 + step]))
    expected = next(n for n in se if se[n] <= tolerance)
    res = den.denoise(image, n_samples=16, tolerance=tolerance, **opts)
    assert res.metadata["samples_per_tile"] == [[expected]]
    assert res.metadata["n_samples"] == 16 and res.metadata["samples_used_mean"] == expected
    exact = den.denoise(image, n_samples=expected, **opts)
    assert np.array_equal(res.mmse, exact.mmse) and np.array_equal(res.std, exact.std)


def test_adaptive_bounds_and_reproducibility(den, noisy_image):
    image = noisy_image[:96, :128]
    loose = den.denoise(image, n_samples=12, seed=1, tile=64, overlap=16, tolerance=1e6)
    tight = den.denoise(image, n_samples=12, seed=1, tile=64, overlap=16, tolerance=1e-6)
    fixed = den.denoise(image, n_samples=12, seed=1, tile=64, overlap=16)
    n_tiles = len(loose.metadata["samples_per_tile"][0])
    assert n_tiles > 1
    assert loose.metadata["samples_per_tile"] == [[MIN_SAMPLES] * n_tiles]
    assert tight.metadata["samples_per_tile"] == [[12] * n_tiles]
    assert np.array_equal(tight.mmse, fixed.mmse)
    assert fixed.metadata["tolerance"] is None and fixed.metadata["samples_per_tile"] == [[12] * n_tiles]
    a = den.denoise(image, n_samples=40, seed=5, tile=64, overlap=16, tolerance="0.3sigma")
    b = den.denoise(image, n_samples=40, seed=5, tile=64, overlap=16, tolerance="0.3sigma")
    assert a.metadata["samples_per_tile"] == b.metadata["samples_per_tile"]
    assert np.array_equal(a.mmse, b.mmse)
    counts = a.metadata["samples_per_tile"][0]
    assert all(MIN_SAMPLES <= c <= 40 and c % 2 == 0 for c in counts)


def test_adaptive_keeps_the_samples_asked_for(den, noisy_image):
    res = den.denoise(noisy_image[:64, :64], n_samples=12, keep_samples=6, tolerance=1e6)
    assert res.samples.shape == (6, 64, 64) and res.metadata["samples_per_tile"] == [[6] * 4]


def test_tolerance_and_checkpoints_refused(den, noisy_image):
    with pytest.raises(ConfigError, match="checkpoints and tolerance"):
        den.denoise(noisy_image[:64, :64], n_samples=8, checkpoints=(4,), tolerance=1.0)


def test_progress_callback_sees_the_current_mmse(den, noisy_image):
    image = noisy_image[:64, :128]
    seen = []
    res = den.denoise(image, n_samples=4, seed=0, tile=64, overlap=16, tolerance=1.0,
                      on_progress=lambda e: seen.append((e.tiles_done, e.samples_used,
                                                         e.current_mmse())))
    assert [s[0] for s in seen] == list(range(1, len(seen) + 1)) and len(seen) > 2
    first = seen[0][2]
    assert first.shape == image.shape and first.dtype == np.float32
    assert np.isnan(first).any() and np.isfinite(first).any()
    assert all(MIN_SAMPLES <= s[1] <= 4 for s in seen)
    assert np.array_equal(seen[-1][2], res.mmse)
