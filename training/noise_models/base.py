"""What every noise model p(x|s) honours, and helpers shared by the models.

The contract (:class:`NoiseModel`):

- ``kind``: ``"gaussian"``, ``"gmm"``, ``"histogram"`` or ``"lines"``;
- ``log_likelihood(observation, signal) -> Tensor``: elementwise log p(x|s), both in raw
  (de-normalised) intensity units, same shape, differentiable w.r.t. ``signal``; it runs
  on whatever device and floating dtype ``signal`` has. (The line-artefact model couples
  the pixels of a patch: it returns each (..., H, W) patch's log p / (H W) at every pixel,
  so means over pixels are the same.)
- ``variance(signal) -> np.ndarray``: the model's noise variance at each signal value
  (for plots, summaries and tests).
- ``state() -> (meta, arrays)``: JSON-able metadata (with ``"kind"``) and numpy arrays;
  :func:`~hdn_deploy.training.noise_models.files.noise_model_from_state` rebuilds the
  model (checkpoints keep ``meta`` in their JSON header and ``arrays`` as safetensors
  tensors).
"""
from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import IO, Any, Callable, Protocol, Union, runtime_checkable

import numpy as np
import torch

from hdn_deploy.atomic import atomic_path
from hdn_deploy.errors import InputError

TOL = 1e-10
"""Added to every likelihood (and, as in the reference, inside the GMM weight exponent)."""

PathLike = Union[str, "os.PathLike[str]"]


@runtime_checkable
class NoiseModel(Protocol):
    """The noise-model contract (see the module docstring)."""

    kind: str

    def log_likelihood(self, observation: torch.Tensor, signal: torch.Tensor) -> torch.Tensor:
        """Elementwise log p(x|s); same shape as ``signal``, differentiable w.r.t. it."""
        ...

    def variance(self, signal: np.ndarray) -> np.ndarray:
        """Noise variance (raw units squared) at each signal value; float64, same shape."""
        ...

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """JSON-able metadata (with ``"kind"``) and the model's arrays."""
        ...


def write_atomically(path: PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Write a file through a temporary file in the same folder, then ``os.replace`` it.

    Parameters
    ----------
    path
        Destination. Its folder must exist.
    write
        Called with a binary file handle open for writing.

    Returns
    -------
    Path
        ``path``. Readers never see a half-written file; on error nothing is left behind.
    """
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        write(handle)
    return path


def _pairs(signal: np.ndarray, observation: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flat float32 copies of matching, finite, non-empty (signal, observation) arrays."""
    s = np.asarray(signal, dtype=np.float32).reshape(-1)
    x = np.asarray(observation, dtype=np.float32).reshape(-1)
    if s.shape != x.shape:
        raise InputError(
            f"signal and observation hold {s.size} and {x.size} values; they must be "
            "pixel pairs of the same size"
        )
    if s.size == 0:
        raise InputError("no (signal, observation) pairs were given")
    for name, arr in (("signal", s), ("observation", x)):
        if not np.isfinite(arr).all():
            raise InputError(f"the {name} values contain NaN or Inf; remove or replace them")
    return s, x


def _float_tensor_like(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    dtype = like.dtype if like.is_floating_point() else torch.float32
    return values.to(device=like.device, dtype=dtype)



def _magic(path: Path) -> str:
    if not path.is_file():
        raise InputError(f"{path}: noise-model file not found")
    with open(path, "rb") as handle:
        head = handle.read(6)
    if head.startswith(b"PK"):
        return "npz"
    if head == b"\x93NUMPY":
        return "npy"
    raise InputError(
        f"{path}: not a NumPy .npz/.npy noise-model file; create one with "
        "`hdn-deploy noise-model calibrate` or `... bootstrap`"
    )


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    if _magic(path) != "npz":
        raise InputError(f"{path}: expected a .npz archive, found a bare .npy array")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise InputError(f"{path}: cannot read as a .npz archive ({exc})") from exc

