"""Streaming per-pixel statistics of posterior samples (never holds them all)."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .errors import InputError

__all__ = ["RunningMoments"]


class RunningMoments:
    """Running mean and variance of samples arriving in batches.

    Uses Welford's update of (count, mean, sum of squared deviations) in float64,
    which stays accurate when the mean is large compared with the spread (raw
    microscope intensities), unlike a plain sum of squares. Samples are added one
    at a time, so the results do not depend on how they are batched, bit for bit.

    Parameters
    ----------
    shape : sequence of int
        Shape of one sample, e.g. ``(height, width)``.
    keep : int, optional
        Keep the first ``keep`` samples (float32) for inspection (default 0).

    Examples
    --------
    >>> moments = RunningMoments((2, 2), keep=1)
    >>> moments.update(np.ones((3, 2, 2), dtype=np.float32))
    >>> moments.count, float(moments.mean()[0, 0]), moments.samples.shape
    (3, 1.0, (1, 2, 2))
    """

    def __init__(self, shape: Sequence[int], *, keep: int = 0) -> None:
        self.shape = tuple(int(s) for s in shape)
        if keep < 0:
            raise InputError(f"keep must be >= 0, got {keep}")
        self.keep = int(keep)
        self._count = 0
        self._mean = np.zeros(self.shape, dtype=np.float64)
        self._m2 = np.zeros(self.shape, dtype=np.float64)
        self._kept = np.empty((self.keep, *self.shape), dtype=np.float32)
        self._n_kept = 0

    @property
    def count(self) -> int:
        """Number of samples seen."""
        return self._count

    @property
    def samples(self) -> np.ndarray:
        """The first ``min(count, keep)`` samples, float32 ``(k, *shape)`` (a view)."""
        return self._kept[: self._n_kept]

    def update(self, batch: np.ndarray) -> None:
        """Add a batch of samples of shape ``(N, *shape)``.

        Raises
        ------
        InputError
            If the batch shape does not match.
        """
        batch = np.asarray(batch)
        if batch.shape[1:] != self.shape or batch.ndim != len(self.shape) + 1:
            raise InputError(
                f"batch has shape {batch.shape}, expected (N, {', '.join(map(str, self.shape))})"
            )
        n = batch.shape[0]
        if n == 0:
            return
        take = min(n, self.keep - self._n_kept)
        if take > 0:
            self._kept[self._n_kept : self._n_kept + take] = batch[:take]
            self._n_kept += take
        delta = np.empty(self.shape, dtype=np.float64)
        scratch = np.empty(self.shape, dtype=np.float64)
        for sample in batch:  # one at a time: batching must not change a single bit
            self._count += 1
            np.subtract(sample, self._mean, out=delta)
            np.divide(delta, self._count, out=scratch)
            self._mean += scratch
            np.subtract(sample, self._mean, out=scratch)
            scratch *= delta
            self._m2 += scratch

    def _require_samples(self) -> None:
        if self._count == 0:
            raise InputError("no samples were added yet; call update() first")

    def mean(self) -> np.ndarray:
        """Per-pixel mean (float64)."""
        self._require_samples()
        return self._mean.copy()

    def variance(self, *, ddof: int = 0) -> np.ndarray:
        """Per-pixel variance (float64) with ``ddof`` delta degrees of freedom."""
        self._require_samples()
        if self._count - ddof <= 0:
            raise InputError(f"variance with ddof={ddof} needs more than {ddof} samples")
        return self._m2 / (self._count - ddof)

    def second_moment(self) -> np.ndarray:
        """Per-pixel ``E[x**2]`` (float64), as :class:`~hdn_deploy.tiling.TileMerger` wants."""
        return self.variance() + self._mean * self._mean

    def std(self, *, ddof: int = 0) -> np.ndarray:
        """Per-pixel standard deviation (float64)."""
        return np.sqrt(self.variance(ddof=ddof))
