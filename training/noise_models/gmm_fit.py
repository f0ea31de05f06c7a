"""Fitting a GMM noise model to (signal, observation) pairs by mean NLL (Adam)."""
from __future__ import annotations

import math

import numpy as np
import torch
from tqdm.auto import tqdm

from hdn_deploy.errors import ConfigError, InputError

from .base import _pairs
from .gmm import GMMNoiseModel

MIN_SIGMA_FRACTION = 1e-4
"""Default GMM variance floor, as a fraction of the mean squared residual of the pairs."""


def fit_gmm(cls: type[GMMNoiseModel], signal: np.ndarray, observation: np.ndarray, *,
            n_gaussian: int, n_coeff: int, min_sigma: float | None, min_signal: float | None,
            max_signal: float | None, iterations: int, batch_size: int, learning_rate: float,
            seed: int, device: str | torch.device, progress: bool) -> GMMNoiseModel:
    """The body of :meth:`GMMNoiseModel.fit` (see there for the parameters)."""
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

