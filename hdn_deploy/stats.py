"""Streaming per-pixel statistics of posterior samples (never holds them all)."""
from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any, Sequence

import numpy as np

from .errors import InputError

__all__ = ["RunningMoments", "TileMoments", "to_host"]


def to_host(array: Any) -> np.ndarray:
    """A new numpy array (a copy) from a numpy or device (cupy-like, ``.get()``) array."""
    get = getattr(array, "get", None)
    return np.array(get() if callable(get) and not isinstance(array, np.ndarray) else array)


@dataclass(frozen=True)
class TileMoments:
    """Host copy of one tile's moments: ``mean`` and ``variance`` (ddof 0) float64
    ``(H, W)``; ``samples`` float32 ``(k, H, W)``, the first k samples; ``count``."""

    mean: np.ndarray
    variance: np.ndarray
    samples: np.ndarray
    count: int


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
    xp : module, optional
        Array module holding the state (default numpy; cupy keeps the moments on the
        GPU, where the samples are: only :meth:`to_host` copies them back).

    Examples
    --------
    >>> moments = RunningMoments((2, 2), keep=1)
    >>> moments.update(np.ones((3, 2, 2), dtype=np.float32))
    >>> moments.count, float(moments.mean()[0, 0]), moments.samples.shape
    (3, 1.0, (1, 2, 2))
    """

    def __init__(self, shape: Sequence[int], *, keep: int = 0, xp: ModuleType = np) -> None:
        self.shape = tuple(int(s) for s in shape)
        if keep < 0:
            raise InputError(f"keep must be >= 0, got {keep}")
        self.keep = int(keep)
        self._xp = xp
        self._count = 0
        self._mean = xp.zeros(self.shape, dtype=xp.float64)
        self._m2 = xp.zeros(self.shape, dtype=xp.float64)
        self._kept = xp.empty((self.keep, *self.shape), dtype=xp.float32)
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
        xp = self._xp
        batch = xp.asarray(batch)
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
        delta = xp.empty(self.shape, dtype=xp.float64)
        scratch = xp.empty(self.shape, dtype=xp.float64)
        for sample in batch:  # one at a time: batching must not change a single bit
            self._count += 1
            xp.subtract(sample, self._mean, out=delta)
            xp.divide(delta, self._count, out=scratch)
            self._mean += scratch
            xp.subtract(sample, self._mean, out=scratch)
            scratch *= delta
            self._m2 += scratch

    def to_host(self) -> TileMoments:
        """Mean, variance and kept samples copied to host memory (numpy)."""
        self._require_samples()
        return TileMoments(mean=to_host(self._mean), variance=self.variance(),
                           samples=to_host(self.samples), count=self._count)

    def _require_samples(self) -> None:
        if self._count == 0:
            raise InputError("no samples were added yet; call update() first")

    def mean(self) -> np.ndarray:
        """Per-pixel mean (float64)."""
        self._require_samples()
        return to_host(self._mean)

    def variance(self, *, ddof: int = 0) -> np.ndarray:
        """Per-pixel variance (float64) with ``ddof`` delta degrees of freedom."""
        self._require_samples()
        if self._count - ddof <= 0:
            raise InputError(f"variance with ddof={ddof} needs more than {ddof} samples")
        return to_host(self._m2) / (self._count - ddof)

    def second_moment(self) -> np.ndarray:
        """Per-pixel ``E[x**2]`` (float64), as :class:`~hdn_deploy.tiling.TileMerger` wants."""
        return self.variance() + to_host(self._mean) ** 2

    def std(self, *, ddof: int = 0) -> np.ndarray:
        """Per-pixel standard deviation (float64)."""
        return np.sqrt(self.variance(ddof=ddof))
