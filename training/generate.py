"""Generation: images drawn from the trained prior (what the model believes images look like).

The reference HDN shows this in its generation notebooks; there it failed at sizes other
than the training patch. Here any size works: the image is generated at the next multiple
of 2**levels and cropped.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from hdn_deploy.errors import ConfigError

from .checkpoint import load_checkpoint


def generate(checkpoint: str | Path, height: int, width: int, n: int, *, seed: int = 0,
             temperature: float = 1.0, batch_size: int = 4) -> np.ndarray:
    """Draw ``n`` images from the prior of a trained model.

    Parameters
    ----------
    checkpoint
        A training checkpoint (``best.safetensors``).
    height, width
        Output size in pixels (any positive size).
    n
        Number of images.
    seed
        Seed of the torch generator that draws every latent (same seed, same images).
    temperature
        Scale of every eps (1: the prior itself; below 1: smoother, more typical images).

    Returns
    -------
    numpy.ndarray
        float32 (n, height, width) in the training data's intensity units.

    Raises
    ------
    ConfigError
        If a size, ``n`` or ``temperature`` is not positive.
    PackageError
        If the checkpoint cannot be read.
    """
    if min(height, width, n, batch_size) < 1 or temperature <= 0:
        raise ConfigError(f"size ({height}, {width}), n={n} and temperature={temperature} "
                          "must be positive")
    ckpt = load_checkpoint(checkpoint)
    model = ckpt.build_model()
    m = model.config.spatial_multiple
    ph, pw = -(-height // m) * m, -(-width // m) * m
    generator = torch.Generator().manual_seed(seed)
    images = []
    for start in range(0, n, batch_size):
        count = min(batch_size, n - start)
        out = model.sample_prior(count, ph, pw, generator, temperature)[:, 0, :height, :width]
        images.append(out.numpy() * ckpt.normalization.std + ckpt.normalization.mean)
    return np.concatenate(images).astype(np.float32)
