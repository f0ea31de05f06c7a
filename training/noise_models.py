"""Noise models p(x|s): known Gaussian, Gaussian mixture (GMM) and 2D histogram.

Every model honours one small contract (see ``docs`` of hdn-deploy):

- ``log_likelihood(observation, signal) -> Tensor``: elementwise log p(x|s), both in raw
  (de-normalised) intensity units, same shape, differentiable w.r.t. ``signal``; it runs
  on whatever device and floating dtype ``signal`` has.
- ``variance(signal) -> np.ndarray``: the model's noise variance at each signal value
  (for plots, summaries and tests).
- ``state() -> (meta, arrays)``: JSON-able metadata (with ``"kind"``) and numpy arrays;
  :func:`noise_model_from_state` rebuilds the model (checkpoints keep ``meta`` in their
  JSON header and ``arrays`` as safetensors tensors).

Files: :func:`load_noise_model` reads the GMM interchange ``.npz`` (keys
``trained_weight``, ``min_signal``, ``max_signal``, ``min_sigma``, the layout of the
DivNoising / PPN2V / HDN family) and histogram files (``.npy`` or ``.npz`` key
``histogram``).
"""
from __future__ import annotations

import math
import os
import zipfile
from pathlib import Path
from typing import IO, Any, Callable, Mapping, Union

import numpy as np
import torch

from hdn_deploy.atomic import atomic_path
from tqdm.auto import tqdm

from hdn_deploy.errors import ConfigError, InputError, PackageError

TOL = 1e-10
"""Added to every likelihood (and, as in the reference, inside the GMM weight exponent)."""

GMM_KEYS = ("trained_weight", "min_signal", "max_signal", "min_sigma")
"""Keys of the GMM interchange ``.npz`` file, exactly as DivNoising / PPN2V / HDN write them."""

MIN_SIGMA_FRACTION = 1e-4
"""Default GMM variance floor, as a fraction of the mean squared residual of the pairs."""

PathLike = Union[str, "os.PathLike[str]"]

__all__ = [
    "GaussianNoiseModel",
    "GMMNoiseModel",
    "HistogramNoiseModel",
    "NoiseModel",
    "load_noise_model",
    "noise_model_from_state",
    "write_atomically",
]


# --------------------------------------------------------------------------- helpers
def write_atomically(path: PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Write a file through a temporary file in the same folder, then ``os.replace`` it.

    Parameters
    ----------
    path
        Destination. Its folder must exist.
    write
        Called with a binary file handle open for writing.

    Returns
    -------
    Path
        ``path``. Readers never see a half-written file; on error nothing is left behind.
    """
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        write(handle)
    return path


def _pairs(signal: np.ndarray, observation: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flat float32 copies of matching, finite, non-empty (signal, observation) arrays."""
    s = np.asarray(signal, dtype=np.float32).reshape(-1)
    x = np.asarray(observation, dtype=np.float32).reshape(-1)
    if s.shape != x.shape:
        raise InputError(
            f"signal and observation hold {s.size} and {x.size} values; they must be "
            "pixel pairs of the same size"
        )
    if s.size == 0:
        raise InputError("no (signal, observation) pairs were given")
    for name, arr in (("signal", s), ("observation", x)):
        if not np.isfinite(arr).all():
            raise InputError(f"the {name} values contain NaN or Inf; remove or replace them")
    return s, x


def _float_tensor_like(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    dtype = like.dtype if like.is_floating_point() else torch.float32
    return values.to(device=like.device, dtype=dtype)


# --------------------------------------------------------------------------- Gaussian
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


# --------------------------------------------------------------------------- GMM
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
        for name, value in (("n_gaussian", n_gaussian), ("n_coeff", n_coeff),
                            ("iterations", iterations), ("batch_size", batch_size)):
            if int(value) != value or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if not learning_rate > 0:
            raise ConfigError(f"learning_rate must be positive, got {learning_rate!r}")
        s, x = _pairs(signal, observation)
        lo = float(s.min()) if min_signal is None else float(min_signal)
        hi = float(s.max()) if max_signal is None else float(max_signal)
        if not hi > lo:
            raise InputError(
                f"the signal range is empty (min {lo:g}, max {hi:g}); a noise model needs "
                "signal pairs that span a range of intensities"
            )
        rng = np.random.default_rng(seed)
        take = rng.choice(s.size, size=min(s.size, 1_000_000), replace=False)
        mean_sq = float(np.mean((x[take].astype(np.float64) - s[take]) ** 2))
        if min_sigma is None:
            min_sigma = max(MIN_SIGMA_FRACTION * mean_sq, np.finfo(np.float32).tiny)
        if not (math.isfinite(min_sigma) and min_sigma >= 0):
            raise ConfigError(f"min_sigma must be a non-negative number, got {min_sigma!r}")
        init = _initial_weight(
            s[take], x[take], n_gaussian=int(n_gaussian), n_coeff=int(n_coeff), min_signal=lo,
            max_signal=hi, min_sigma=float(min_sigma), rng=rng,
        )
        model = cls(init, min_signal=lo, max_signal=hi, min_sigma=float(min_sigma))
        _train_gmm(model, s, x, iterations=int(iterations), batch_size=int(batch_size),
                   learning_rate=learning_rate, rng=rng, device=torch.device(device),
                   mean_scale=math.sqrt(mean_sq) or 1.0, progress=progress)
        return model


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


def _initial_weight(s: np.ndarray, x: np.ndarray, *, n_gaussian: int, n_coeff: int,
                    min_signal: float, max_signal: float, min_sigma: float,
                    rng: np.random.Generator) -> np.ndarray:
    """Start values: variance linear in t from a least-squares fit to (x - s)^2."""
    t = (s.astype(np.float64) - min_signal) / (max_signal - min_signal)
    r2 = (x.astype(np.float64) - s) ** 2
    total = max(float(r2.mean()), min_sigma, np.finfo(np.float32).tiny)
    slope, intercept = 0.0, total
    if n_coeff >= 2 and np.ptp(t) > 0:
        slope, intercept = (float(v) for v in np.polyfit(t, r2, 1))
    small = 1e-3 * total
    var_coeffs = np.full(n_coeff, math.log(small))
    var_coeffs[0] = math.log(max(intercept, min_sigma, small))
    if n_coeff >= 2:
        var_coeffs[1] = math.log(max(slope, small))
    weight = np.zeros((3 * n_gaussian, n_coeff))
    spread = np.linspace(-0.35, 0.35, n_gaussian)  # log factors, mean factor 1
    spread -= math.log(np.exp(spread).mean())
    for k in range(n_gaussian):
        weight[k, 0] = rng.normal(0.0, 0.1) * math.sqrt(total)
        weight[n_gaussian + k] = var_coeffs + spread[k]
        weight[2 * n_gaussian + k] = rng.normal(0.0, 0.1, size=n_coeff)
    return weight.astype(np.float32)


def _train_gmm(model: GMMNoiseModel, s: np.ndarray, x: np.ndarray, *, iterations: int,
               batch_size: int, learning_rate: float, rng: np.random.Generator,
               device: torch.device, mean_scale: float, progress: bool) -> None:
    """Adam on the mean NLL of shuffled minibatches; updates ``model.weight`` in place."""
    n = model.n_gaussian
    scale = torch.ones_like(model.weight)
    scale[:n] = mean_scale  # mean rows are optimised in units of the RMS noise
    scale = scale.to(device)
    param = (model.weight.to(device) / scale).requires_grad_(True)
    optimizer = torch.optim.Adam([param], lr=learning_rate)
    size = s.size
    order, pos = None, 0
    bar = tqdm(range(iterations), desc="fitting noise model", unit="it", disable=not progress)
    try:
        for step in bar:
            if batch_size >= size:
                idx = slice(None)
            else:
                if order is None or pos + batch_size > size:
                    order, pos = rng.permutation(size), 0
                idx, pos = order[pos : pos + batch_size], pos + batch_size
            sig = torch.from_numpy(s[idx]).to(device)
            obs = torch.from_numpy(x[idx]).to(device)
            model.weight = param * scale
            loss = -model.log_likelihood(obs, sig).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if step % 50 == 0 or step == iterations - 1:
                value = float(loss.detach())
                if not math.isfinite(value):
                    raise InputError(
                        f"the noise-model fit diverged (loss {value} at iteration {step}); "
                        "try a larger min_sigma or check the signal/observation pairs"
                    )
                bar.set_postfix(nll=f"{value:.4g}")
    finally:
        bar.close()
        model.weight = (param * scale).detach().to("cpu", torch.float32).clone()


# --------------------------------------------------------------------------- histogram
class HistogramNoiseModel:
    """Noise model from a 2D histogram of (signal, observation) pairs.

    ``histogram`` has shape (3, bins, bins): ``[0]`` p(x|s) per signal row (row i = signal
    bin i, column j = observation bin j) as a density (each non-empty row integrates to
    1 over x), ``[1]`` and ``[2]`` the lower and upper bin edges (``[1][j, :]`` = lower
    edge of bin j, the PPN2V layout). Signal and observation share the same bins.
    The likelihood interpolates linearly between signal-bin centres (so it is
    differentiable w.r.t. the signal) and looks up the observation's bin; empty rows give
    likelihood 1e-10. PPN2V files, whose rows sum to 1 instead, are converted on load.

    Parameters
    ----------
    histogram
        Array of shape (3, bins, bins), bins >= 2, as described above.
    """

    kind = "histogram"

    def __init__(self, histogram: np.ndarray):
        hist = np.asarray(histogram, dtype=np.float64)
        problem = _histogram_problem(hist)
        if problem:
            raise ConfigError(f"invalid histogram noise model: {problem}")
        self.histogram = hist.copy()
        self._density = torch.from_numpy(hist[0].astype(np.float32))

    def __repr__(self) -> str:
        return (f"HistogramNoiseModel(bins={self.bins}, min_value={self.min_value:g}, "
                f"max_value={self.max_value:g})")

    @property
    def bins(self) -> int:
        """Bins along each axis."""
        return self.histogram.shape[1]

    @property
    def min_value(self) -> float:
        """Lower edge of the first bin."""
        return float(self.histogram[1].min())

    @property
    def max_value(self) -> float:
        """Upper edge of the last bin."""
        return float(self.histogram[2].max())

    @classmethod
    def fit(cls, signal: np.ndarray, observation: np.ndarray, *, bins: int = 256,
            min_value: float | None = None, max_value: float | None = None
            ) -> "HistogramNoiseModel":
        """Histogram (signal, observation) pairs over [min_value, max_value] on both axes.

        Parameters
        ----------
        signal, observation
            Pixel pairs of equal size, raw intensity units.
        bins
            Bins per axis (>= 2).
        min_value, max_value
            Histogram range; default the joint range of signal and observation.

        Returns
        -------
        HistogramNoiseModel
        """
        if int(bins) != bins or bins < 2:
            raise ConfigError(f"bins must be an integer >= 2, got {bins!r}")
        s, x = _pairs(signal, observation)
        lo = float(min(s.min(), x.min())) if min_value is None else float(min_value)
        hi = float(max(s.max(), x.max())) if max_value is None else float(max_value)
        if not hi > lo:
            raise InputError(f"the histogram range is empty (min {lo:g}, max {hi:g})")
        counts, edges, _ = np.histogram2d(s, x, bins=int(bins), range=[[lo, hi], [lo, hi]])
        width = np.diff(edges)
        sums = counts.sum(axis=1, keepdims=True)
        density = np.divide(counts, sums * width[None, :], out=np.zeros_like(counts),
                            where=sums > 0)
        hist = np.empty((3, int(bins), int(bins)))
        hist[0] = density
        hist[1] = edges[:-1, None]
        hist[2] = edges[1:, None]
        return cls(hist)

    def _edges(self) -> np.ndarray:
        return np.append(self.histogram[1][:, 0], self.histogram[2][-1, 0])

    def log_likelihood(self, observation: torch.Tensor, signal: torch.Tensor) -> torch.Tensor:
        """Elementwise log(p(x|s) + 1e-10), linear in s between signal-bin centres."""
        density = _float_tensor_like(self._density, signal)
        b = self.bins
        scale = b / (self.max_value - self.min_value)
        x = observation.to(device=signal.device, dtype=density.dtype)
        obs_idx = torch.clamp((x - self.min_value) * scale, 0, b - 1).floor().long()
        sf = torch.clamp((signal - self.min_value) * scale - 0.5, 0, b - 1)
        s0 = torch.clamp(sf.detach().floor(), max=b - 2)
        frac = sf - s0
        s0 = s0.long()
        p = density[s0, obs_idx] * (1.0 - frac) + density[s0 + 1, obs_idx] * frac
        return torch.log(p + TOL)

    def variance(self, signal: np.ndarray) -> np.ndarray:
        """Variance of x under each signal row (uniform within bins), interpolated.

        Rows without data are skipped; outside the covered range the nearest row's value
        is used. NaN everywhere if the histogram is empty.
        """
        edges = self._edges()
        width = np.diff(edges)
        centres = 0.5 * (edges[:-1] + edges[1:])
        mass = self.histogram[0] * width[None, :]
        total = mass.sum(axis=1)
        ok = total > 0
        signal = np.asarray(signal, dtype=np.float64)
        if not ok.any():
            return np.full(signal.shape, np.nan)
        m = mass[ok] / total[ok, None]
        mean = m @ centres
        var = m @ (centres**2 + width**2 / 12.0) - mean**2
        return np.interp(signal, centres[ok], var)

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """``({"kind": "histogram", "bins", "min_value", "max_value"}, {"histogram": ...})``."""
        meta = {"kind": self.kind, "bins": self.bins, "min_value": self.min_value,
                "max_value": self.max_value}
        return meta, {"histogram": self.histogram.copy()}

    def save(self, path: PathLike) -> Path:
        """Write ``.npy`` (the bare array) or ``.npz`` (key ``histogram``) atomically."""
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix == ".npy":
            return write_atomically(path, lambda h: np.save(h, self.histogram))
        if suffix == ".npz":
            return write_atomically(path, lambda h: np.savez(h, histogram=self.histogram))
        raise InputError(f"{path}: a histogram noise model is saved as .npy or .npz")

    @classmethod
    def load(cls, path: PathLike) -> "HistogramNoiseModel":
        """Read a ``.npy`` array or ``.npz`` key ``histogram``; wrong layout -> InputError."""
        path = Path(path)
        if _magic(path) == "npz":
            arrays = _read_npz(path)
            if "histogram" not in arrays:
                raise InputError(f"{path}: no key 'histogram' (found {sorted(arrays)})")
            hist = np.asarray(arrays["histogram"])
        else:
            try:
                hist = np.load(path, allow_pickle=False)
            except (OSError, ValueError, EOFError) as exc:
                raise InputError(f"{path}: cannot read as a .npy array ({exc})") from exc
        if not np.issubdtype(hist.dtype, np.number):
            raise InputError(f"{path}: histogram must be numeric, got dtype {hist.dtype}")
        hist = _as_density(np.asarray(hist, dtype=np.float64), path)
        problem = _histogram_problem(hist)
        if problem:
            raise InputError(f"{path}: invalid histogram noise model: {problem}")
        return cls(hist)


def _histogram_problem(hist: np.ndarray) -> str | None:
    if hist.ndim != 3 or hist.shape[0] != 3 or hist.shape[1] != hist.shape[2] or hist.shape[1] < 2:
        return f"expected an array of shape (3, bins, bins) with bins >= 2, got {hist.shape}"
    if not np.isfinite(hist).all():
        return "the array contains NaN or Inf"
    if (hist[0] < 0).any():
        return "negative probabilities in histogram[0]"
    lower, upper = hist[1][:, 0], hist[2][:, 0]
    if not (np.all(upper > lower) and np.all(np.diff(lower) > 0)):
        return "bin edges in histogram[1] / histogram[2] must increase"
    return None


def _as_density(hist: np.ndarray, path: Path) -> np.ndarray:
    """Convert PPN2V files (rows sum to 1) to per-bin densities (rows integrate to 1)."""
    if hist.ndim != 3 or hist.shape[0] != 3 or hist.shape[1] != hist.shape[2]:
        return hist  # reported by _histogram_problem
    width = hist[2][:, 0] - hist[1][:, 0]
    sums = hist[0].sum(axis=1)
    rows = sums > 1e-20
    if not rows.any():
        return hist
    integrals = (hist[0] * width[None, :]).sum(axis=1)
    if np.allclose(integrals[rows], 1.0, atol=1e-3):
        return hist
    if np.allclose(sums[rows], 1.0, atol=1e-3):
        out = hist.copy()
        out[0] = hist[0] / width[None, :]
        return out
    raise InputError(
        f"{path}: histogram rows are neither densities (integrating to 1) nor "
        "probabilities (summing to 1); normalise each signal row of histogram[0]"
    )


# --------------------------------------------------------------------------- files, state
NoiseModel = Union[GaussianNoiseModel, GMMNoiseModel, HistogramNoiseModel]


def _magic(path: Path) -> str:
    if not path.is_file():
        raise InputError(f"{path}: noise-model file not found")
    with open(path, "rb") as handle:
        head = handle.read(6)
    if head.startswith(b"PK"):
        return "npz"
    if head == b"\x93NUMPY":
        return "npy"
    raise InputError(
        f"{path}: not a NumPy .npz/.npy noise-model file; create one with "
        "`hdn-deploy noise-model calibrate` or `... bootstrap`"
    )


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    if _magic(path) != "npz":
        raise InputError(f"{path}: expected a .npz archive, found a bare .npy array")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise InputError(f"{path}: cannot read as a .npz archive ({exc})") from exc


def load_noise_model(path: PathLike) -> GMMNoiseModel | HistogramNoiseModel:
    """Load a noise-model file, dispatching on its content.

    Parameters
    ----------
    path
        A GMM interchange ``.npz`` (key ``trained_weight`` and friends) or a histogram
        ``.npy`` / ``.npz`` (key ``histogram``).

    Returns
    -------
    GMMNoiseModel or HistogramNoiseModel

    Raises
    ------
    InputError
        Missing file, not a NumPy file, or an unknown / invalid layout; the message
        names the file.
    """
    path = Path(path)
    if _magic(path) == "npy":
        return HistogramNoiseModel.load(path)
    keys = _read_npz(path)
    if "trained_weight" in keys:
        return GMMNoiseModel.load(path)
    if "histogram" in keys:
        return HistogramNoiseModel.load(path)
    raise InputError(
        f"{path}: unknown noise-model layout: keys {sorted(keys)}; expected "
        f"{list(GMM_KEYS)} (GMM) or ['histogram']"
    )


def noise_model_from_state(meta: Mapping[str, Any],
                           arrays: Mapping[str, np.ndarray]) -> NoiseModel:
    """Rebuild a noise model from :meth:`state` output (e.g. read from a checkpoint).

    Parameters
    ----------
    meta
        The JSON-able metadata; ``meta["kind"]`` is ``"gaussian"``, ``"gmm"`` or
        ``"histogram"``.
    arrays
        The arrays (``trained_weight`` for GMM, ``histogram`` for histogram).

    Raises
    ------
    PackageError
        Unknown kind, or missing / invalid entries.
    """
    kind = meta.get("kind")
    try:
        if kind == "gaussian":
            return GaussianNoiseModel(meta["sigma"])
        if kind == "gmm":
            return GMMNoiseModel(np.asarray(arrays["trained_weight"]),
                                 min_signal=meta["min_signal"], max_signal=meta["max_signal"],
                                 min_sigma=meta["min_sigma"])
        if kind == "histogram":
            return HistogramNoiseModel(np.asarray(arrays["histogram"]))
    except KeyError as exc:
        raise PackageError(f"noise model of kind '{kind}' lacks entry {exc}") from exc
    except ConfigError as exc:
        raise PackageError(f"stored noise model is invalid: {exc}") from exc
    raise PackageError(
        f"unknown noise-model kind {kind!r}; expected 'gaussian', 'gmm' or 'histogram'"
    )
