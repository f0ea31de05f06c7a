"""The ladder VAE: reference parameter parity, explicit eps, uncond levels."""
import inspect

import pytest
import torch

from hdn_deploy.errors import ConfigError
from hdn_deploy.training import model as model_module
from hdn_deploy.training.config import ModelConfig
from hdn_deploy.training.model import LadderVAE, count_parameters

SMALL = ModelConfig(z_dims=(4, 4, 4), n_filters=8, blocks_per_level=1, patch_size=32)


@pytest.mark.parametrize("patch, expected", [(64, 7_301_697), (128, 7_301_889)])
def test_default_model_matches_reference_parameter_count(patch, expected):
    assert count_parameters(LadderVAE(ModelConfig(patch_size=patch))) == expected


def test_config_round_trips_and_rejects_unknown_keys():
    cfg = ModelConfig(z_dims=(8, 8), n_filters=16, uncond_levels=(0,), patch_size=32)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="unknown model config key"):
        ModelConfig.from_dict({**cfg.to_dict(), "filters": 3})


@pytest.mark.parametrize("kwargs, message", [
    (dict(uncond_levels=(5,)), "uncond_levels"),
    (dict(patch_size=48), "multiple of 2\\*\\*n_levels"),
    (dict(dropout=1.0), "dropout"),
    (dict(z_dims=()), "z_dims"),
])
def test_config_rejects_bad_values(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        ModelConfig(**kwargs)


def test_latent_shapes_follow_levels():
    m = LadderVAE(SMALL)
    assert m.latent_shapes(64, 96) == [(4, 32, 48), (4, 16, 24), (4, 8, 12)]


def test_explicit_eps_makes_samples_deterministic_and_batch_independent():
    torch.manual_seed(0)
    m = LadderVAE(SMALL).eval()
    x = torch.randn(1, 1, 64, 64)
    eps = m.draw_eps(4, 64, 64, torch.Generator().manual_seed(3))
    all_four = m.sample_posterior(x, 4, eps=eps)
    again = m.sample_posterior(x, 4, eps=eps)
    first_two = m.sample_posterior(x, 2, eps=[e[:2] for e in eps])
    assert torch.equal(all_four, again)
    torch.testing.assert_close(all_four[:2], first_two, rtol=0, atol=1e-5)
    assert not torch.allclose(all_four[0], all_four[1])


def test_zero_eps_gives_the_mean_path():
    m = LadderVAE(SMALL).eval()
    x = torch.randn(1, 1, 32, 32)
    zeros = [torch.zeros(1, *s) for s in m.latent_shapes(32, 32)]
    with torch.no_grad():
        none = m.top_down(m.bottom_up(x), [None] * 3, prediction=True, compute_kl=False).signal
        zero = m.top_down(m.bottom_up(x), zeros, prediction=True, compute_kl=False).signal
    torch.testing.assert_close(none, zero)


def test_uncond_levels_ignore_their_eps_at_prediction_and_the_input_in_their_posterior():
    cfg = ModelConfig(z_dims=(4, 4, 4), n_filters=8, blocks_per_level=1, patch_size=32,
                      uncond_levels=(0,))
    m = LadderVAE(cfg).eval()
    assert m.sampled_levels() == [1, 2]
    assert m.top_down_levels[0].merge is not None  # built, but unused when uncond
    x = torch.randn(1, 1, 32, 32)
    eps = m.draw_eps(1, 32, 32, torch.Generator().manual_seed(0))
    other = [torch.randn_like(eps[0]), eps[1], eps[2]]
    a = m.sample_posterior(x, 1, eps=eps)
    b = m.sample_posterior(x, 1, eps=other)
    torch.testing.assert_close(a, b)  # level 0 uses its mean: its eps does not matter
    td = torch.randn(1, 8, 16, 16)
    bu = torch.randn(1, 8, 16, 16)
    assert m.top_down_levels[0].q_input(td, bu, True) is td


def test_training_pass_returns_kl_per_level():
    m = LadderVAE(SMALL).train()
    out = m(torch.randn(2, 1, 32, 32))
    assert out.signal.shape == (2, 1, 32, 32)
    assert len(out.kl) == 3 and all(k.shape == (2,) and (k >= -1e-4).all() for k in out.kl)


def test_sampling_arithmetic_has_no_random_ops_or_distributions():
    source = inspect.getsource(model_module.LadderVAE.top_down)
    assert "randn" not in source and "distributions" not in source
    assert "torch.distributions" not in inspect.getsource(model_module)
