"""Noise models p(x|s): known Gaussian, Gaussian mixture (GMM) and 2D histogram.

One module per model (:mod:`.gaussian`, :mod:`.gmm` with its fitting in :mod:`.gmm_fit`,
:mod:`.histogram`), the contract every model honours (:class:`NoiseModel`, a Protocol, in
:mod:`.base`) and file / checkpoint-state loading (:mod:`.files`).

Files: :func:`load_noise_model` reads the GMM interchange ``.npz`` (keys
``trained_weight``, ``min_signal``, ``max_signal``, ``min_sigma``, the layout of the
DivNoising / PPN2V / HDN family) and histogram files (``.npy`` or ``.npz`` key
``histogram``).
"""
from .base import TOL, NoiseModel, PathLike, write_atomically
from .files import load_noise_model, noise_model_from_state
from .gaussian import GaussianNoiseModel
from .gmm import GMM_KEYS, GMMNoiseModel
from .gmm_fit import MIN_SIGMA_FRACTION
from .histogram import HistogramNoiseModel

__all__ = [
    "GMM_KEYS",
    "MIN_SIGMA_FRACTION",
    "TOL",
    "GaussianNoiseModel",
    "GMMNoiseModel",
    "HistogramNoiseModel",
    "NoiseModel",
    "PathLike",
    "load_noise_model",
    "noise_model_from_state",
    "write_atomically",
]
