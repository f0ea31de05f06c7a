"""Adaptive ("anytime") sampling: stop drawing samples for a tile once its MMSE has converged.

The MMSE of a tile is the mean of its posterior samples; its Monte-Carlo error shrinks as
``sigma_post / sqrt(n)``. After every batch of samples the tile's standard error is read
from the running moments (:meth:`hdn_deploy.stats.RunningMoments.standard_error`): the
root mean square over the tile's pixels of ``sqrt(variance / n)`` (the quantity a PSNR
sees). Antithetic samples come in correlated pairs ``(eps, -eps)``: the error is then
estimated from the means of complete pairs, which are independent, and checked only
after a pair is complete. Sampling of the tile stops when the error is at or below the
tolerance, or at ``n_samples`` (the upper bound), and never before ``MIN_SAMPLES`` samples
(nor before the samples asked to be kept).

A tolerance is given in the input's intensity units (``2.5``) or as a fraction of the
noise std (``"0.05sigma"``). The noise std is estimated per tile, while sampling, as the
root mean square of (noisy input - current MMSE) over the tile: model-free, and close to
the noise std where the denoiser is good (it includes the denoiser's own error, so it
slightly overestimates the noise).

Everything here is a pure function of the seed and the settings: the same seed stops at
the same sample counts.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import ConfigError
from .stats import RunningMoments

__all__ = ["MIN_SAMPLES", "Tolerance", "adaptive_metadata", "should_stop"]

MIN_SAMPLES = 4  # two antithetic pairs: the fewest from which a variance can be estimated
_SIGMA_SUFFIXES = ("sigma", "σ")


@dataclass(frozen=True)
class Tolerance:
    """Target standard error of the MMSE of each tile.

    Attributes
    ----------
    value : float
        > 0; intensity units, or a fraction of the noise std when ``relative``.
    relative : bool
        True: ``value`` times the tile's estimated noise std.
    """

    value: float
    relative: bool = False

    @classmethod
    def parse(cls, value: "Tolerance | float | str | None") -> "Tolerance | None":
        """``None`` -> None (fixed sample count); ``2.5`` or ``"2.5"`` -> intensity units;
        ``"0.05sigma"`` (or ``"0.05σ"``) -> a fraction of the noise std.

        Raises
        ------
        ConfigError
            For anything else, or a value that is not a finite number > 0.
        """
        if value is None or isinstance(value, Tolerance):
            return value
        relative = False
        text = value
        if isinstance(value, str):
            text = value.strip().lower()
            for suffix in _SIGMA_SUFFIXES:
                if text.endswith(suffix):
                    text, relative = text[: -len(suffix)].strip(), True
        try:
            number = float(text)
        except (TypeError, ValueError):
            number = math.nan
        if not (math.isfinite(number) and number > 0):
            raise ConfigError(
                f"tolerance {value!r} is not valid; expected a number > 0 in intensity units "
                "(e.g. 2.5) or a fraction of the noise std (e.g. '0.05sigma')")
        return cls(number, relative)

    def describe(self) -> str:
        """``"2.5"`` or ``"0.05sigma"`` (parses back to an equal Tolerance)."""
        return f"{self.value:g}sigma" if self.relative else f"{self.value:g}"

    def threshold(self, moments: RunningMoments, patch: np.ndarray, scale: float) -> float:
        """The tolerance in normalised units for this tile (``patch``: the normalised noisy
        tile; ``scale``: intensity units per normalised unit)."""
        if self.relative:
            return self.value * moments.rms_distance(patch)
        return self.value / scale


def should_stop(moments: RunningMoments, patch: np.ndarray, tolerance: Tolerance | None, *,
                scale: float, paired: bool, minimum: int) -> bool:
    """True when a tile's sampling can stop: at least ``minimum`` samples, a complete pair
    when ``paired``, and a standard error at or below the tolerance. Never with no
    tolerance."""
    count = moments.count
    if tolerance is None or count < max(minimum, MIN_SAMPLES) or (paired and count % 2):
        return False
    return moments.standard_error() <= tolerance.threshold(moments, patch, scale)


def adaptive_metadata(tolerance: Tolerance | None, used: list[list[int]]) -> dict:
    """Metadata of a run: the tolerance (``"2.5"``, ``"0.05sigma"`` or None), the samples
    used per tile (one list per slice, row-major tiles) and their mean."""
    counts = [c for per_slice in used for c in per_slice]
    return {"tolerance": None if tolerance is None else tolerance.describe(),
            "samples_per_tile": used, "samples_used_mean": float(np.mean(counts))}
