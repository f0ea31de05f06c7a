"""Building blocks of the HDN ladder VAE (reference layout, see HDN-SPEC.md)."""
from __future__ import annotations

import torch
from torch import nn


class GateLayer(nn.Module):
    """1x1 conv to 2C channels; ELU(half) * sigmoid(other half)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, 2 * channels, 1)
        self.nonlin = nn.ELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, gate = torch.chunk(self.conv(x), 2, dim=1)
        return self.nonlin(x) * torch.sigmoid(gate)


class ResidualBlock(nn.Module):
    """[BatchNorm, ELU, 3x3 conv, Dropout2d] x 2, optional gate, plus the input."""

    def __init__(self, channels: int, *, batchnorm: bool, dropout: float, gated: bool):
        super().__init__()
        modules: list[nn.Module] = []
        for _ in range(2):
            if batchnorm:
                modules.append(nn.BatchNorm2d(channels))
            modules.append(nn.ELU())
            modules.append(nn.Conv2d(channels, channels, 3, padding=1))
            if dropout > 0:
                modules.append(nn.Dropout2d(dropout))
        if gated:
            modules.append(GateLayer(channels))
        self.block = nn.Sequential(*modules)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x) + x


class ResampleBlock(nn.Module):
    """Optional stride-2 (transposed) conv followed by a residual block."""

    def __init__(self, channels: int, *, resample: str | None, **block_kwargs):
        super().__init__()
        if resample == "down":
            self.pre_conv: nn.Module = nn.Conv2d(channels, channels, 3, stride=2, padding=1)
        elif resample == "up":
            self.pre_conv = nn.ConvTranspose2d(
                channels, channels, 3, stride=2, padding=1, output_padding=1
            )
        else:
            self.pre_conv = nn.Identity()
        self.res = ResidualBlock(channels, **block_kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res(self.pre_conv(x))


class MergeLayer(nn.Module):
    """concat(a, b) -> 1x1 conv (2C -> C) -> gated residual block."""

    def __init__(self, channels: int, **block_kwargs):
        super().__init__()
        self.conv = nn.Conv2d(2 * channels, channels, 1)
        self.res = ResidualBlock(channels, **block_kwargs)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.res(self.conv(torch.cat([a, b], dim=1)))


def _blocks(n: int, channels: int, resample: str, block_kwargs: dict) -> nn.Sequential:
    return nn.Sequential(
        *[
            ResampleBlock(channels, resample=resample if i == 0 else None, **block_kwargs)
            for i in range(n)
        ]
    )


class BottomUpLevel(nn.Sequential):
    """One bottom-up level: n residual blocks, the first downsampling by 2."""

    def __init__(self, n_blocks: int, channels: int, block_kwargs: dict):
        super().__init__(*_blocks(n_blocks, channels, "down", block_kwargs))


class StochasticLevel(nn.Module):
    """Prior / posterior heads and z -> features conv of one top-down level.

    Sampling is explicit: ``z = mu + exp(logvar / 2) * eps`` with ``eps`` given by the
    caller, so the same arithmetic exports to ONNX with eps as a graph input.
    """

    def __init__(self, channels: int, z_dim: int, *, is_top: bool, logvar_clip: float):
        super().__init__()
        self.is_top = is_top
        self.logvar_clip = logvar_clip
        # Optional tighter upper bound on the posterior log-variance at inference (export
        # sets it): a posterior std far above the prior's is a model outside its training
        # regime (the reference blew up to std ~1e27 on whole images), never a useful draw.
        self.posterior_logvar_max: float | None = None
        self.conv_in_p = None if is_top else nn.Conv2d(channels, 2 * z_dim, 3, padding=1)
        self.conv_in_q = nn.Conv2d(channels, 2 * z_dim, 3, padding=1)
        self.conv_out = nn.Conv2d(z_dim, channels, 3, padding=1)

    def _split(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = torch.chunk(params, 2, dim=1)
        return mu, logvar.clamp(-self.logvar_clip, self.logvar_clip)

    def prior(self, p_input: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._split(p_input if self.conv_in_p is None else self.conv_in_p(p_input))

    def posterior(self, q_input: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self._split(self.conv_in_q(q_input))
        if self.posterior_logvar_max is not None:
            logvar = logvar.clamp(max=self.posterior_logvar_max)
        return mu, logvar


class TopDownLevel(nn.Module):
    """One top-down level: stochastic layer, stochastic skip, n blocks (first upsamples)."""

    def __init__(
        self,
        *,
        channels: int,
        z_dim: int,
        n_blocks: int,
        is_top: bool,
        stochastic_skip: bool,
        logvar_clip: float,
        block_kwargs: dict,
    ):
        super().__init__()
        self.is_top = is_top
        self.stochastic = StochasticLevel(channels, z_dim, is_top=is_top, logvar_clip=logvar_clip)
        self.merge = None if is_top else MergeLayer(channels, **block_kwargs)
        self.skip_merge = (
            MergeLayer(channels, **block_kwargs) if stochastic_skip and not is_top else None
        )
        self.deterministic = nn.Sequential(*_blocks(n_blocks, channels, "up", block_kwargs))

    def q_input(self, td: torch.Tensor | None, bu: torch.Tensor | None, uncond: bool):
        """Features the posterior head reads (top: bottom-up; uncond: top-down only)."""
        if self.is_top:
            return bu
        if uncond:
            return td
        return self.merge(bu, td)

    def finish(self, z: torch.Tensor, td: torch.Tensor | None) -> torch.Tensor:
        """Map z to features, merge the stochastic skip and run the deterministic blocks."""
        x = self.stochastic.conv_out(z)
        if self.skip_merge is not None:
            x = self.skip_merge(x, td)
        return self.deterministic(x)
