"""Training data: TIFF loading, scalar normalisation, split, augmented random patches."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from hdn_deploy.errors import InputError
from hdn_deploy.io import expand_inputs, read_image
from hdn_deploy.manifest import DataRange
from hdn_deploy.schema import from_json, to_json

RANGE_SAMPLE = 1 << 22  # pixels used for the percentiles (a regular subsample beyond)


@dataclass(frozen=True)
class Normalization:
    """One scalar mean/std for the whole data set (stored with the model), and the
    intensity range of the training data (None in checkpoints written before it existed)."""

    mean: float
    std: float
    data_range: DataRange | None = None

    def apply(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.std).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std, "data_range": to_json(self.data_range)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any],
                  file: str | Path = "checkpoint") -> "Normalization":
        """Inverse of :meth:`to_dict`; PackageError naming ``file`` and the bad key."""
        return from_json(cls, dict(data), file, "normalization")


def load_frames(inputs: Sequence[str | Path], patch_size: int) -> tuple[list[np.ndarray], list[str]]:
    """Read every 2D frame of the given TIFF files/folders/globs.

    Raises InputError naming the file when an image is smaller than one patch.
    """
    frames: list[np.ndarray] = []
    names: list[str] = []
    for path in expand_inputs(inputs):
        image = read_image(path)
        stack = image.array if image.array.ndim == 3 else image.array[None]
        if min(stack.shape[-2:]) < patch_size:
            raise InputError(
                f"{path}: image of shape {stack.shape[-2:]} is smaller than the training "
                f"patch size {patch_size}; use a smaller --patch-size or larger images"
            )
        frames.extend(np.ascontiguousarray(f, dtype=np.float32) for f in stack)
        names.append(str(path))
    return frames, names


def compute_normalization(frames: Sequence[np.ndarray]) -> Normalization:
    total = sum(f.size for f in frames)
    mean = float(sum(f.sum(dtype=np.float64) for f in frames) / total)
    var = float(sum(((f - mean) ** 2).sum(dtype=np.float64) for f in frames) / total)
    if not var > 0:
        raise InputError("training data has zero variance (all pixels equal); nothing to learn")
    return Normalization(mean=mean, std=float(np.sqrt(var)), data_range=data_range(frames))


def data_range(frames: Sequence[np.ndarray]) -> DataRange:
    """Extremes and 0.1/99.9 percentiles of all pixels of ``frames`` (input units); the
    percentiles come from a regular subsample of at most ``RANGE_SAMPLE`` pixels."""
    total = sum(f.size for f in frames)
    step = max(1, total // RANGE_SAMPLE)
    sample = np.concatenate([np.ravel(f)[::step] for f in frames]).astype(np.float64)
    low, high = np.percentile(sample, [0.1, 99.9])
    return DataRange(min=float(min(f.min() for f in frames)),
                     max=float(max(f.max() for f in frames)), p0_1=float(low), p99_9=float(high))


def split_frames(
    frames: Sequence[np.ndarray], val_fraction: float, patch_size: int
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Train/validation split: whole frames when there are enough, else bottom rows (at
    least one patch high). ``val_fraction`` 0: nothing held out, validation patches are
    drawn from the training data (a measure of fit, not of generalisation: for denoising
    a single image with every pixel trained on)."""
    if val_fraction == 0:
        return list(frames), list(frames)
    n_val = int(round(len(frames) * val_fraction))
    if len(frames) >= 10 and n_val >= 1:
        return list(frames[:-n_val]), list(frames[-n_val:])
    train, val = [], []
    for frame in frames:
        height = frame.shape[0]
        val_rows = max(patch_size, int(round(height * val_fraction)))
        if height - val_rows < patch_size:
            raise InputError(
                f"an image of height {height} cannot be split into training and validation "
                f"regions of at least one patch ({patch_size} px) each; give more or larger "
                "images, or a smaller --patch-size"
            )
        train.append(frame[: height - val_rows])
        val.append(frame[height - val_rows :])
    return train, val


def augment(patch: np.ndarray, k: int) -> np.ndarray:
    """One of the 8 rotations/flips (k in 0..7)."""
    out = np.rot90(patch, k % 4)
    return out[:, ::-1] if k >= 4 else out


class PatchSampler:
    """Random augmented patches from a list of normalised frames.

    The generator state is exposed so a resumed run draws the same patches.
    """

    def __init__(self, frames: Sequence[np.ndarray], patch_size: int, seed: int):
        self.frames = list(frames)
        self.patch_size = patch_size
        self.rng = np.random.default_rng(seed)
        sizes = np.array([f.shape[0] * f.shape[1] for f in self.frames], dtype=np.float64)
        self._weights = sizes / sizes.sum()

    def batch(self, n: int, *, augmented: bool = True) -> np.ndarray:
        p = self.patch_size
        out = np.empty((n, 1, p, p), dtype=np.float32)
        choice = self.rng.choice(len(self.frames), size=n, p=self._weights)
        for i, idx in enumerate(choice):
            frame = self.frames[idx]
            y = int(self.rng.integers(0, frame.shape[0] - p + 1))
            x = int(self.rng.integers(0, frame.shape[1] - p + 1))
            patch = frame[y : y + p, x : x + p]
            if augmented:
                patch = augment(patch, int(self.rng.integers(0, 8)))
            out[i, 0] = patch
        return out

    def get_state(self) -> dict:
        return self.rng.bit_generator.state

    def set_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state
