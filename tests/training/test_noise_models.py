"""Noise models: reference GMM math, fitting, files, state round trips, histogram, plot."""
from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from hdn_deploy.errors import InputError, PackageError  # noqa: E402
from hdn_deploy.training.noise_models import (  # noqa: E402
    GaussianNoiseModel,
    GMMNoiseModel,
    HistogramNoiseModel,
    load_noise_model,
    noise_model_from_state,
)
from hdn_deploy.training.noise_pairs import calibration_pairs  # noqa: E402

GAIN, READ, FRAMES = 3.0, 8.0, 30


def _reference_likelihood(weight, min_signal, max_signal, min_sigma, x, s):
    """Independent float64 loop implementation of the DivNoising/PPN2V GMM likelihood."""
    n = weight.shape[0] // 3
    t = (s - min_signal) / (max_signal - min_signal)

    def poly(w):
        return sum(w[i] * t**i for i in range(len(w)))

    mus = [poly(weight[k]) for k in range(n)]
    sigmas = [np.sqrt(np.maximum(poly(np.exp(weight[n + k])), min_sigma)) for k in range(n)]
    alphas = [np.exp(poly(weight[2 * n + k]) + 1e-10) for k in range(n)]
    total = sum(alphas)
    alphas = [a / total for a in alphas]
    mean = sum(a * m for a, m in zip(alphas, mus))
    mus = [m - mean + s for m in mus]
    p = sum(
        a * np.exp(-((x - m) ** 2) / (2 * sd**2)) / np.sqrt(2 * np.pi * sd**2)
        for a, m, sd in zip(alphas, mus, sigmas)
    )
    return p + 1e-10


@pytest.fixture(scope="module")
def poisson_gaussian_pairs():
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:40, 0:40]
    clean = 50.0 + 950.0 * (xx + 40 * yy) / (40 * 40 - 1)
    shape = (FRAMES,) + clean.shape
    stack = GAIN * rng.poisson(clean / GAIN, size=shape) + rng.normal(0.0, READ, size=shape)
    return calibration_pairs(stack.astype(np.float32))


@pytest.fixture(scope="module")
def fitted_gmm(poisson_gaussian_pairs):
    signal, observation = poisson_gaussian_pairs
    return GMMNoiseModel.fit(signal, observation, iterations=300, batch_size=20_000,
                             seed=0, progress=False)


@pytest.fixture()
def handmade_weight():
    rng = np.random.default_rng(3)
    weight = rng.normal(0.0, 1.0, size=(9, 2)).astype(np.float32)
    weight[3:6, 0] = np.log(30.0) + rng.normal(0, 0.3, 3)
    weight[3:6, 1] = np.log(500.0) + rng.normal(0, 0.3, 3)
    return weight


def _some_pairs(n=500, seed=0):
    rng = np.random.default_rng(seed)
    s = rng.uniform(60.0, 900.0, n)
    x = s + rng.normal(0.0, 1.0, n) * np.sqrt(3 * s + 64)
    return torch.from_numpy(x), torch.from_numpy(s)


# ------------------------------------------------------------------------------ Gaussian
def test_gaussian_log_likelihood_formula():
    model = GaussianNoiseModel(5.0)
    x, s = torch.tensor([1.0, 12.0, -3.0]), torch.tensor([0.0, 10.0, 2.0])
    expected = -((x - s) ** 2) / (2 * 25.0) - math.log(5.0 * math.sqrt(2 * math.pi))
    torch.testing.assert_close(model.log_likelihood(x, s), expected)
    assert model.variance(np.zeros(4)).tolist() == [25.0] * 4


def test_gaussian_rejects_bad_sigma():
    with pytest.raises(ValueError, match="sigma"):
        GaussianNoiseModel(0.0)


# ------------------------------------------------------------------------------ GMM math
@pytest.mark.parametrize("scalar_shape", [(), (1,)])
def test_handwritten_interchange_file_loads_with_reference_likelihood(
    tmp_path, handmade_weight, scalar_shape
):
    path = tmp_path / "GMM.npz"
    np.savez(path, trained_weight=handmade_weight,
             min_signal=np.full(scalar_shape, 40.0, np.float32),
             max_signal=np.full(scalar_shape, 1000.0, np.float32),
             min_sigma=np.full(scalar_shape, 50))
    model = load_noise_model(path)
    assert isinstance(model, GMMNoiseModel)
    assert (model.n_gaussian, model.n_coeff) == (3, 2)
    assert (model.min_signal, model.max_signal, model.min_sigma) == (40.0, 1000.0, 50.0)
    x, s = _some_pairs()
    got = model.log_likelihood(x, s).numpy()
    want = np.log(_reference_likelihood(handmade_weight.astype(np.float64), 40.0, 1000.0,
                                         50.0, x.numpy(), s.numpy()))
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)
    # float32 inputs (the training dtype) agree too
    got32 = model.log_likelihood(x.float(), s.float()).numpy()
    np.testing.assert_allclose(got32, want, rtol=1e-4, atol=1e-4)


def test_gmm_parameters_are_normalised_and_zero_mean(handmade_weight):
    model = GMMNoiseModel(handmade_weight, min_signal=40.0, max_signal=1000.0, min_sigma=1.0)
    s = torch.linspace(0.0, 1200.0, 50, dtype=torch.float64)
    mu, std, alpha = model.gaussian_parameters(s)
    assert mu.shape == std.shape == alpha.shape == (50, 3)
    torch.testing.assert_close(alpha.sum(-1), torch.ones(50, dtype=torch.float64))
    torch.testing.assert_close((alpha * mu).sum(-1), s)


def test_min_sigma_clamps_the_variance_not_the_std(handmade_weight):
    weight = handmade_weight.copy()
    weight[3:6] = np.log(1e-3)  # tiny variances everywhere
    model = GMMNoiseModel(weight, min_signal=0.0, max_signal=1.0, min_sigma=49.0)
    _, std, _ = model.gaussian_parameters(torch.tensor([0.5], dtype=torch.float64))
    torch.testing.assert_close(std, torch.full((1, 3), 7.0, dtype=torch.float64))


@pytest.mark.parametrize("make", ["gaussian", "gmm", "histogram"])
def test_log_likelihood_is_differentiable_wrt_signal(make, handmade_weight):
    if make == "gaussian":
        model = GaussianNoiseModel(20.0)
    elif make == "gmm":
        model = GMMNoiseModel(handmade_weight, min_signal=40.0, max_signal=1000.0, min_sigma=1.0)
    else:
        x, s = _some_pairs(20_000, seed=5)
        model = HistogramNoiseModel.fit(s.numpy(), x.numpy(), bins=32)
    x, s = _some_pairs(200, seed=1)
    s = s.float().clone().requires_grad_(True)
    out = model.log_likelihood(x.float(), s)
    assert out.shape == s.shape and torch.isfinite(out).all()
    out.sum().backward()
    assert torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0


# ------------------------------------------------------------------------------ GMM fit
def test_gmm_fit_recovers_poisson_gaussian_variance(fitted_gmm, poisson_gaussian_pairs):
    signal, _ = poisson_gaussian_pairs
    lo, hi = np.percentile(signal, [5, 95])
    grid = np.linspace(lo, hi, 40)
    truth = GAIN * grid + READ**2
    ratio = fitted_gmm.variance(grid) / truth
    assert np.all(np.abs(ratio - 1.0) < 0.10), ratio


def test_gmm_fit_beats_its_start_and_is_seeded(poisson_gaussian_pairs, fitted_gmm):
    signal, observation = poisson_gaussian_pairs
    x, s = torch.from_numpy(observation), torch.from_numpy(signal)
    start = GMMNoiseModel.fit(signal, observation, iterations=1, batch_size=20_000,
                              progress=False)
    nll_fit = -fitted_gmm.log_likelihood(x, s).mean()
    assert nll_fit <= -start.log_likelihood(x, s).mean() + 1e-4
    again = GMMNoiseModel.fit(signal[:5000], observation[:5000], iterations=5,
                              batch_size=1000, progress=False, seed=7)
    twice = GMMNoiseModel.fit(signal[:5000], observation[:5000], iterations=5,
                              batch_size=1000, progress=False, seed=7)
    torch.testing.assert_close(again.weight, twice.weight, rtol=0, atol=0)


def test_gmm_fit_rejects_constant_signal():
    with pytest.raises(InputError, match="signal range"):
        GMMNoiseModel.fit(np.ones(100), np.ones(100), iterations=1, progress=False)


def test_gmm_npz_round_trip_gives_identical_likelihoods(tmp_path, fitted_gmm):
    path = fitted_gmm.save(tmp_path / "nm.npz")
    with np.load(path) as data:
        assert sorted(data.files) == sorted(["trained_weight", "min_signal", "max_signal",
                                             "min_sigma"])
        assert data["trained_weight"].shape == (9, 2)
    loaded = load_noise_model(path)
    x, s = _some_pairs()
    assert torch.equal(loaded.log_likelihood(x.float(), s.float()),
                       fitted_gmm.log_likelihood(x.float(), s.float()))
    assert [p.name for p in tmp_path.iterdir()] == ["nm.npz"]  # no temp files left


# ------------------------------------------------------------------------------ state
@pytest.mark.parametrize("make", ["gaussian", "gmm", "histogram"])
def test_state_round_trip(make, handmade_weight):
    if make == "gaussian":
        model = GaussianNoiseModel(12.5)
    elif make == "gmm":
        model = GMMNoiseModel(handmade_weight, min_signal=40.0, max_signal=1000.0, min_sigma=3.0)
    else:
        x, s = _some_pairs(5000)
        model = HistogramNoiseModel.fit(s.numpy(), x.numpy(), bins=16)
    meta, arrays = model.state()
    import json

    meta = json.loads(json.dumps(meta))  # JSON-able
    assert meta["kind"] == make
    assert all(isinstance(a, np.ndarray) for a in arrays.values())
    rebuilt = noise_model_from_state(meta, arrays)
    x, s = _some_pairs(300, seed=2)
    assert torch.equal(rebuilt.log_likelihood(x, s), model.log_likelihood(x, s))


def test_state_errors_are_package_errors():
    with pytest.raises(PackageError, match="unknown noise-model kind"):
        noise_model_from_state({"kind": "poisson"}, {})
    with pytest.raises(PackageError, match="trained_weight"):
        noise_model_from_state({"kind": "gmm", "min_signal": 0, "max_signal": 1,
                                "min_sigma": 1}, {})


# ------------------------------------------------------------------------------ bad files
def _write_bad(tmp_path, case, weight):
    path = tmp_path / f"bad_{case}.npz"
    good = dict(trained_weight=weight, min_signal=0.0, max_signal=1.0, min_sigma=1.0)
    if case == "missing_key":
        good.pop("min_sigma")
        np.savez(path, **good)
    elif case == "wrong_shape":
        np.savez(path, **{**good, "trained_weight": weight[:8]})
    elif case == "vector_scalar":
        np.savez(path, **{**good, "max_signal": np.array([1.0, 2.0])})
    elif case == "bad_range":
        np.savez(path, **{**good, "max_signal": -1.0})
    elif case == "not_npz":
        path.write_text("trained_weight = 3\n")
    elif case == "unknown_keys":
        np.savez(path, something=np.zeros(3))
    elif case == "histogram_shape":
        path = tmp_path / "bad_histogram.npy"
        np.save(path, np.zeros((2, 4, 4)))
    elif case == "missing":
        path = tmp_path / "nowhere.npz"
    return path


@pytest.mark.parametrize("case", ["missing_key", "wrong_shape", "vector_scalar", "bad_range",
                                  "not_npz", "unknown_keys", "histogram_shape", "missing"])
def test_wrong_layouts_raise_input_error_naming_the_file(tmp_path, case, handmade_weight):
    path = _write_bad(tmp_path, case, handmade_weight)
    with pytest.raises(InputError) as info:
        load_noise_model(path)
    assert path.name in str(info.value)


def test_gmm_load_names_the_missing_key(tmp_path, handmade_weight):
    path = _write_bad(tmp_path, "missing_key", handmade_weight)
    with pytest.raises(InputError, match="min_sigma"):
        GMMNoiseModel.load(path)


# ------------------------------------------------------------------------------ histogram
def test_histogram_shape_normalisation_and_variance():
    rng = np.random.default_rng(0)
    s = rng.uniform(100.0, 200.0, 200_000)
    x = s + rng.normal(0.0, 10.0, s.size)
    model = HistogramNoiseModel.fit(s, x, bins=64)
    hist = model.histogram
    assert hist.shape == (3, 64, 64)
    width = hist[2][:, 0] - hist[1][:, 0]
    integrals = (hist[0] * width[None, :]).sum(axis=1)
    full = hist[0].sum(axis=1) > 0
    np.testing.assert_allclose(integrals[full], 1.0, rtol=1e-9)
    assert hist[1].min() == pytest.approx(min(s.min(), x.min()))
    assert hist[2].max() == pytest.approx(max(s.max(), x.max()))
    np.testing.assert_allclose(np.sqrt(model.variance(np.array([130.0, 170.0]))), 10.0, rtol=0.1)


def test_histogram_interpolates_between_signal_bin_centres():
    hist = np.zeros((3, 2, 2))
    hist[1] = np.array([[0.0], [1.0]])
    hist[2] = np.array([[1.0], [2.0]])
    hist[0] = [[1.0, 0.0], [0.0, 1.0]]  # s in bin 0 -> x in bin 0, s in bin 1 -> x in bin 1
    model = HistogramNoiseModel(hist)
    s = torch.tensor([0.5, 1.0, 1.5], dtype=torch.float64)
    p = model.log_likelihood(torch.full_like(s, 0.2), s).exp() - 1e-10
    torch.testing.assert_close(p, torch.tensor([1.0, 0.5, 0.0], dtype=torch.float64))


@pytest.mark.parametrize("suffix", [".npy", ".npz"])
def test_histogram_file_round_trip(tmp_path, suffix):
    x, s = _some_pairs(5000)
    model = HistogramNoiseModel.fit(s.numpy(), x.numpy(), bins=20)
    loaded = load_noise_model(model.save(tmp_path / f"hist{suffix}"))
    assert isinstance(loaded, HistogramNoiseModel)
    np.testing.assert_array_equal(loaded.histogram, model.histogram)


def test_ppn2v_histogram_with_rows_summing_to_one_is_converted(tmp_path):
    x, s = _some_pairs(5000)
    model = HistogramNoiseModel.fit(s.numpy(), x.numpy(), bins=20)
    ppn2v = model.histogram.copy()
    width = ppn2v[2][:, 0] - ppn2v[1][:, 0]
    ppn2v[0] = ppn2v[0] * width[None, :]  # probabilities per bin, as PPN2V stores them
    np.save(tmp_path / "ppn2v.npy", ppn2v)
    loaded = load_noise_model(tmp_path / "ppn2v.npy")
    np.testing.assert_allclose(loaded.histogram, model.histogram, rtol=1e-12)


# ------------------------------------------------------------------------------ plot
def test_plot_writes_a_png_atomically(tmp_path, fitted_gmm, poisson_gaussian_pairs):
    pytest.importorskip("matplotlib")
    from hdn_deploy.training.noise_plot import plot_noise_model_fit

    signal, observation = poisson_gaussian_pairs
    path = plot_noise_model_fit(fitted_gmm, signal, observation, tmp_path / "fit.png",
                                n_levels=2)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["fit.png"]
