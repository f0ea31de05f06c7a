"""Denoiser.explain and mean_levels: levels at their mean are eps = 0 (checked against the
graphs run directly with onnxruntime), shapes, labels, determinism by seed."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import tifffile

from hdn_deploy.denoiser import Denoiser
from hdn_deploy.errors import ConfigError, InputError
from hdn_deploy.explain import Explanation, write_explanation
from hdn_deploy.latents import LatentSampler

ONE_TILE = dict(tile=64, overlap=0, margin=0)  # a 64x64 image is exactly one tile


@pytest.fixture(scope="module")
def den(tiny_package):
    return Denoiser(tiny_package, backend="cpu", threads=1)


@pytest.fixture(scope="module")
def image(data_dir):
    return tifffile.imread(data_dir / "noisy.tif")[:64, :64]


@pytest.fixture(scope="module")
def explained(den, image):
    return den.explain(image, n_samples=4, seed=3, **ONE_TILE)


def _direct_samples(package, image, eps_of_level):
    """Decode with onnxruntime straight from the package's graphs (no Denoiser, no tiling):
    float64 (N, H, W) in intensity units; ``eps_of_level(level, channels)`` -> (N, C, h, w)."""
    enc = ort.InferenceSession(str(package.encoder_path), providers=["CPUExecutionProvider"])
    dec = ort.InferenceSession(str(package.decoder_path), providers=["CPUExecutionProvider"])
    x = ((image - package.mean) / package.std).astype(np.float32)[None, None]
    names = [o.name for o in enc.get_outputs()]
    feeds = dict(zip(names, enc.run(None, {"image": x})))
    for lv in package.sampled_levels:
        feeds[f"eps_{lv.index}"] = eps_of_level(lv.index, lv.channels).astype(np.float32)
    out = dec.run(None, feeds)[0][:, 0].astype(np.float64)
    return out * package.std + package.mean


def test_shapes_labels_and_metadata(explained, den, image):
    levels = tuple(lv.index for lv in den.package.sampled_levels)
    n = len(levels)
    assert isinstance(explained, Explanation) and explained.levels == levels
    assert explained.level_std.shape == (n, 64, 64)
    assert explained.mean_decodes.shape == (n + 1, 64, 64)
    assert explained.stack().shape == (2 * n + 2, 64, 64)
    assert explained.stack().dtype == np.float32 and np.isfinite(explained.stack()).all()
    assert len(explained.labels) == 2 * n + 2
    assert explained.labels[:3] == ["input", "MMSE, every level sampled", "level 0 at mean"]
    assert explained.labels[n + 1] == f"levels 0-{n - 1} at mean (all)"
    assert explained.labels[-1] == f"std, level {levels[-1]} alone"
    meta = explained.metadata
    assert meta["seed"] == 3 and meta["explain"]["n_samples"] == 4
    assert meta["explain"]["planes"] == explained.labels
    spread = meta["explain"]["level_spread"]
    assert [float(spread[str(lv)]) for lv in levels] == pytest.approx(
        explained.level_std.mean(axis=(1, 2)))
    assert np.array_equal(explained.image, image)


def test_level_std_is_that_level_sampled_alone(explained, den, image):
    """Each std plane = std over the K decodes with eps = 0 on every other level and the
    latent contract's mc eps (seed 3, samples 0..K-1) on that level, computed directly."""
    k = 4
    for i, level in enumerate(explained.levels):
        def eps(lv, channels, level=level):
            if lv != level:
                return np.zeros((k, channels, 64 >> (lv + 1), 64 >> (lv + 1)))
            return LatentSampler(3, mode="mc").tile_eps(range(k), [(lv, channels)], 0, 0, 64, 64)[0]
        direct = _direct_samples(den.package, image, eps)
        np.testing.assert_allclose(explained.level_std[i], direct.std(axis=0), rtol=1e-3,
                                   atol=1e-3 * den.package.std)
        assert explained.level_std[i].max() > 0  # the level does vary the output


def test_mean_decodes_hold_the_finest_levels_at_their_mean(explained, den, image):
    k, levels = 4, explained.levels
    for n_mean in (1, len(levels) - 1):
        def eps(lv, channels, n_mean=n_mean):
            if lv in levels[:n_mean]:
                return np.zeros((k, channels, 64 >> (lv + 1), 64 >> (lv + 1)))
            return LatentSampler(3, mode="antithetic").tile_eps(range(k), [(lv, channels)],
                                                                0, 0, 64, 64)[0]
        direct = _direct_samples(den.package, image, eps).mean(axis=0)
        np.testing.assert_allclose(explained.mean_decodes[n_mean], direct, rtol=1e-3,
                                   atol=1e-3 * den.package.std)
    every = den.denoise(image, n_samples=4, seed=3, sampling="antithetic", **ONE_TILE)
    assert np.array_equal(explained.mean_decodes[0], every.mmse)  # plane 0: plain MMSE
    one_pass = den.denoise(image, sampling="mean", **ONE_TILE)
    assert np.array_equal(explained.mean_decodes[-1], one_pass.mmse)  # all at mean
    assert not np.allclose(explained.mean_decodes[1], explained.mean_decodes[0])


def test_deterministic_by_seed(den, image, explained):
    again = den.explain(image, n_samples=4, seed=3, **ONE_TILE)
    other = den.explain(image, n_samples=4, seed=4, **ONE_TILE)
    assert again.stack().tobytes() == explained.stack().tobytes()
    assert not np.array_equal(other.level_std, explained.level_std)
    # the all-at-mean plane uses no noise at all: the same for every seed
    assert np.array_equal(other.mean_decodes[-1], explained.mean_decodes[-1])


def test_tiled_explain_matches_in_shape_and_is_deterministic(den, data_dir):
    image = tifffile.imread(data_dir / "noisy.tif")[:96, :112]  # several tiles
    a = den.explain(image, n_samples=2, seed=0)
    b = den.explain(image, n_samples=2, seed=0)
    assert a.stack().shape == (2 * len(a.levels) + 2, 96, 112)
    assert a.stack().tobytes() == b.stack().tobytes()


def test_mean_levels_zero_the_eps_of_those_levels_only():
    plain = LatentSampler(9, mode="antithetic")
    held = LatentSampler(9, mode="antithetic", mean_levels=[1])
    levels = [(0, 3), (1, 2), (2, 4)]
    a = plain.tile_eps([0, 1, 2], levels, 8, 16, 32, 32)
    b = held.tile_eps([0, 1, 2], levels, 8, 16, 32, 32)
    assert not b[1].any() and held.at_mean(1) and not held.at_mean(0)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[2], b[2])


def test_denoise_with_every_level_at_mean_has_zero_std(den, image):
    levels = [lv.index for lv in den.package.sampled_levels]
    res = den.denoise(image, n_samples=6, seed=1, mean_levels=levels, **ONE_TILE)
    assert res.metadata["sampling"] == "mean" and res.metadata["mean_levels"] == levels
    assert res.std.max() == 0
    part = den.denoise(image, n_samples=6, seed=1, mean_levels=levels[1:], **ONE_TILE)
    assert part.std.max() > 0 and part.metadata["mean_levels"] == levels[1:]


@pytest.mark.parametrize("bad", [[7], [0.5], "0", [True]])
def test_bad_mean_levels(den, image, bad):
    with pytest.raises(ConfigError, match="mean_levels"):
        den.denoise(image, n_samples=1, mean_levels=bad)


def test_explain_refuses_stacks(den, image):
    with pytest.raises(InputError, match="one 2D image"):
        den.explain(np.stack([image, image]), n_samples=1)


def test_written_files(explained, tmp_path):
    from PIL import Image

    tif, png = write_explanation(explained, tmp_path / "out", "noisy")
    assert tif.name == "noisy_explain.tif" and png.name == "noisy_explain.png"
    with tifffile.TiffFile(tif) as f:
        data = f.asarray()
        labels = f.imagej_metadata["Labels"]
    assert data.shape == explained.stack().shape and data.dtype == np.float32
    assert np.array_equal(data, explained.stack())
    assert labels == explained.labels
    with Image.open(png) as im:
        n = len(explained.levels)
        assert im.width >= (n + 2) * 64 and im.height >= 2 * 64
