"""Denoiser: shapes, reproducibility, batch/tile invariance, seams, stacks, sampling modes,
bad input, progress events and thread safety, on the tiny exported model."""
from __future__ import annotations

import json
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tifffile

from hdn_deploy.denoiser import (DRIFT_LIMIT, DenoiseResult, Denoiser, DriftWarning, Progress,
                                  SeamWarning, _slice_seed, tile_drift)
from hdn_deploy.demo import DEFAULT_MODEL, SAMPLE_NOISY, bundled_path
from hdn_deploy.errors import ConfigError, InputError
from hdn_deploy.tiling import Tiler


@pytest.fixture(scope="module")
def den(tiny_package):
    return Denoiser(tiny_package, backend="cpu", threads=1)


@pytest.fixture(scope="module")
def noisy_image(data_dir):
    return tifffile.imread(data_dir / "noisy.tif")  # (160, 160) float32


@pytest.fixture(scope="module")
def small(noisy_image):
    return noisy_image[:48, :64]


def _identical(a: DenoiseResult, b: DenoiseResult) -> bool:
    return a.mmse.tobytes() == b.mmse.tobytes() and a.std.tobytes() == b.std.tobytes()


def test_denoise_2d(den, small):
    res = den.denoise(small, n_samples=4, seed=0)
    assert isinstance(res, DenoiseResult) and res.samples is None
    for arr in (res.mmse, res.std):
        assert arr.shape == small.shape and arr.dtype == np.float32
        assert np.isfinite(arr).all()
    assert res.std.min() >= 0 and res.std.max() > 0
    # in the input's units (not normalised ones; the tiny model is only roughly trained)
    assert abs(res.mmse.mean() - small.mean()) < small.std()


def test_seed_reproducible_and_different_seeds_differ(den, small):
    a = den.denoise(small, n_samples=3, seed=11)
    b = den.denoise(small, n_samples=3, seed=11)
    c = den.denoise(small, n_samples=3, seed=12)
    assert _identical(a, b)
    assert not np.array_equal(a.mmse, c.mmse) and not np.array_equal(a.std, c.std)


def test_batch_size_does_not_change_results(den, noisy_image):
    image = noisy_image[:64, :96]  # several tiles of 64 with overlap 16
    runs = [den.denoise(image, n_samples=7, seed=5, batch_size=b, keep_samples=2)
            for b in (1, 3, 7)]
    for other in runs[1:]:
        assert np.array_equal(runs[0].mmse, other.mmse)
        assert np.array_equal(runs[0].std, other.std)
        assert np.array_equal(runs[0].samples, other.samples)


def test_keep_samples_does_not_change_estimates(den, small):
    plain = den.denoise(small, n_samples=4, seed=2)
    kept = den.denoise(small, n_samples=4, seed=2, keep_samples=3)
    assert _identical(plain, kept)
    assert kept.samples.shape == (3, *small.shape) and kept.samples.dtype == np.float32
    fewer = den.denoise(small, n_samples=2, seed=2, keep_samples=5)
    assert fewer.samples.shape == (2, *small.shape)


@pytest.mark.parametrize("overlap, max_ratio", [(16, 0.25), (32, 0.15)])
def test_tiled_matches_whole_image(den, noisy_image, overlap, max_ratio):
    """Tiles see the same latent noise as the whole image (global eps), so they differ only
    where a tile's receptive field is cut off. That tiling error must be far below the
    Monte-Carlo error of the estimate itself (two seeds, same n_samples). Measured on the
    tiny model, 128x160, 16 samples: mean |tiled - whole| / mean |seed 3 - seed 4| = 0.08
    (overlap 16) and 0.035 (overlap 32); max ratios 0.18 and 0.05."""
    image = noisy_image[:128, :160]
    whole = den.denoise(image, n_samples=16, seed=3, tile=256, sampling="mc")
    assert whole.metadata["tile"] == 256  # one 128x160 tile
    other_seed = den.denoise(image, n_samples=16, seed=4, tile=256, sampling="mc")
    tiled = den.denoise(image, n_samples=16, seed=3, tile=64, overlap=overlap, sampling="mc")
    mc = np.abs(other_seed.mmse - whole.mmse)
    err = np.abs(tiled.mmse - whole.mmse)
    assert err.mean() < max_ratio * mc.mean()
    assert err.max() < 2 * max_ratio * mc.max()
    assert err.mean() < 0.01 * image.std()


def _border_interior_ratio(mmse: np.ndarray, tiler: Tiler) -> float:
    """Mean |horizontal gradient| at columns where a tile starts or ends / elsewhere."""
    grad = np.abs(np.diff(mmse.astype(np.float64), axis=1))  # grad[:, c-1] = |m[c] - m[c-1]|
    border = np.zeros(grad.shape[1], bool)
    for tile in tiler.plan(mmse.shape).tiles:
        for col in (tile.x0 - tiler.margin, tile.x0 + tile.width - tiler.margin):
            if 0 < col < mmse.shape[1]:
                border[col - 1] = True
    assert 0 < border.sum() < border.size
    return float(grad[:, border].mean() / grad[:, ~border].mean())


def test_hann_blend_leaves_no_seams(den, noisy_image):
    """Measured (tiny model, 160x160, tile 64, overlap 16, seeds 0-2, 8 samples): constant
    blend 1.46-1.48, hann 0.98-1.01, whole image (one tile) 0.98: hann is as smooth as no
    tiling at all."""
    ratios = {}
    for blend in ("constant", "hann"):
        res = den.denoise(noisy_image, n_samples=8, seed=0, tile=64, overlap=16, blend=blend)
        tiler = Tiler(64, 16, multiple=8, margin=res.metadata["margin"])
        ratios[blend] = _border_interior_ratio(res.mmse, tiler)
    assert ratios["hann"] < 1.15
    assert ratios["constant"] > 1.25  # the measure does see seams when there are some


def test_stack_is_denoised_slice_by_slice(den, small, noisy_image):
    stack = np.stack([small, noisy_image[50:98, 30:94], small])
    res = den.denoise(stack, n_samples=3, seed=9, keep_samples=2)
    assert res.mmse.shape == res.std.shape == stack.shape
    assert res.samples.shape == (2, *stack.shape)
    first = den.denoise(stack[0], n_samples=3, seed=9, keep_samples=2)
    assert np.array_equal(res.mmse[0], first.mmse) and np.array_equal(res.std[0], first.std)
    assert np.array_equal(res.samples[:, 0], first.samples)
    second = den.denoise(stack[1], n_samples=3, seed=_slice_seed(9, 1))
    assert np.array_equal(res.mmse[1], second.mmse)
    # slices 0 and 2 hold the same image but draw independent latents
    assert not np.array_equal(res.mmse[0], res.mmse[2])


def _pair_correlation(res: DenoiseResult) -> float:
    a, b = (res.samples[i] - res.mmse for i in (0, 1))
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def test_antithetic_pairs_are_anticorrelated(den, small):
    anti = den.denoise(small, n_samples=8, seed=1, sampling="antithetic", keep_samples=2)
    mc = den.denoise(small, n_samples=8, seed=1, sampling="mc", keep_samples=2)
    assert anti.metadata["sampling"] == "antithetic"
    assert np.isfinite(anti.mmse).all() and anti.std.max() > 0
    assert _pair_correlation(anti) < -0.5
    assert _pair_correlation(mc) > _pair_correlation(anti) + 0.3


def test_mean_sampling_is_one_deterministic_pass(den, small):
    a = den.denoise(small, n_samples=50, seed=1, sampling="mean")
    b = den.denoise(small, n_samples=50, seed=2, sampling="mean")
    assert a.metadata["n_samples"] == 1 and a.metadata["sampling"] == "mean"
    assert np.array_equal(a.mmse, b.mmse)
    assert a.std.max() < 1e-3


@pytest.mark.parametrize("shape", [(37, 53), (5, 3), (1, 70)])
def test_odd_sizes(den, noisy_image, shape):
    image = noisy_image[: shape[0], : shape[1]].astype(np.uint16)
    res = den.denoise(image, n_samples=2, seed=0, keep_samples=1)
    assert res.mmse.shape == res.std.shape == shape and res.samples.shape == (1, *shape)
    assert res.mmse.dtype == np.float32 and np.isfinite(res.mmse).all()


@pytest.mark.parametrize("image, match", [
    (np.full((16, 16), np.nan, np.float32), "NaN"),
    (np.pad(np.ones((15, 16)), ((0, 1), (0, 0)), constant_values=np.inf), "Inf"),
    (np.zeros((0, 16), np.float32), r"shape \(0, 16\)"),
    (np.zeros((2, 2, 16, 16), np.float32), "2D image"),
    (np.zeros(16, np.float32), "2D image"),
    (np.array([["a", "b"], ["c", "d"]]), "numeric"),
    (np.ones((8, 8), complex), "numeric"),
    ([[1.0, 2.0], [3.0]], "array"),
])
def test_bad_input(den, image, match):
    with pytest.raises(InputError, match=match):
        den.denoise(image, n_samples=1)


@pytest.mark.parametrize("options, match", [
    ({"sampling": "bogus"}, "'mc', 'antithetic', 'mean'"),
    ({"n_samples": 0}, "n_samples"),
    ({"batch_size": 0}, "batch_size"),
    ({"keep_samples": -1}, "keep_samples"),
    ({"tile": 60}, "multiple of 8"),
    ({"tile": 64, "overlap": 64}, "smaller than tile_size"),
    ({"blend": "gaussian"}, "'hann', 'constant'"),
    ({"seed": -1}, "seed"),
])
def test_bad_options(den, small, options, match):
    with pytest.raises(ConfigError, match=match):
        den.denoise(small, **{"n_samples": 1, **options})


def test_iter_denoise_progress(den, noisy_image):
    stack = np.stack([noisy_image[:64, :96]] * 2)
    events = list(den.iter_denoise(stack, n_samples=1, seed=0, tile=64, overlap=16))
    margin = events[-1].result.metadata["margin"]
    per_slice = len(Tiler(64, 16, multiple=8, margin=margin).plan((64, 96)))
    assert per_slice > 1
    total = 2 * per_slice
    assert all(isinstance(e, Progress) and e.tiles_total == total for e in events)
    assert [e.tiles_done for e in events] == list(range(1, total + 1))
    assert all(e.result is None for e in events[:-1])
    assert events[-1].result.mmse.shape == stack.shape
    # stopping early is allowed and leaves the denoiser usable
    gen = den.iter_denoise(stack, n_samples=1, tile=64, overlap=16)
    next(gen)
    gen.close()
    assert np.array_equal(den.denoise(stack, n_samples=1, seed=0, tile=64, overlap=16).mmse,
                          events[-1].result.mmse)


def test_concurrent_calls_match_sequential(den, noisy_image):
    jobs = [(noisy_image[i * 20 : i * 20 + 48, :72], seed) for i, seed in enumerate((0, 1, 2, 3))]

    def run(job):
        image, seed = job
        return den.denoise(image, n_samples=3, seed=seed, tile=64, overlap=16)

    sequential = [run(job) for job in jobs]
    with ThreadPoolExecutor(max_workers=4) as pool:
        concurrent = list(pool.map(run, jobs))
    for a, b in zip(sequential, concurrent):
        assert _identical(a, b)


def test_metadata(den, small, tiny_package):
    res = den.denoise(small, n_samples=3, seed=42, batch_size=2)
    meta = res.metadata
    json.dumps(meta)
    assert meta["seed"] == 42 and meta["n_samples"] == 3 and meta["batch_size"] == 2
    assert meta["model_sha256"] == den.package.model_hash and len(meta["model_sha256"]) == 64
    assert meta["model_path"] == str(tiny_package)
    for key in ("hdn_deploy_version", "numpy_version", "python_version"):
        assert meta[key]
    assert meta["backend"]["name"] == "onnxruntime" and meta["backend"]["onnxruntime_version"]
    assert (meta["tile"], meta["overlap"]) == (64, 16)
    assert (meta["blend"], meta["sampling"]) == ("hann", "antithetic")
    assert meta["latent_contract"] == 2 and meta["margin"] == 8  # tiny package: overlap 16
    assert meta["shape"] == list(small.shape)


def test_checkpoints_equal_shorter_runs(den, noisy_image):
    image = noisy_image[:40, :72]
    options = dict(seed=4, tile=64, overlap=16, batch_size=3, sampling="mc")
    res = den.denoise(image, n_samples=7, checkpoints=[2, 5, 7], **options)
    assert sorted(res.checkpoints) == [2, 5, 7]
    np.testing.assert_array_equal(res.checkpoints[7], res.mmse)
    for n in (2, 5):
        np.testing.assert_array_equal(res.checkpoints[n], den.denoise(image, n_samples=n, **options).mmse)
    stack = den.denoise(np.stack([image, image]), n_samples=3, checkpoints=[1], **options)
    assert stack.checkpoints[1].shape == (2, *image.shape)
    with pytest.raises(ConfigError, match="checkpoints"):
        den.denoise(image, n_samples=3, checkpoints=[4])


def test_overlap_zero_warns_about_seams(den, noisy_image):
    with pytest.warns(SeamWarning, match="seams"):
        den.denoise(noisy_image[:64, :96], n_samples=1, tile=32, overlap=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SeamWarning)
        den.denoise(noisy_image[:16, :16], n_samples=1, tile=64, overlap=0, margin=0)  # one tile
        den.denoise(noisy_image[:64, :96], n_samples=1, tile=32, overlap=8)


@pytest.fixture(scope="module")
def default_den():
    from hdn_deploy.demo import DEFAULT_MODEL, bundled_path

    return Denoiser(bundled_path(DEFAULT_MODEL), backend="cpu", threads=1)


def _ring_and_interior(estimate, clean):
    ring = np.zeros(clean.shape, bool)
    ring[:2], ring[-2:], ring[:, :2], ring[:, -2:] = True, True, True, True
    inner = np.zeros(clean.shape, bool)
    inner[16:-16, 16:-16] = True
    return [float(np.sqrt(np.mean((estimate[m] - clean[m]) ** 2))) for m in (ring, inner)]


def test_borders_see_image_context_not_zero_padding(default_den):
    """Measured (bundled model, 4 samples): on a 64 x 64 crop of the sample, ring / interior
    RMSE 5.41 / 5.04 with the default margin (32 px); a flat 255 frame gives MMSE 126.1-271.6
    without margin and 250.6-255.7 with it. (The fluorescence sample, mostly dark
    background near the normalisation mean, hardly shows the fault: 5.56 / 5.04 without
    margin; the IHC sample of the previous bundled model showed 30.6 / 9.4.)"""
    from hdn_deploy.demo import SAMPLE_CLEAN, SAMPLE_NOISY, bundled_path

    clean = tifffile.imread(bundled_path(SAMPLE_CLEAN))[100:164, 200:264].astype(np.float32)
    noisy = tifffile.imread(bundled_path(SAMPLE_NOISY))[100:164, 200:264].astype(np.float32)
    flat = np.full((64, 64), 255.0, np.float32)
    options = dict(n_samples=4, seed=0)
    padded = default_den.denoise(noisy, **options)
    assert padded.metadata["margin"] == default_den.package.recommended_overlap // 2
    ring, interior = _ring_and_interior(padded.mmse, clean)
    assert ring < 1.5 * interior
    flat_mmse = default_den.denoise(flat, **options).mmse
    assert float(flat_mmse.max() - flat_mmse.min()) < 0.1 * 255
    # the same measure sees the fault without the margin
    flat0 = default_den.denoise(flat, margin=0, **options).mmse
    assert float(flat0.max() - flat0.min()) > 0.3 * 255


def test_tile_drift_measures_a_whole_tile_offset():
    rng = np.random.default_rng(0)
    noise = rng.normal(0.0, 1.0, (128, 128))
    signal = rng.uniform(0.0, 5.0, (128, 128))
    assert tile_drift(signal + noise, signal) < 0.03  # a sound MMSE: ~1/sqrt(pixels)
    assert tile_drift(signal + noise, signal + 0.3) == pytest.approx(0.3, abs=0.03)
    assert tile_drift(signal + 2.0, signal) > 1e6  # a pure offset
    assert tile_drift(signal, signal) == 0.0
    assert DRIFT_LIMIT == 0.1


def test_drifting_tiles_warn_once_per_frame(den, noisy_image, monkeypatch):
    original = Denoiser._tile_stack

    def offset(self, patch, tile, sampler, run):  # a model whose MMSE is offset as a whole
        stack, count = original(self, patch, tile, sampler, run)
        stack[0] += 0.5 * (patch - stack[0]).std() + (patch - stack[0]).mean()
        return stack, count

    monkeypatch.setattr(Denoiser, "_tile_stack", offset)
    frame = noisy_image[:64, :96]
    with pytest.warns(DriftWarning) as caught:
        den.denoise(np.stack([frame, frame]), n_samples=1, tile=32, overlap=8)
    drift = [w for w in caught if issubclass(w.category, DriftWarning)]
    assert len(drift) == 2  # 2 frames of 6 tiles: once per frame
    assert "offset from its input by 0.50" in str(drift[0].message)
    assert "--tile" in str(drift[0].message)


def test_bundled_model_does_not_drift_on_its_sample():
    image = tifffile.imread(bundled_path(SAMPLE_NOISY))
    with warnings.catch_warnings():
        warnings.simplefilter("error", DriftWarning)
        Denoiser(bundled_path(DEFAULT_MODEL), threads=1).denoise(image, n_samples=4, seed=0)
