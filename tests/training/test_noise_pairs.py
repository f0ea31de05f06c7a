"""Signal/observation pair sources: calibration stacks and bootstrapping."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")  # hdn_deploy.training needs torch to import

from hdn_deploy.errors import InputError  # noqa: E402
from hdn_deploy.training.noise_pairs import bootstrap_pairs, calibration_pairs  # noqa: E402


def test_calibration_pairs_use_the_frame_mean_as_signal():
    stack = np.arange(3 * 2 * 4, dtype=np.uint16).reshape(3, 2, 4)
    original = stack.copy()
    signal, observation = calibration_pairs(stack, unbiased=False)
    assert signal.dtype == observation.dtype == np.float32
    assert signal.shape == observation.shape == (stack.size,)
    np.testing.assert_array_equal(observation, stack.reshape(-1))
    mean = stack.mean(axis=0)
    for frame in range(3):
        np.testing.assert_allclose(signal[frame * 8 : (frame + 1) * 8], mean.reshape(-1))
    np.testing.assert_array_equal(stack, original)  # input untouched


def test_calibration_pairs_unbiased_residual_variance():
    rng = np.random.default_rng(0)
    frames, sigma = 5, 10.0
    stack = 100.0 + rng.normal(0.0, sigma, (frames, 64, 64))
    for unbiased, factor in ((False, 1.0 - 1.0 / frames), (True, 1.0)):
        signal, observation = calibration_pairs(stack, unbiased=unbiased)
        np.testing.assert_allclose(signal, np.tile(stack.mean(0).reshape(-1), frames), rtol=1e-6)
        var = np.mean((observation.astype(np.float64) - signal) ** 2)
        assert var == pytest.approx(factor * sigma**2, rel=0.03)
    # the scaling keeps each pixel's frame mean
    np.testing.assert_allclose(observation.reshape(stack.shape).mean(0), stack.mean(0), rtol=1e-5)


@pytest.mark.parametrize(
    "stack, message",
    [
        (np.zeros((8, 8)), "3 axes"),
        (np.zeros((1, 8, 8)), "at least 2 frames"),
        (np.zeros((2, 2, 8, 8)), "3 axes"),
        (np.array([[[0.0, np.nan]], [[1.0, 2.0]]]), "NaN"),
        (np.array([[[0.0, np.inf]], [[1.0, 2.0]]]), "NaN/Inf"),
        (np.zeros((2, 0, 4)), "empty"),
    ],
)
def test_calibration_pairs_reject_bad_stacks(stack, message):
    with pytest.raises(InputError, match=message) as info:
        calibration_pairs(stack, source="cal.tif")
    assert "cal.tif" in str(info.value)


def test_bootstrap_pairs_clip_the_signal_to_its_percentiles():
    rng = np.random.default_rng(0)
    signal = rng.uniform(0.0, 100.0, (50, 40)).astype(np.float32)
    signal[0, 0], signal[0, 1] = -1e4, 1e4  # outliers of the first denoiser
    noisy = signal + rng.normal(0.0, 5.0, signal.shape).astype(np.float32)
    before = signal.copy(), noisy.copy()
    s, x = bootstrap_pairs(noisy, signal)
    lo, hi = np.percentile(signal, [0.5, 99.5])
    assert s.dtype == x.dtype == np.float32 and s.shape == x.shape == (2000,)
    assert s.min() == pytest.approx(lo) and s.max() == pytest.approx(hi)
    inside = (signal.reshape(-1) >= lo) & (signal.reshape(-1) <= hi)
    np.testing.assert_array_equal(s[inside], signal.reshape(-1)[inside])
    np.testing.assert_array_equal(x, noisy.reshape(-1))  # observations are not clipped
    np.testing.assert_array_equal(signal, before[0])
    np.testing.assert_array_equal(noisy, before[1])


def test_bootstrap_pairs_accept_stacks_and_custom_percentiles():
    noisy = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    s, x = bootstrap_pairs(noisy, noisy.copy(), percentiles=(0, 100))
    np.testing.assert_array_equal(s, noisy.reshape(-1))


@pytest.mark.parametrize(
    "noisy, signal, message",
    [
        (np.zeros((4, 4)), np.zeros((4, 5)), "shape"),
        (np.zeros((4,)), np.zeros((4,)), "expected an image"),
        (np.full((4, 4), np.nan), np.zeros((4, 4)), "NaN"),
        (np.zeros((4, 4)), np.full((4, 4), np.inf), "NaN"),
    ],
)
def test_bootstrap_pairs_reject_bad_inputs(noisy, signal, message):
    with pytest.raises(InputError, match=message) as info:
        bootstrap_pairs(noisy, signal, source="noisy.tif", signal_source="den.tif")
    assert "noisy.tif" in str(info.value) or "den.tif" in str(info.value)


def test_bootstrap_pairs_reject_bad_percentiles():
    with pytest.raises(InputError, match="percentiles"):
        bootstrap_pairs(np.zeros((4, 4)), np.zeros((4, 4)), percentiles=(50, 10))
