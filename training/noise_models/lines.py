"""Pixel noise plus line artefacts: random row and column offsets, marginalised.

Cameras and scanners add an offset to whole rows (or columns) of an image. For a structured
HDN model these offsets must be *noise* to the likelihood, or the VAE spends latents on
them and keeps them in its MMSE (a full-width line is wide enough for any latent level
from 8x8 pixels up to encode: unconditional finest levels alone do not remove it; see the
README, "Removing line artefacts").

Model of one H x W patch (residual r = x - s, raw intensity units)::

    r[i, j] = a[i] + c[j] + n[i, j],  a ~ N(0, row_std^2), c ~ N(0, column_std^2),

with n the pixel noise of any noise model (variance v[i, j] = its variance at s[i, j]). The
offsets are integrated out with the Woodbury identity: with U the (HW, H + W) indicator of
each pixel's row and column, T = diag(row_std^2, column_std^2) and D = diag(v),

    log p(x | s) = sum log p_pixel(x | s) - 1/2 log det(T) - 1/2 log det(M) + 1/2 y^T M^-1 y,
    M = T^-1 + U^T D^-1 U,  y = U^T D^-1 r,

a (H + W)-square solve per patch. For Gaussian pixel noise this is exactly
log N(r; 0, D + U T U^T); for other noise models (GMM, histogram) the offsets' term uses
the Gaussian with the model's variance (an approximation; v is not differentiated).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch

from hdn_deploy.errors import ConfigError

from .base import NoiseModel

LINE_AXES = ("rows", "columns", "both")


class LineArtefactNoiseModel:
    """A pixel noise model plus Gaussian row and/or column offsets, marginalised.

    Parameters
    ----------
    pixel
        The pixel noise model (:class:`GaussianNoiseModel`, GMM or histogram).
    row_std, column_std
        Standard deviation of the offset added to each row / each column (raw units,
        >= 0; 0 means no such artefact). See :func:`estimate_line_std`.

    ``log_likelihood`` is not elementwise: it takes (..., H, W) patches and returns, at
    every pixel, the patch's log-likelihood divided by H * W (so its mean over a batch is
    the per-pixel NLL the trainer expects).
    """

    kind = "lines"

    def __init__(self, pixel: NoiseModel, row_std: float = 0.0, column_std: float = 0.0):
        for name, value in (("row_std", row_std), ("column_std", column_std)):
            if not math.isfinite(float(value)) or float(value) < 0:
                raise ConfigError(f"line-artefact noise model: {name} must be a non-negative "
                                  f"number, got {value}")
        if isinstance(pixel, LineArtefactNoiseModel):
            raise ConfigError("line-artefact noise model: the pixel model cannot itself be one")
        self.pixel, self.row_std, self.column_std = pixel, float(row_std), float(column_std)

    def __repr__(self) -> str:
        return (f"LineArtefactNoiseModel({self.pixel!r}, row_std={self.row_std:g}, "
                f"column_std={self.column_std:g})")

    def log_likelihood(self, observation: torch.Tensor, signal: torch.Tensor) -> torch.Tensor:
        """log p(x | s) of each (..., H, W) patch / (H * W), broadcast to every pixel."""
        observation = observation.to(device=signal.device, dtype=signal.dtype)
        h, w = signal.shape[-2:]
        total = self.pixel.log_likelihood(observation, signal).sum(dim=(-2, -1))
        if self.row_std > 0 or self.column_std > 0:
            total = total + self._offsets_term(observation - signal, self._pixel_variance(signal))
        return (total / (h * w))[..., None, None].expand_as(signal)

    def _pixel_variance(self, signal: torch.Tensor) -> torch.Tensor:
        var = self.pixel.variance(signal.detach().cpu().double().numpy())
        var = torch.as_tensor(np.nan_to_num(var, nan=1.0), dtype=signal.dtype, device=signal.device)
        return var.clamp(min=1e-6)

    def _offsets_term(self, r: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
        """log N(r; 0, D + U T U^T) - log N(r; 0, D) per patch (the Woodbury form)."""
        inv = 1.0 / var
        h, w = r.shape[-2:]
        diags, rhs, log_det_t = [], [], 0.0
        if self.row_std > 0:
            diags.append(1.0 / self.row_std**2 + inv.sum(-1))
            rhs.append((r * inv).sum(-1))
            log_det_t += h * math.log(self.row_std**2)
        if self.column_std > 0:
            diags.append(1.0 / self.column_std**2 + inv.sum(-2))
            rhs.append((r * inv).sum(-2))
            log_det_t += w * math.log(self.column_std**2)
        y = torch.cat(rhs, dim=-1)
        if len(diags) == 1:  # M is diagonal
            return -0.5 * (log_det_t + diags[0].log().sum(-1)) + 0.5 * (y**2 / diags[0]).sum(-1)
        m = torch.cat([torch.cat([torch.diag_embed(diags[0]), inv], dim=-1),
                       torch.cat([inv.transpose(-2, -1), torch.diag_embed(diags[1])], dim=-1)],
                      dim=-2)
        chol = torch.linalg.cholesky(m)
        sol = torch.cholesky_solve(y[..., None], chol)[..., 0]
        log_det_m = 2.0 * torch.diagonal(chol, dim1=-2, dim2=-1).log().sum(-1)
        return -0.5 * (log_det_t + log_det_m) + 0.5 * (y * sol).sum(-1)

    def variance(self, signal: np.ndarray) -> np.ndarray:
        """Marginal variance of one pixel: the pixel model's + row_std^2 + column_std^2."""
        return self.pixel.variance(signal) + self.row_std**2 + self.column_std**2

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """``({"kind": "lines", "row_std", "column_std", "pixel": <pixel meta>}, <pixel arrays>)``."""
        meta, arrays = self.pixel.state()
        return {"kind": self.kind, "row_std": self.row_std, "column_std": self.column_std,
                "pixel": meta}, arrays


def estimate_line_std(images: Sequence[np.ndarray], axis: str, noise_variance: float) -> float:
    """Standard deviation of the line offsets in noisy images, from their line means.

    Parameters
    ----------
    images
        2D arrays (H, W), raw intensity units, each at least 3 lines long.
    axis
        ``"rows"`` (an offset per row) or ``"columns"``.
    noise_variance
        The pixel noise variance averaged over the images (raw units squared; sigma^2 for
        Gaussian noise).

    Returns
    -------
    float
        ``sqrt(max(0, var(d) / 1.5 - noise_variance / n))``, where ``d`` is the second difference
        of the line means (each line's mean minus the average of its two neighbours') and
        ``n`` the pixels per line: independent offsets give var(d) = 1.5 (std^2 +
        noise_variance / n), while the image content, smooth from line to line, adds little.
        Content that changes sharply between lines is counted as offset (an over-estimate,
        which makes the model treat some of it as noise).
    """
    if axis not in ("rows", "columns"):
        raise ConfigError(f"axis must be 'rows' or 'columns', got {axis!r}")
    diffs, per_line = [], []
    for image in images:
        image = np.asarray(image, dtype=np.float64)
        means = image.mean(axis=1 if axis == "rows" else 0)
        if means.size < 3:
            raise ConfigError(f"line-offset estimate needs images of >= 3 {axis}, got {image.shape}")
        diffs.append(means[1:-1] - 0.5 * (means[:-2] + means[2:]))
        per_line.append(image.shape[1 if axis == "rows" else 0])
    d = np.concatenate(diffs)
    n = float(np.mean(per_line))
    return float(math.sqrt(max(0.0, d.var() / 1.5 - noise_variance / n)))
