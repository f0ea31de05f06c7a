"""Refuse (or flag) inputs whose intensities lie outside what the model has seen.

A model only knows the intensities it was trained and calibrated on: fed a uint16 image
of 1,200-5,900 counts, the bundled model (noise model calibrated on signals of about
-2 to 267) returns an image with 3x the error of its input, and no error is raised by the
network. So every input is compared with the model's range before denoising:

- the range is the hull of the training data's 0.1-99.9 % percentiles and the noise
  model's calibrated signal range (``intensity_range`` in the manifest; version-1
  packages have only the noise model's, and none for a Gaussian noise model), each
  widened by ``MARGIN`` (a quarter) of its width on each side: observations scatter
  around the signal by the noise (the bundled sample reaches 364 for a signal range
  ending at 267), and in-distribution data has pixels beyond the percentiles;
- the share of pixels outside it is reported in the output metadata;
- above ``WARN_SHARE`` (1 %) an :class:`OutOfRangeWarning` is issued; above
  ``REFUSE_SHARE`` (10 %) an :class:`OutOfRangeError` is raised unless the caller passes
  ``allow_out_of_range=True`` (CLI ``--allow-out-of-range``), which downgrades it to the
  warning;
- a package without any stored range is not checked; a warning says so once per package.
"""
from __future__ import annotations

import contextlib
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from .errors import OutOfRangeError, OutOfRangeWarning
from .manifest import Manifest

MARGIN = 0.25
WARN_SHARE = 0.01
REFUSE_SHARE = 0.10

__all__ = ["MARGIN", "REFUSE_SHARE", "WARN_SHARE", "ModelRange", "OutOfRangeError",
           "OutOfRangeWarning", "about_file", "check_intensity_range",
           "check_intensity_range_blocks", "model_range", "range_report"]

_unchecked_warned: set[str] = set()
_lock = threading.Lock()


@dataclass(frozen=True)
class ModelRange:
    """Intensities (input units) the model was trained and calibrated on, widened by
    ``MARGIN``; ``source`` says which stored ranges it comes from."""

    low: float
    high: float
    source: str


def model_range(manifest: Manifest) -> ModelRange | None:
    """The hull of the training data's 0.1-99.9 % percentiles and the noise model's
    signal range, each widened by ``MARGIN`` of its width on each side; None when the
    manifest stores neither."""
    stored = manifest.intensity_range
    parts = []
    if stored.training_data is not None:
        parts.append((stored.training_data.p0_1, stored.training_data.p99_9,
                      "training data 0.1-99.9 % percentiles"))
    if stored.noise_model is not None:
        parts.append((stored.noise_model.min, stored.noise_model.max,
                      "noise-model signal range"))
    if not parts:
        return None
    widened = [(lo - MARGIN * (hi - lo), hi + MARGIN * (hi - lo)) for lo, hi, _ in parts]
    return ModelRange(low=min(w[0] for w in widened), high=max(w[1] for w in widened),
                      source=" and ".join(f"{name} {lo:.4g} to {hi:.4g}"
                                          for lo, hi, name in parts)
                      + f", widened by {MARGIN:g} of the width")


def check_intensity_range(image: np.ndarray, manifest: Manifest, *, package: str | Path,
                          allow_out_of_range: bool = False) -> dict[str, Any]:
    """Compare ``image`` (any shape, input units) with the model's range.

    Returns
    -------
    dict
        For the output metadata: ``checked`` (bool); when checked also ``model_range``
        [low, high], ``range_source``, ``share_below``, ``share_above``, ``share_outside``
        (fractions 0..1), ``input_min``, ``input_max``, ``warn_share``, ``refuse_share``
        and ``allow_out_of_range``.

    Raises
    ------
    OutOfRangeError
        More than ``REFUSE_SHARE`` of the pixels are outside and ``allow_out_of_range``
        is False.

    Warns
    -----
    OutOfRangeWarning
        More than ``WARN_SHARE`` outside (and not refused), or no range stored in
        ``package`` (once per package).
    """
    return check_intensity_range_blocks([image], manifest, package=package,
                                        allow_out_of_range=allow_out_of_range)


def check_intensity_range_blocks(blocks: Iterable[np.ndarray], manifest: Manifest, *,
                                 package: str | Path,
                                 allow_out_of_range: bool = False) -> dict[str, Any]:
    """:func:`check_intensity_range` of an image given as blocks (e.g. bands of rows of
    an image larger than memory): the counts, minimum and maximum are combined over the
    blocks, so the report equals that of the whole image. Same returns and raises."""
    rng = model_range(manifest)
    if rng is None:
        _warn_unchecked(str(package))
        return {"checked": False, "reason": "the model package stores no intensity range"}
    n_below = n_above = size = 0
    low, high = np.inf, -np.inf
    for block in blocks:
        values = np.asarray(block)
        n_below += int(np.count_nonzero(values < rng.low))
        n_above += int(np.count_nonzero(values > rng.high))
        size += values.size
        low, high = min(low, float(values.min())), max(high, float(values.max()))
    return range_report(rng, n_below, n_above, size, low, high,
                        allow_out_of_range=allow_out_of_range)


def range_report(rng: ModelRange, n_below: int, n_above: int, size: int, low: float,
                 high: float, *, allow_out_of_range: bool = False) -> dict[str, Any]:
    """The report of :func:`check_intensity_range` from counts of pixels below and above
    ``rng`` among ``size``, and the image's minimum and maximum (for callers that count
    elsewhere, e.g. with dask). Raises and warns as check_intensity_range."""
    below, above = float(n_below) / size, float(n_above) / size
    report = {"checked": True, "model_range": [rng.low, rng.high], "range_source": rng.source,
              "share_below": below, "share_above": above, "share_outside": below + above,
              "input_min": low, "input_max": high,
              "warn_share": WARN_SHARE, "refuse_share": REFUSE_SHARE,
              "allow_out_of_range": bool(allow_out_of_range)}
    if below + above > REFUSE_SHARE and not allow_out_of_range:
        raise OutOfRangeError(
            f"{_describe(report, rng)}; the result would be unreliable (it can be worse than "
            "the input). Use a model trained on data like this, or rescale the image into "
            "the model's range, or pass allow_out_of_range=True (CLI: --allow-out-of-range) "
            "to denoise anyway")
    if below + above > WARN_SHARE:
        warnings.warn(f"{_describe(report, rng)}; those pixels may be denoised poorly",
                      OutOfRangeWarning, stacklevel=3)
    return report


def _describe(report: dict[str, Any], rng: ModelRange) -> str:
    return (f"{100 * report['share_outside']:.1f} % of the input's pixels (values "
            f"{report['input_min']:g} to {report['input_max']:g}) lie outside the intensity "
            f"range the model was trained and calibrated on ({rng.low:.4g} to {rng.high:.4g}: "
            f"{rng.source})")


def _warn_unchecked(package: str) -> None:
    with _lock:
        if package in _unchecked_warned:
            return
        _unchecked_warned.add(package)
    warnings.warn(f"{package}: the model package stores no intensity range (a version-1 "
                  "package with a Gaussian noise model); inputs are not checked against the "
                  "model's range. Re-export the model to store it",
                  OutOfRangeWarning, stacklevel=4)


@contextlib.contextmanager
def about_file(path: str | Path, echo) -> Iterator[None]:
    """For CLIs: prefix range errors with ``path`` and pass range warnings to ``echo``
    (e.g. ``lambda m: click.echo(m, err=True)``) as ``"Warning: <path>: <message>"``."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", OutOfRangeWarning)
            try:
                yield
            except OutOfRangeError as exc:
                raise OutOfRangeError(f"{path}: {exc}") from exc
    finally:
        # Re-emitted outside catch_warnings: inside it, showwarning appends to ``caught``.
        for w in caught:
            if issubclass(w.category, OutOfRangeWarning):
                echo(f"Warning: {path}: {w.message}")
            else:
                warnings.showwarning(w.message, w.category, w.filename, w.lineno)
