"""The largest prediction tile in which a trained model's MMSE does not drift.

A model trained on small patches (64 px) may offset its whole MMSE in tiles much larger
than them: its deep latent levels (1x1 and 2x2 in training) then see positions and context
they never saw. Measured on models trained briefly without dropout: 27.13 dB in 512-px
tiles against 31.55 dB in 128-px tiles on the same image (benchmarks/results/quality/probes.md);
fully trained models do not drift. The drift is visible without a clean image: the tile's
residual (input - MMSE) has a non-zero mean (:func:`hdn_deploy.metrics.tile_drift`).

At the end of training the trainer measures it on the training images at tiles of 8, 4 and
2 x the training patch and records the largest tile that is, with every smaller one, within
``TILE_CHECK_LIMIT`` (:func:`safe_tile`) in the best checkpoint's provenance
(``tile_check``); ``hdn-deploy export`` recommends that tile.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from hdn_deploy.metrics import tile_drift

from .model import LadderVAE

TILE_FACTORS = (8, 4, 2)  # tile sizes tried, in training patches, largest first
N_SAMPLES = 4  # posterior samples per tile: the drift is a whole-tile offset, far above MC noise
MAX_TILES = 4  # tiles per size (the largest drift among them counts)
#: Largest drift accepted for a recommended tile: half the runtime's warning limit
#: (DRIFT_LIMIT, 0.1). Measured (benchmarks/results/quality/probes.md): sound models
#: 0.008-0.034; a line-artefact model at 0.069 in 256-px tiles lost 0.18 dB there against
#: 128-px tiles; drifting models 0.17-0.42.
TILE_CHECK_LIMIT = 0.05


def candidate_tiles(patch_size: int, multiple: int) -> list[int]:
    """Tile sizes tried (px, largest first): ``TILE_FACTORS`` x the patch, multiples of
    ``multiple`` (2**levels)."""
    base = max(patch_size, multiple)
    return [factor * base for factor in TILE_FACTORS]


def _tiles(frames: Sequence[np.ndarray], size: int, limit: int) -> list[np.ndarray]:
    """Up to ``limit`` non-overlapping size x size tiles, frame by frame, row by row; when no
    frame is that large, the largest frame mirrored (symmetric padding) to the size."""
    if not any(min(frame.shape) >= size for frame in frames):
        frame = max(frames, key=lambda f: f.size)
        pad = [(0, max(0, size - n)) for n in frame.shape]
        return [np.pad(frame, pad, mode="symmetric")[:size, :size]]
    out = []
    for frame in frames:
        for y in range(0, frame.shape[0] - size + 1, size):
            for x in range(0, frame.shape[1] - size + 1, size):
                out.append(frame[y:y + size, x:x + size])
                if len(out) == limit:
                    return out
    return out


@torch.no_grad()
def measure_tile_drift(model: LadderVAE, frames: Sequence[np.ndarray], *,
                       posterior_logvar_max: float | None = 4.0,
                       seed: int = 0) -> dict[int, float]:
    """Largest :func:`~hdn_deploy.metrics.tile_drift` per tile size of :func:`candidate_tiles`.

    frames
        Normalised 2D float32 images (the training data); tiles are cut from them in order.
    posterior_logvar_max
        The clamp that export puts on the posterior log-variances (the runtime's behaviour).

    Returns {tile size (px): drift ratio}. A size larger than every frame is measured on
    the largest frame mirrored to that size (its deep levels then see a tile that large).
    The model is put in eval mode and its clamp restored afterwards.
    """
    cfg = model.config
    model.eval()
    saved = [level.stochastic.posterior_logvar_max for level in model.top_down_levels]
    try:
        for level in model.top_down_levels:
            level.stochastic.posterior_logvar_max = posterior_logvar_max
        drift = {}
        for size in candidate_tiles(cfg.patch_size, cfg.spatial_multiple):
            tiles = _tiles(frames, size, MAX_TILES)
            ratios = []
            for i, tile in enumerate(tiles):
                x = torch.from_numpy(np.ascontiguousarray(tile, dtype=np.float32))[None, None]
                generator = torch.Generator().manual_seed(seed + i)
                mmse = model.sample_posterior(x, N_SAMPLES, generator).mean(0)[0].numpy()
                ratios.append(tile_drift(tile, mmse))
            drift[size] = float(max(ratios))
        return drift
    finally:
        for level, value in zip(model.top_down_levels, saved):
            level.stochastic.posterior_logvar_max = value


def safe_tile(drift: dict[int, float], limit: float = TILE_CHECK_LIMIT) -> int | None:
    """The largest tile size such that it and every smaller size have a drift within
    ``limit`` (a tile larger than an image is clipped to the image, so a passing 512 does
    not excuse a drifting 256); None when the smallest drifts."""
    best = None
    for size in sorted(drift):
        if drift[size] > limit:
            break
        best = size
    return best


def tile_check(model: LadderVAE, frames: Sequence[np.ndarray], *, seed: int = 0) -> dict[str, Any]:
    """The record stored in a checkpoint's provenance as ``tile_check``:
    ``drift`` ({tile px: ratio}), ``limit`` (``TILE_CHECK_LIMIT``), ``samples``, and
    ``safe_tile`` (:func:`safe_tile`; None: the MMSE is offset even in tiles of twice the
    patch, train longer)."""
    drift = measure_tile_drift(model, frames, seed=seed)
    return {"drift": {str(size): round(ratio, 4) for size, ratio in drift.items()},
            "limit": TILE_CHECK_LIMIT, "samples": N_SAMPLES, "safe_tile": safe_tile(drift)}
