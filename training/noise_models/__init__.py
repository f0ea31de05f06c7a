"""Noise models p(x|s): known Gaussian, Gaussian mixture (GMM), 2D histogram, and known
Gaussian noise plus line artefacts (row/column offsets, :mod:`.lines`).

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
from .lines import LINE_AXES, LineArtefactNoiseModel, estimate_line_std

__all__ = [
    "GMM_KEYS",
    "MIN_SIGMA_FRACTION",
    "TOL",
    "GaussianNoiseModel",
    "GMMNoiseModel",
    "HistogramNoiseModel",
    "LINE_AXES",
    "LineArtefactNoiseModel",
    "NoiseModel",
    "PathLike",
    "load_noise_model",
    "noise_model_from_state",
    "estimate_line_std",
    "write_atomically",
]
