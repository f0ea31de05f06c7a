"""Known additive Gaussian noise."""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from hdn_deploy.errors import ConfigError


class GaussianNoiseModel:
    """Known additive Gaussian noise: x = s + N(0, sigma^2).

    Parameters
    ----------
    sigma
        Noise standard deviation in raw intensity units (e.g. 25 for 8-bit images).
    """

    kind = "gaussian"

    def __init__(self, sigma: float):
        sigma = float(sigma)
        if not math.isfinite(sigma) or sigma <= 0:
            raise ConfigError(f"Gaussian noise sigma must be a positive number, got {sigma}")
        self.sigma = sigma

    def __repr__(self) -> str:
        return f"GaussianNoiseModel(sigma={self.sigma:g})"

    def log_likelihood(self, observation: torch.Tensor, signal: torch.Tensor) -> torch.Tensor:
        """Elementwise log N(x; s, sigma^2) = -(x-s)^2/(2 sigma^2) - log(sigma sqrt(2 pi))."""
        observation = observation.to(device=signal.device, dtype=signal.dtype)
        return -((observation - signal) ** 2) / (2.0 * self.sigma**2) - math.log(
            self.sigma * math.sqrt(2.0 * math.pi)
        )

    def variance(self, signal: np.ndarray) -> np.ndarray:
        """sigma^2 at every signal value."""
        return np.full(np.shape(signal), self.sigma**2, dtype=np.float64)

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """``({"kind": "gaussian", "sigma": sigma}, {})``."""
        return {"kind": self.kind, "sigma": self.sigma}, {}

