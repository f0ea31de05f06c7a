"""Where (signal, observation) pixel pairs for noise-model fitting come from (numpy only).

- :func:`calibration_pairs`: a static sample imaged many times; the signal is the mean
  over frames and every frame is an observation of it.
- :func:`bootstrap_pairs`: a first denoiser's output serves as the signal (clipped to its
  0.5-99.5 percentiles), the noisy image(s) as observations.

Both return flat float32 arrays ``(signal, observation)`` of equal length.
"""
from __future__ import annotations

import numpy as np

from hdn_deploy.errors import InputError

__all__ = ["calibration_pairs", "bootstrap_pairs"]


def _checked(array: np.ndarray, source: str, what: str) -> np.ndarray:
    array = np.asarray(array)
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise InputError(f"{source}: {what} must hold real numbers, got dtype {array.dtype}")
    if array.size == 0:
        raise InputError(f"{source}: {what} is empty (shape {array.shape})")
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        bad = int(np.count_nonzero(~np.isfinite(array)))
        raise InputError(
            f"{source}: {what} contains {bad} NaN/Inf value(s); replace or crop them first"
        )
    return array


def calibration_pairs(
    stack: np.ndarray, *, unbiased: bool = True, source: str = "calibration stack"
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs from repeated frames of a static sample.

    The signal of each pixel is its mean over the frames; every frame is one observation
    of it. Because the mean includes the frame itself, the residual x - mean has only
    (1 - 1/N) times the noise variance with N frames (10 % low for 10 frames, 1 % for
    100). With ``unbiased=True`` (default) each observation is therefore reported as
    ``mean + (x - mean) * sqrt(N / (N - 1))``, which makes the residual variance
    unbiased at every signal level (Bessel's correction); ``unbiased=False`` gives the
    raw frames, as the reference tools do.

    Parameters
    ----------
    stack
        Array of shape (frames, Y, X) with frames >= 2.
    unbiased
        Apply the residual scaling described above.
    source
        Name used in error messages (e.g. the file name).

    Returns
    -------
    signal, observation
        Flat float32 arrays of length frames * Y * X.

    Raises
    ------
    InputError
        Wrong dimensionality, fewer than 2 frames, non-numeric data or NaN/Inf.
    """
    stack = _checked(stack, source, "the calibration stack")
    if stack.ndim != 3:
        raise InputError(
            f"{source}: a calibration stack must have 3 axes (frames, Y, X), got shape "
            f"{stack.shape}"
        )
    if stack.shape[0] < 2:
        raise InputError(
            f"{source}: a calibration stack needs at least 2 frames (ideally ~100), got "
            f"{stack.shape[0]}"
        )
    mean = stack.mean(axis=0, dtype=np.float64).astype(np.float32)
    signal = np.broadcast_to(mean, stack.shape).reshape(-1).copy()
    observation = stack.astype(np.float32).reshape(-1)
    if unbiased:
        frames = stack.shape[0]
        observation -= signal
        observation *= np.float32(np.sqrt(frames / (frames - 1)))
        observation += signal
    return signal, observation


def bootstrap_pairs(
    noisy: np.ndarray,
    signal: np.ndarray,
    *,
    percentiles: tuple[float, float] = (0.5, 99.5),
    source: str = "noisy image",
    signal_source: str = "signal image",
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs from noisy images and a first denoiser's estimate of their signal.

    Parameters
    ----------
    noisy
        Noisy image(s), shape (Y, X) or (frames, Y, X).
    signal
        Denoised estimate of the same shape; it is clipped (``np.clip``) to its
        ``percentiles`` so that outliers of the first denoiser do not stretch the range.
    percentiles
        Lower and upper clipping percentiles of the signal, 0 <= lower < upper <= 100.
    source, signal_source
        Names used in error messages (e.g. the file names).

    Returns
    -------
    signal, observation
        Flat float32 arrays of equal length.

    Raises
    ------
    InputError
        Shapes differ, wrong dimensionality, non-numeric data or NaN/Inf.
    """
    noisy = _checked(noisy, source, "the noisy image")
    signal = _checked(signal, signal_source, "the signal image")
    if noisy.shape != signal.shape:
        raise InputError(
            f"{source} has shape {noisy.shape} but {signal_source} has shape "
            f"{signal.shape}; the signal must be the denoised version of the same image(s)"
        )
    if noisy.ndim not in (2, 3):
        raise InputError(
            f"{source}: expected an image (Y, X) or a stack (frames, Y, X), got shape "
            f"{noisy.shape}"
        )
    lower, upper = (float(p) for p in percentiles)
    if not 0.0 <= lower < upper <= 100.0:
        raise InputError(
            f"clipping percentiles must satisfy 0 <= lower < upper <= 100, got {percentiles}"
        )
    flat = signal.astype(np.float32).reshape(-1)
    lo, hi = np.percentile(flat, [lower, upper])
    clipped = np.clip(flat, lo, hi).astype(np.float32)
    return clipped, noisy.astype(np.float32).reshape(-1)
