"""Signal-dependent Gaussian-mixture noise model (the DivNoising / PPN2V / HDN layout).

Fitting lives in :mod:`.gmm_fit`; the file layout is the interchange ``.npz`` with keys
``trained_weight``, ``min_signal``, ``max_signal``, ``min_sigma``.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hdn_deploy.errors import ConfigError, InputError

from .base import TOL, PathLike, _float_tensor_like, _read_npz, write_atomically

GMM_KEYS = ("trained_weight", "min_signal", "max_signal", "min_sigma")
"""Keys of the GMM interchange ``.npz`` file, exactly as DivNoising / PPN2V / HDN write them."""


class GMMNoiseModel:
    """Signal-dependent Gaussian-mixture noise model (DivNoising / PPN2V / HDN layout).

    With t = (s - min_signal) / (max_signal - min_signal) and the polynomial
    p(w, t) = sum_i w[i] t^i, component k has mean p(weight[k]), variance
    max(p(exp(weight[n_gaussian + k])), min_sigma) (``exp`` on the coefficients; the
    floor ``min_sigma`` applies to the *variance*, despite its name) and weight
    exp(p(weight[2 n_gaussian + k]) + 1e-10), normalised to sum 1. The component means
    are shifted so the mixture mean equals s. The likelihood is the mixture density
    plus 1e-10. Files written by the reference tools load and give the same likelihood.

    Parameters
    ----------
    weight
        Array of shape (3 * n_gaussian, n_coeff): rows of mean, variance and weight
        coefficients.
    min_signal, max_signal
        Signal range that maps to t in [0, 1].
    min_sigma
        Floor of every component's variance, in raw intensity units squared.

    See Also
    --------
    GMMNoiseModel.fit : fit the model to (signal, observation) pairs.
    GMMNoiseModel.load : read the interchange ``.npz`` file.
    """

    kind = "gmm"

    def __init__(
        self,
        weight: np.ndarray | torch.Tensor,
        *,
        min_signal: float,
        max_signal: float,
        min_sigma: float,
    ):
        problem = _gmm_problem(np.asarray(torch.as_tensor(weight).detach().cpu()),
                               min_signal, max_signal, min_sigma)
        if problem:
            raise ConfigError(f"invalid GMM noise model: {problem}")
        self.weight = torch.as_tensor(weight).detach().to("cpu", torch.float32).clone()
        self.min_signal = float(min_signal)
        self.max_signal = float(max_signal)
        self.min_sigma = float(min_sigma)

    def __repr__(self) -> str:
        return (
            f"GMMNoiseModel(n_gaussian={self.n_gaussian}, n_coeff={self.n_coeff}, "
            f"min_signal={self.min_signal:g}, max_signal={self.max_signal:g}, "
            f"min_sigma={self.min_sigma:g})"
        )

    @property
    def n_gaussian(self) -> int:
        """Number of mixture components."""
        return self.weight.shape[0] // 3

    @property
    def n_coeff(self) -> int:
        """Polynomial coefficients per parameter (2: linear in the signal)."""
        return self.weight.shape[1]

    # -- the reference math -------------------------------------------------------------
    def _normalised_signal(self, signal: torch.Tensor) -> torch.Tensor:
        # float32 range, as the reference computes it from float32 tensors
        span = float(np.float32(self.max_signal) - np.float32(self.min_signal))
        return ((signal - self.min_signal) / span).unsqueeze(-1)

    @staticmethod
    def _poly(coeffs: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        value = 0
        for i in range(coeffs.shape[1]):
            value = value + coeffs[:, i] * t**i
        return value

    def gaussian_parameters(
        self, signal: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Component means, standard deviations and weights at ``signal``.

        Parameters
        ----------
        signal
            Signal values (raw units), any shape.

        Returns
        -------
        mu, std, alpha
            Tensors of shape ``signal.shape + (n_gaussian,)``; ``alpha`` sums to 1 over
            the last axis and ``sum(alpha * mu) == signal``.
        """
        n = self.n_gaussian
        weight = _float_tensor_like(self.weight, signal)
        t = self._normalised_signal(signal)
        mu = self._poly(weight[:n], t)
        var = torch.clamp(self._poly(torch.exp(weight[n : 2 * n]), t), min=self.min_sigma)
        std = torch.sqrt(var)
        alpha = torch.exp(self._poly(weight[2 * n :], t) + TOL)
        alpha = alpha / alpha.sum(dim=-1, keepdim=True)
        mu = mu - (alpha * mu).sum(dim=-1, keepdim=True) + signal.unsqueeze(-1)
        return mu, std, alpha

    def likelihood(self, observation: torch.Tensor, signal: torch.Tensor) -> torch.Tensor:
        """Elementwise p(x|s) + 1e-10 (the reference ``likelihood``)."""
        mu, std, alpha = self.gaussian_parameters(signal)
        x = observation.to(device=signal.device, dtype=mu.dtype).unsqueeze(-1)
        dens = torch.exp(-((x - mu) ** 2) / (2.0 * std * std)) / torch.sqrt(
            (2.0 * np.pi) * std * std
        )
        return (dens * alpha).sum(dim=-1) + TOL

    def log_likelihood(self, observation: torch.Tensor, signal: torch.Tensor) -> torch.Tensor:
        """Elementwise log(p(x|s) + 1e-10); differentiable w.r.t. ``signal``."""
        return torch.log(self.likelihood(observation, signal))

    def variance(self, signal: np.ndarray) -> np.ndarray:
        """Mixture variance sum_k alpha_k (std_k^2 + (mu_k - s)^2) at each signal value."""
        s = torch.as_tensor(np.asarray(signal, dtype=np.float64))
        with torch.no_grad():
            mu, std, alpha = self.gaussian_parameters(s)
            var = (alpha * (std**2 + (mu - s.unsqueeze(-1)) ** 2)).sum(dim=-1)
        return var.numpy()

    # -- persistence --------------------------------------------------------------------
    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Metadata (kind, sizes, signal range, min_sigma) and ``{"trained_weight": ...}``."""
        meta = {
            "kind": self.kind,
            "n_gaussian": self.n_gaussian,
            "n_coeff": self.n_coeff,
            "min_signal": self.min_signal,
            "max_signal": self.max_signal,
            "min_sigma": self.min_sigma,
        }
        return meta, {"trained_weight": self.weight.numpy().copy()}

    def save(self, path: PathLike) -> Path:
        """Write the interchange ``.npz`` (keys ``trained_weight``, ``min_signal``,
        ``max_signal``, ``min_sigma``) atomically; readable by the reference tools."""
        arrays = {
            "trained_weight": self.weight.numpy(),
            "min_signal": np.array([self.min_signal], dtype=np.float32),
            "max_signal": np.array([self.max_signal], dtype=np.float32),
            "min_sigma": np.array(self.min_sigma, dtype=np.float64),
        }
        return write_atomically(path, lambda handle: np.savez(handle, **arrays))

    @classmethod
    def load(cls, path: PathLike) -> "GMMNoiseModel":
        """Read an interchange ``.npz``; a wrong layout raises InputError naming the file.

        Scalars may be stored as 0-d or 1-element arrays (the reference writes both).
        """
        path = Path(path)
        arrays = _read_npz(path)
        missing = [k for k in GMM_KEYS if k not in arrays]
        if missing:
            raise InputError(
                f"{path}: not a GMM noise-model file: missing key(s) {missing} "
                f"(found {sorted(arrays)}; expected {list(GMM_KEYS)})"
            )
        scalars = {}
        for key in GMM_KEYS[1:]:
            value = np.asarray(arrays[key])
            if value.size != 1 or not np.issubdtype(value.dtype, np.number):
                raise InputError(
                    f"{path}: key '{key}' must hold one number, got an array of shape "
                    f"{value.shape} and dtype {value.dtype}"
                )
            scalars[key] = float(value.reshape(-1)[0])
        weight = np.asarray(arrays["trained_weight"])
        problem = _gmm_problem(weight, **scalars)
        if problem:
            raise InputError(f"{path}: invalid GMM noise model: {problem}")
        return cls(weight.astype(np.float32), **scalars)

    # -- fitting ------------------------------------------------------------------------
    @classmethod
    def fit(
        cls,
        signal: np.ndarray,
        observation: np.ndarray,
        *,
        n_gaussian: int = 3,
        n_coeff: int = 2,
        min_sigma: float | None = None,
        min_signal: float | None = None,
        max_signal: float | None = None,
        iterations: int = 2000,
        batch_size: int = 250_000,
        learning_rate: float = 0.1,
        seed: int = 0,
        device: str | torch.device = "cpu",
        progress: bool = True,
    ) -> "GMMNoiseModel":
        """Fit a GMM noise model to (signal, observation) pixel pairs by mean NLL.

        Adam on shuffled minibatches, as the reference. Two deliberate differences,
        neither of which changes the file layout or the likelihood:

        - the weights start from a moment fit (variance linear in the signal, regressed
          on the squared residuals; the components' variances spread by factors
          ~0.7-1.4 around it; small random mean offsets and mixture weights), so few
          iterations suffice;
        - the mean coefficients are optimised in units of the RMS noise, so the learning
          rate means the same for 8-bit, 16-bit and float data.

        Parameters
        ----------
        signal, observation
            Pixel pairs of equal size (any shape; flattened), raw intensity units.
        n_gaussian, n_coeff
            Mixture components and polynomial coefficients (2 = linear in the signal).
        min_sigma
            Floor of each component's variance (raw units squared). ``None`` (default):
            ``1e-4`` x the mean squared residual (x - s)^2, i.e. a standard-deviation
            floor at 1 % of the RMS noise: it only stops components collapsing.
        min_signal, max_signal
            Signal range mapped to [0, 1]; default the range of ``signal``.
        iterations, batch_size, learning_rate
            Adam steps, pairs per step (all pairs when there are fewer), step size.
        seed
            Seeds the initialisation and the shuffling.
        device
            Torch device to fit on.
        progress
            Show a tqdm progress bar.

        Returns
        -------
        GMMNoiseModel
        """
        from .gmm_fit import fit_gmm

        return fit_gmm(cls, signal, observation, n_gaussian=n_gaussian, n_coeff=n_coeff,
                       min_sigma=min_sigma, min_signal=min_signal, max_signal=max_signal,
                       iterations=iterations, batch_size=batch_size,
                       learning_rate=learning_rate, seed=seed, device=device, progress=progress)


def _gmm_problem(weight: np.ndarray, min_signal: float, max_signal: float,
                 min_sigma: float) -> str | None:
    """What is wrong with these GMM parameters, or None."""
    if weight.ndim != 2 or weight.shape[0] < 3 or weight.shape[0] % 3 or weight.shape[1] < 1:
        return (f"trained_weight must have shape (3 * n_gaussian, n_coeff), got "
                f"{weight.shape}")
    if not np.issubdtype(weight.dtype, np.number) or not np.isfinite(weight).all():
        return "trained_weight must hold finite numbers"
    values = {"min_signal": min_signal, "max_signal": max_signal, "min_sigma": min_sigma}
    for key, value in values.items():
        if not math.isfinite(float(value)):
            return f"{key} must be finite, got {value}"
    if not float(max_signal) > float(min_signal):
        return f"max_signal ({max_signal}) must exceed min_signal ({min_signal})"
    if float(min_sigma) < 0:
        return f"min_sigma must be non-negative, got {min_sigma}"
    return None
