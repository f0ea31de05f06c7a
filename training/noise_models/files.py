"""Noise models from files and from checkpoint state."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from hdn_deploy.errors import ConfigError, InputError, PackageError

from .base import NoiseModel, PathLike, _magic, _read_npz
from .gaussian import GaussianNoiseModel
from .gmm import GMM_KEYS, GMMNoiseModel
from .histogram import HistogramNoiseModel
from .lines import LineArtefactNoiseModel


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
    """Rebuild a noise model from :meth:`NoiseModel.state` output (e.g. read from a checkpoint).

    Parameters
    ----------
    meta
        The JSON-able metadata; ``meta["kind"]`` is ``"gaussian"``, ``"gmm"``,
        ``"histogram"`` or ``"lines"``.
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
        if kind == "lines":
            return LineArtefactNoiseModel(noise_model_from_state(meta["pixel"], arrays),
                                          meta["row_std"], meta["column_std"])
    except KeyError as exc:
        raise PackageError(f"noise model of kind '{kind}' lacks entry {exc}") from exc
    except ConfigError as exc:
        raise PackageError(f"stored noise model is invalid: {exc}") from exc
    raise PackageError(
        f"unknown noise-model kind {kind!r}; expected 'gaussian', 'gmm', 'histogram' or 'lines'"
    )
