"""The backend contract: two calls, both thread-safe.

``encode`` runs the bottom-up graph once per tile; ``decode`` runs the top-down graph for
a batch of samples. Arrays are float32, C-contiguous, in normalised units.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Sequence

import numpy as np

from ..errors import BackendError
from ..package import ModelPackage


class Backend(ABC):
    """Runs a model package's graphs. Subclasses implement ``_encode`` / ``_decode``."""

    name: str = "abstract"

    def __init__(self, package: ModelPackage):
        self.package = package
        self.levels = [lv.index for lv in package.sampled_levels]

    def encode(self, image: np.ndarray) -> list[np.ndarray]:
        """image (1, 1, H, W) -> bottom-up features, one per sampled level."""
        m = self.package.spatial_multiple
        if image.ndim != 4 or image.shape[:2] != (1, 1) or image.shape[2] % m or image.shape[3] % m:
            raise BackendError(
                f"encode expects an array of shape (1, 1, H, W) with H, W multiples of {m}; "
                f"got {image.shape}"
            )
        return self._encode(np.ascontiguousarray(image, dtype=np.float32))

    def decode(self, features: Sequence[np.ndarray], eps: Sequence[np.ndarray]) -> np.ndarray:
        """features (from encode) and eps per sampled level (N, C, h, w) -> (N, 1, H, W)."""
        if len(features) != len(self.levels) or len(eps) != len(self.levels):
            raise BackendError(
                f"decode expects {len(self.levels)} feature and eps arrays (levels "
                f"{self.levels}); got {len(features)} and {len(eps)}"
            )
        return self._decode(list(features), [np.ascontiguousarray(e, dtype=np.float32) for e in eps])

    @abstractmethod
    def _encode(self, image: np.ndarray) -> list[np.ndarray]: ...

    @abstractmethod
    def _decode(self, features: list[np.ndarray], eps: list[np.ndarray]) -> np.ndarray: ...

    def describe(self) -> dict:
        """Backend name, versions and options, recorded in output metadata."""
        return {"name": self.name}

    def close(self) -> None:
        """Release sessions/engines (optional)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
