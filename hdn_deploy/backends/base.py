"""The backend contract: device-resident features, eps and moments; thread-safe calls.

A backend runs the model package's two graphs where its data live (host memory for the
onnxruntime CPU backend, GPU memory for TensorRT):

* ``encode(image) -> Features``: the bottom-up graph once per tile. The result is a
  backend-owned handle (the arrays stay on the device); only the backend that made it
  can use it.
* ``moments(shape, keep, pairs) -> RunningMoments``: backend-side running moments of one
  tile (``pairs``: also of antithetic pair means, for adaptive sampling).
* ``decode(features, eps, moments)``: the top-down graph for a batch of samples; adds
  them to ``moments`` on the device. ``eps`` is an :class:`EpsSpec` (seed, mode, sample
  indices and tile origin: the backend draws the latents where it decodes, under the
  latent contract of :mod:`hdn_deploy.latents`) or one array per level (host or device).
* ``moments.to_host()``: the only copy back: mean, E[x**2] and the kept samples.
* ``decode_samples(features, eps)``: the samples themselves on the host (for tests,
  benchmarks and inspection; it moves every sample across the bus).
* ``direct(image) -> ndarray``: the package's direct denoiser graph (``mode="direct"``),
  host float32 in and out; backends without it raise BackendError.

Arrays are float32, C-contiguous, in normalised units. Subclasses implement ``_encode``
and ``_decode`` on their own arrays and may override ``_draw`` (device latents),
``array_module`` (where moments live) and ``_to_host``.
"""
from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Sequence

import numpy as np

from ..errors import BackendError
from ..latents import LatentSampler
from ..package import ModelPackage
from ..stats import RunningMoments, to_host

__all__ = ["Backend", "EpsSpec", "Features", "timed"]


@dataclass(frozen=True)
class EpsSpec:
    """Latent noise of one tile, described rather than drawn.

    Attributes
    ----------
    sampler : LatentSampler
        Seed and sampling mode.
    samples : tuple of int
        Global sample indices, one per row of the batch.
    y0, x0 : int
        Tile origin in global (padded-image) pixel coordinates.
    """

    sampler: LatentSampler
    samples: tuple[int, ...]
    y0: int
    x0: int


@dataclass(frozen=True, eq=False)
class Features:
    """Bottom-up features of one tile, owned by the backend that computed them.

    ``arrays`` are backend arrays (numpy, onnxruntime OrtValues or cupy), one per
    sampled level; ``height`` and ``width`` are the tile's size in pixels.
    """

    owner: "Backend"
    arrays: tuple[Any, ...]
    height: int
    width: int

    def to_host(self) -> list[np.ndarray]:
        """Copies of the features as numpy arrays ``(1, C, H / 2**(l+1), W / 2**(l+1))``."""
        return [self.owner._to_host(a) for a in self.arrays]


def timed(timings: dict[str, float] | None, phase: str, func, *args):
    """Call ``func(*args)``; when ``timings`` is a dict, add the seconds spent to ``phase``."""
    if timings is None:
        return func(*args)
    start = time.perf_counter()
    out = func(*args)
    timings[phase] = timings.get(phase, 0.0) + time.perf_counter() - start
    return out


class Backend(ABC):
    """Runs a model package's graphs (see the module docstring for the contract)."""

    name: str = "abstract"
    array_module: ModuleType = np  # where decode's samples and the moments live

    def __init__(self, package: ModelPackage):
        self.package = package
        self.levels = [lv.index for lv in package.sampled_levels]
        self._level_specs = [(lv.index, lv.channels) for lv in package.sampled_levels]

    # ------------------------------------------------------------------ contract
    def encode(self, image: np.ndarray) -> Features:
        """Host image float32 ``(1, 1, H, W)``, H and W multiples of the package's
        spatial multiple -> backend-owned :class:`Features`. Raises BackendError."""
        m = self.package.spatial_multiple
        if image.ndim != 4 or image.shape[:2] != (1, 1) or image.shape[2] % m or image.shape[3] % m:
            raise BackendError(
                f"encode expects an array of shape (1, 1, H, W) with H, W multiples of {m}; "
                f"got {image.shape}"
            )
        arrays = self._encode(np.ascontiguousarray(image, dtype=np.float32))
        return Features(self, tuple(arrays), int(image.shape[2]), int(image.shape[3]))

    def moments(self, shape: Sequence[int], *, keep: int = 0, pairs: bool = False) -> RunningMoments:
        """Empty running moments of one tile ``(H, W)``, kept where decode's samples are
        (``pairs``: also the moments of pair means, for antithetic standard errors)."""
        return RunningMoments(shape, keep=keep, xp=self.array_module, pairs=pairs)

    def decode(self, features: Features, eps: EpsSpec | Sequence[Any], moments: RunningMoments,
               *, timings: dict[str, float] | None = None) -> None:
        """Decode a batch of samples of one tile and add them to ``moments``.

        ``timings`` (optional dict) accumulates seconds under ``"latents"``, ``"decode"``
        and ``"stats"`` (on a GPU these are enqueue times unless the backend syncs).
        Raises BackendError for foreign features or eps of the wrong count or shape.
        """
        arrays = self._own(features)
        eps_arrays = timed(timings, "latents", self._eps, features, eps)
        samples = timed(timings, "decode", self._decode, arrays, eps_arrays)
        timed(timings, "stats", moments.update, samples[:, 0])

    def direct(self, image: np.ndarray) -> np.ndarray:
        """The direct denoiser on a host image float32 ``(1, 1, H, W)`` (H, W multiples of
        the spatial multiple) -> host float32 MMSE estimate ``(1, 1, H, W)``, normalised
        units. Raises BackendError (wrong shape, no direct graph, backend without it)."""
        m = self.package.spatial_multiple
        if image.ndim != 4 or image.shape[:2] != (1, 1) or image.shape[2] % m or image.shape[3] % m:
            raise BackendError(
                f"direct expects an array of shape (1, 1, H, W) with H, W multiples of {m}; "
                f"got {image.shape}")
        if not self.package.has_direct:
            raise BackendError(f"{self.package.path}: the package has no direct graph")
        return self._direct(np.ascontiguousarray(image, dtype=np.float32))

    def _direct(self, image: np.ndarray) -> np.ndarray:
        raise BackendError(f"the {self.name} backend cannot run the direct denoiser graph; "
                           "use the cpu or cuda backend")

    def decode_samples(self, features: Features, eps: EpsSpec | Sequence[Any]) -> np.ndarray:
        """The decoded samples, host float32 ``(N, 1, H, W)`` (copies every sample)."""
        arrays = self._own(features)
        return self._to_host(self._decode(arrays, self._eps(features, eps)))

    # ------------------------------------------------------------------ helpers
    def _own(self, features: Features) -> list[Any]:
        if not isinstance(features, Features) or features.owner is not self:
            raise BackendError("decode takes the Features returned by this backend's encode; "
                               f"got {type(features).__name__}")
        return list(features.arrays)

    def _eps(self, features: Features, eps: EpsSpec | Sequence[Any]) -> list[Any]:
        if isinstance(eps, EpsSpec):
            return self._draw(eps, features.height, features.width)
        if len(eps) != len(self.levels):
            raise BackendError(f"decode expects {len(self.levels)} eps arrays (levels "
                               f"{self.levels}); got {len(eps)}")
        for (level, channels), e in zip(self._level_specs, eps):
            shift = level + 1
            want = (channels, features.height >> shift, features.width >> shift)
            if len(e.shape) != 4 or tuple(e.shape[1:]) != want:
                raise BackendError(f"eps of level {level} has shape {tuple(e.shape)}, "
                                   f"expected (N, {', '.join(map(str, want))})")
        return self._prepare_eps(eps)

    def _draw(self, spec: EpsSpec, height: int, width: int) -> list[Any]:
        """eps arrays of a spec (default: numpy, on the host)."""
        return spec.sampler.tile_eps(spec.samples, self._level_specs, spec.y0, spec.x0,
                                     height, width)

    def _prepare_eps(self, eps: Sequence[Any]) -> list[Any]:
        """Caller-given eps arrays as the backend needs them (default: contiguous float32)."""
        return [np.ascontiguousarray(e, dtype=np.float32) for e in eps]

    def _to_host(self, array: Any) -> np.ndarray:
        return to_host(array)

    @abstractmethod
    def _encode(self, image: np.ndarray) -> list[Any]: ...

    @abstractmethod
    def _decode(self, features: list[Any], eps: list[Any]) -> Any: ...

    def describe(self) -> dict:
        """Backend name, versions and options, recorded in output metadata."""
        return {"name": self.name}

    def close(self) -> None:
        """Release sessions/engines (optional)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
