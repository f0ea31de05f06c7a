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
    pairs : bool, optional
        Also keep the running moments of the means of consecutive samples (1, 2), (3, 4),
        ... (antithetic pairs, which are correlated within a pair and independent across
        pairs): :meth:`standard_error` then uses them (default False).

    Examples
    --------
    >>> moments = RunningMoments((2, 2), keep=1)
    >>> moments.update(np.ones((3, 2, 2), dtype=np.float32))
    >>> moments.count, float(moments.mean()[0, 0]), moments.samples.shape
    (3, 1.0, (1, 2, 2))
    """

    def __init__(self, shape: Sequence[int], *, keep: int = 0, xp: ModuleType = np,
                 pairs: bool = False) -> None:
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
        self._pairs = _Welford(self.shape, xp) if pairs else None
        self._first = xp.empty(self.shape, dtype=xp.float64) if pairs else None

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
            if self._pairs is not None:
                self._add_to_pair(sample)

    def _add_to_pair(self, sample) -> None:
        if self._count % 2:  # first of a pair: wait for its partner
            self._first[...] = sample
            return
        self._first += sample
        self._first *= 0.5
        self._pairs.add(self._first)

    def standard_error(self) -> float:
        """Root mean square over pixels of the standard error of the running mean, in
        the samples' units: ``sqrt(mean(variance(ddof=1)) / count)``. With ``pairs``,
        from the means of complete pairs: ``sqrt(mean(pair variance(ddof=1)) / n_pairs)``
        (correct for antithetic samples, whose partners are not independent).

        Raises
        ------
        InputError
            With fewer than 2 samples (2 complete pairs with ``pairs``).
        """
        source = self._pairs if self._pairs is not None else self._own_welford()
        if source.count < 2:
            what = "pairs" if self._pairs is not None else "samples"
            raise InputError(f"a standard error needs at least 2 {what}, got {source.count}")
        return float(self._xp.sqrt(source.m2.mean() / (source.count - 1) / source.count))

    def rms_distance(self, reference: np.ndarray) -> float:
        """Root mean square of ``mean - reference`` over pixels (e.g. the residual of the
        noisy input, an estimate of the noise std). ``reference``: ``shape``."""
        self._require_samples()
        diff = self._mean - self._xp.asarray(reference, dtype=self._xp.float64)
        return float(self._xp.sqrt((diff * diff).mean()))

    def _own_welford(self) -> "_Welford":
        view = _Welford.__new__(_Welford)
        view.count, view.m2 = self._count, self._m2
        return view

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


class _Welford:
    """Count, mean and sum of squared deviations of samples added one at a time."""

    def __init__(self, shape: tuple[int, ...], xp: ModuleType) -> None:
        self.count = 0
        self.mean = xp.zeros(shape, dtype=xp.float64)
        self.m2 = xp.zeros(shape, dtype=xp.float64)

    def add(self, sample) -> None:
        self.count += 1
        delta = sample - self.mean
        self.mean += delta / self.count
        self.m2 += delta * (sample - self.mean)
