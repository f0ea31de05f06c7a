"""The line-artefact likelihood (Gaussian pixel noise plus row/column offsets, marginalised)
and the estimate of the offsets' std from noisy images."""
import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

from hdn_deploy.errors import ConfigError
from hdn_deploy.training.noise_models import (GaussianNoiseModel, GMMNoiseModel,
                                              LineArtefactNoiseModel, estimate_line_std,
                                              noise_model_from_state)


def _dense_log_pdf(residual: np.ndarray, sigma: float, row_std: float, column_std: float) -> float:
    """log N(r; 0, C) with the full HW x HW covariance written out (the definition)."""
    h, w = residual.shape
    cov = (sigma**2 * np.eye(h * w) + row_std**2 * np.kron(np.eye(h), np.ones((w, w)))
           + column_std**2 * np.kron(np.ones((h, h)), np.eye(w)))
    return float(multivariate_normal(np.zeros(h * w), cov).logpdf(residual.ravel()))


@pytest.mark.parametrize("row_std,column_std", [(1.5, 0.0), (0.0, 2.0), (1.5, 0.7)])
def test_closed_form_equals_the_dense_gaussian(row_std, column_std):
    rng = np.random.default_rng(0)
    x, s = rng.normal(3, 2, (2, 1, 5, 4)), rng.normal(3, 1, (2, 1, 5, 4))
    model = LineArtefactNoiseModel(GaussianNoiseModel(2.0), row_std, column_std)
    ll = model.log_likelihood(torch.tensor(x), torch.tensor(s))
    assert ll.shape == x.shape
    for k in range(2):
        # every pixel holds the patch's log p / (H W)
        assert torch.allclose(ll[k], ll[k, 0, 0, 0].expand_as(ll[k]))
        assert float(ll[k].sum()) == pytest.approx(
            _dense_log_pdf(x[k, 0] - s[k, 0], 2.0, row_std, column_std), rel=1e-10)


def test_without_offsets_it_is_the_gaussian_pixel_likelihood():
    rng = np.random.default_rng(1)
    x, s = (torch.tensor(rng.normal(0, 30, (3, 1, 8, 8))) for _ in range(2))
    lines = LineArtefactNoiseModel(GaussianNoiseModel(25.0)).log_likelihood(x, s).mean()
    assert float(lines) == pytest.approx(float(GaussianNoiseModel(25.0).log_likelihood(x, s).mean()))


def test_a_row_offset_costs_less_than_under_the_pixel_likelihood():
    """The point of the model: an offset row is expected, so the signal need not explain it."""
    x = torch.zeros(1, 1, 16, 16, dtype=torch.float64)
    x[..., 3, :] += 12.0
    s = torch.zeros_like(x)
    gauss, lines = GaussianNoiseModel(25.0), LineArtefactNoiseModel(GaussianNoiseModel(25.0), row_std=8.0)
    cost = {m.kind: float(m.log_likelihood(x, s).sum() - m.log_likelihood(s, s).sum())
            for m in (gauss, lines)}
    assert cost["gaussian"] == pytest.approx(-16 * 144 / (2 * 625), rel=1e-4)
    # an offset row has variance sigma^2 + W row_std^2 along its mean: 625 + 16 * 64
    assert cost["lines"] == pytest.approx(-16 * 144 / (2 * (625 + 16 * 64)), rel=1e-4)


def test_gradient_reaches_the_signal():
    s = torch.zeros(1, 1, 4, 4, requires_grad=True)
    LineArtefactNoiseModel(GaussianNoiseModel(1.0), 0.5, 0.5).log_likelihood(torch.ones(1, 1, 4, 4), s).sum().backward()
    assert s.grad is not None and float(s.grad.abs().sum()) > 0


def test_state_round_trip_and_marginal_variance():
    model = LineArtefactNoiseModel(GaussianNoiseModel(25.0), 6.0, 2.0)
    meta, arrays = model.state()
    again = noise_model_from_state(meta, arrays)
    assert isinstance(again, LineArtefactNoiseModel)
    assert (again.pixel.sigma, again.row_std, again.column_std) == (25.0, 6.0, 2.0)
    assert again.variance(np.zeros(3)).tolist() == [625 + 36 + 4] * 3


def test_state_round_trip_of_a_gmm_pixel_model(tmp_path):
    gmm = GMMNoiseModel(np.random.default_rng(0).normal(0, 0.1, (9, 2)).astype(np.float32),
                        min_signal=0.0, max_signal=100.0, min_sigma=1.0)
    meta, arrays = LineArtefactNoiseModel(gmm, row_std=3.0).state()
    again = noise_model_from_state(meta, arrays)
    assert isinstance(again.pixel, GMMNoiseModel) and again.row_std == 3.0
    np.testing.assert_array_equal(again.pixel.weight.numpy(), gmm.weight.numpy())


@pytest.mark.parametrize("kwargs", [dict(row_std=-1), dict(column_std=float("nan"))])
def test_invalid_parameters_are_refused(kwargs):
    with pytest.raises(ConfigError):
        LineArtefactNoiseModel(GaussianNoiseModel(1.0), **kwargs)


class _Heteroscedastic:
    """Gaussian pixel noise whose variance is 1 + signal (as Poisson-Gaussian noise)."""

    kind = "test"

    def log_likelihood(self, x, s):
        var = 1.0 + s
        return -0.5 * ((x - s) ** 2 / var + torch.log(2 * np.pi * var))

    def variance(self, s):
        return 1.0 + np.asarray(s, dtype=np.float64)


@pytest.mark.parametrize("row_std,column_std", [(1.5, 0.0), (0.0, 2.0), (1.5, 0.7)])
def test_signal_dependent_pixel_noise_equals_the_dense_gaussian(row_std, column_std):
    """With Gaussian pixel noise of any per-pixel variance the Woodbury form is exact."""
    rng = np.random.default_rng(4)
    s = rng.uniform(0, 5, (1, 1, 4, 5))
    x = s + rng.normal(0, 2, s.shape)
    ll = LineArtefactNoiseModel(_Heteroscedastic(), row_std, column_std).log_likelihood(
        torch.tensor(x), torch.tensor(s))
    h, w = s.shape[-2:]
    cov = (np.diag(1.0 + s.ravel()) + row_std**2 * np.kron(np.eye(h), np.ones((w, w)))
           + column_std**2 * np.kron(np.ones((h, h)), np.eye(w)))
    expected = multivariate_normal(np.zeros(h * w), cov).logpdf((x - s).ravel())
    assert float(ll.sum()) == pytest.approx(expected, rel=1e-10)


def _smooth(size: int, seed: int) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size] / size
    return 100 + 60 * np.sin(6 * x + seed) * np.cos(4 * y)


@pytest.mark.parametrize("axis", ["rows", "columns"])
def test_estimate_recovers_the_offset_std(axis):
    rng = np.random.default_rng(2)
    images = []
    for seed in range(4):
        image = _smooth(256, seed) + rng.normal(0, 25, (256, 256))
        offsets = rng.normal(0, 6.0, 256)
        images.append(image + (offsets[:, None] if axis == "rows" else offsets[None, :]))
    assert estimate_line_std(images, axis, 25.0**2) == pytest.approx(6.0, rel=0.1)
    other = "columns" if axis == "rows" else "rows"
    assert estimate_line_std(images, other, 25.0**2) < 1.0


def test_estimate_refuses_bad_arguments():
    with pytest.raises(ConfigError, match="rows"):
        estimate_line_std([np.zeros((8, 8))], "diagonal", 1.0)
    with pytest.raises(ConfigError, match=">= 3"):
        estimate_line_std([np.zeros((2, 8))], "rows", 1.0)
