"""The HDN ladder VAE.

The network is split into the two halves deployment needs: ``bottom_up`` (deterministic
at eval, run once per image or tile) and ``top_down`` (run once per sample, driven by
explicit latent noise ``eps``). Training calls both through ``forward``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .config import ModelConfig
from .layers import BottomUpLevel, ResidualBlock, TopDownLevel


@dataclass
class TopDownResult:
    """Output of one top-down pass."""

    signal: torch.Tensor  # (N, 1, H, W) normalised signal estimate
    kl: list[torch.Tensor]  # per level, KL summed over C,H,W: (N,)
    z: list[torch.Tensor]


def gaussian_kl(
    mu_q: torch.Tensor, lv_q: torch.Tensor, mu_p: torch.Tensor, lv_p: torch.Tensor
) -> torch.Tensor:
    """Elementwise analytic KL(N(mu_q, e^lv_q) || N(mu_p, e^lv_p))."""
    return 0.5 * (lv_p - lv_q + (lv_q.exp() + (mu_q - mu_p) ** 2) * torch.exp(-lv_p) - 1.0)


class LadderVAE(nn.Module):
    """Hierarchical DivNoising ladder VAE (reference architecture at default config)."""

    def __init__(self, config: ModelConfig = ModelConfig()):
        super().__init__()
        self.config = config
        c = config.n_filters
        block_kwargs = dict(batchnorm=config.batchnorm, dropout=config.dropout, gated=config.gated)
        first_kwargs = dict(block_kwargs, gated=False)
        self.first_bottom_up = nn.Sequential(
            nn.Conv2d(1, c, 5, padding=2), nn.ELU(), ResidualBlock(c, **first_kwargs)
        )
        self.bottom_up_levels = nn.ModuleList(
            [BottomUpLevel(config.blocks_per_level, c, block_kwargs) for _ in config.z_dims]
        )
        top = config.n_levels - 1
        self.top_down_levels = nn.ModuleList(
            [
                TopDownLevel(
                    channels=c,
                    z_dim=z,
                    n_blocks=config.blocks_per_level,
                    is_top=i == top,
                    stochastic_skip=config.stochastic_skip,
                    logvar_clip=config.logvar_clip,
                    block_kwargs=block_kwargs,
                )
                for i, z in enumerate(config.z_dims)
            ]
        )
        prior_hw = config.patch_size // config.spatial_multiple
        self.top_prior = nn.Parameter(
            torch.zeros(1, 2 * config.z_dims[-1], prior_hw, prior_hw),
            requires_grad=config.learn_top_prior,
        )
        self.final_top_down = nn.Sequential(
            *[ResidualBlock(c, **block_kwargs) for _ in range(config.blocks_per_level)]
        )
        self.output_conv = nn.Conv2d(c, 1, 3, padding=1)
        # False while a structured model trains in pixel mode (TrainConfig.structured_warmup_steps):
        # its uncond levels then read the bottom-up input like the others.
        self.uncond_enabled = True

    # ------------------------------------------------------------------ shapes
    def latent_shapes(self, height: int, width: int) -> list[tuple[int, int, int]]:
        """(channels, h, w) of each level's latent for an input of (height, width)."""
        return [
            (z, height // 2 ** (i + 1), width // 2 ** (i + 1))
            for i, z in enumerate(self.config.z_dims)
        ]

    def make_uncond_posteriors_priors(self) -> None:
        """Set each uncond level's posterior head to a copy of its prior head: both read
        the same top-down features, so q = p and the level's KL is 0 (used when a
        structured model switches from pixel-mode warm-up to unconditional levels)."""
        with torch.no_grad():
            for i in self.config.uncond_levels:
                stochastic = self.top_down_levels[i].stochastic
                stochastic.conv_in_q.load_state_dict(stochastic.conv_in_p.state_dict())

    def sampled_levels(self) -> list[int]:
        """Levels that draw eps at prediction (uncond levels use their mean)."""
        return [i for i in range(self.config.n_levels) if i not in self.config.uncond_levels]

    # --------------------------------------------------------------- passes
    def bottom_up(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Per-level bottom-up features, finest first; x: (B, 1, H, W) normalised."""
        features = []
        h = self.first_bottom_up(x)
        for level in self.bottom_up_levels:
            h = level(h)
            features.append(h)
        return features

    def _top_prior(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        prior = self.top_prior
        if prior.shape[-2:] != like.shape[-2:]:
            # Other sizes than the training patch: broadcast the spatially averaged prior.
            prior = prior.mean(dim=(2, 3), keepdim=True)
        prior = prior.expand(like.shape[0], -1, like.shape[2], like.shape[3])
        return self.top_down_levels[-1].stochastic._split(prior)

    def top_down(
        self,
        bu: list[torch.Tensor],
        eps: list[torch.Tensor | None],
        *,
        prediction: bool = False,
        compute_kl: bool = True,
    ) -> TopDownResult:
        """Top-down pass.

        Parameters
        ----------
        bu
            Bottom-up features (batch 1 broadcasts against the batch of ``eps``).
        eps
            Standard-normal noise per level (finest first); ``None`` means the mean.
        prediction
            If true, uncond levels use their posterior mean (reference ``mode_pred``).
        compute_kl
            Compute per-level KL (training); off for export.
        """
        n = max(e.shape[0] for e in eps if e is not None) if any(
            e is not None for e in eps
        ) else bu[0].shape[0]
        td: torch.Tensor | None = None
        kls: list[torch.Tensor] = []
        zs: list[torch.Tensor] = []
        for i in reversed(range(self.config.n_levels)):
            level = self.top_down_levels[i]
            uncond = self.uncond_enabled and i in self.config.uncond_levels
            bu_i = bu[i]  # None for uncond levels when only sampled levels are given (export)
            if bu_i is not None and bu_i.shape[0] != n:
                bu_i = bu_i.expand(n, -1, -1, -1)
            mu_q, lv_q = level.stochastic.posterior(level.q_input(td, bu_i, uncond))
            e = eps[i]
            if e is None or (prediction and uncond):
                z = mu_q
            else:
                z = mu_q + torch.exp(0.5 * lv_q) * e
            if compute_kl:
                mu_p, lv_p = self._top_prior(mu_q) if level.is_top else level.stochastic.prior(td)
                kls.append(gaussian_kl(mu_q, lv_q, mu_p, lv_p).sum(dim=(1, 2, 3)))
            zs.append(z)
            td = level.finish(z, td)
        signal = self.output_conv(self.final_top_down(td))
        kls.reverse()
        zs.reverse()
        return TopDownResult(signal=signal, kl=kls, z=zs)

    def draw_eps(
        self, n: int, height: int, width: int, generator: torch.Generator | None = None
    ) -> list[torch.Tensor]:
        """Standard-normal eps for every level, from ``generator`` when given."""
        device = self.top_prior.device
        return [
            torch.randn((n, *shape), generator=generator, device=device)
            for shape in self.latent_shapes(height, width)
        ]

    def forward(
        self, x: torch.Tensor, eps: list[torch.Tensor | None] | None = None,
        generator: torch.Generator | None = None,
    ) -> TopDownResult:
        """Training pass: posterior samples at every level, with per-level KL."""
        if eps is None:
            eps = self.draw_eps(x.shape[0], x.shape[2], x.shape[3], generator)
        return self.top_down(self.bottom_up(x), eps)

    @torch.no_grad()
    def sample_prior(
        self, n: int, height: int, width: int, generator: torch.Generator | None = None,
        temperature: float = 1.0,
    ) -> torch.Tensor:
        """Generation: ``n`` images (n, 1, height, width), normalised units, drawn from the
        prior top-down: z_top ~ p(z_top), then z_i ~ p(z_i | z_>i) level by level (the
        reference's generation notebooks). ``height`` and ``width`` must be multiples of
        2**levels; the learned top prior is broadcast (spatially averaged) at sizes other
        than the training patch's. ``temperature`` scales every eps.
        """
        eps = [temperature * e for e in self.draw_eps(n, height, width, generator)]
        td: torch.Tensor | None = None
        like = torch.empty(n, 1, height // self.config.spatial_multiple,
                           width // self.config.spatial_multiple, device=self.top_prior.device)
        for i in reversed(range(self.config.n_levels)):
            level = self.top_down_levels[i]
            mu, logvar = self._top_prior(like) if level.is_top else level.stochastic.prior(td)
            td = level.finish(mu + torch.exp(0.5 * logvar) * eps[i], td)
        return self.output_conv(self.final_top_down(td))

    @torch.no_grad()
    def sample_posterior(
        self, x: torch.Tensor, n_samples: int, generator: torch.Generator | None = None,
        eps: list[torch.Tensor | None] | None = None,
    ) -> torch.Tensor:
        """Prediction: ``n_samples`` posterior samples of the signal for one image x (1,1,H,W).

        The bottom-up half runs once; the top-down half once for the batch of samples.
        """
        bu = self.bottom_up(x)
        if eps is None:
            eps = self.draw_eps(n_samples, x.shape[2], x.shape[3], generator)
        return self.top_down(bu, eps, prediction=True, compute_kl=False).signal


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (trainable or not), as the reference counts them."""
    return sum(p.numel() for p in model.parameters())
