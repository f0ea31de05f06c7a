"""Shared fixtures: synthetic noisy images and a tiny trained + exported HDN model."""
from __future__ import annotations

import os
from pathlib import Path

import subprocess
import sys

import numpy as np
import pytest
import tifffile

# napari/Qt tests run headless (CI has no display): Qt renders offscreen, no xvfb needed.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

TINY_ARCH = dict(z_dims=(4, 4, 4), n_filters=8, blocks_per_level=1, patch_size=32, dropout=0.1)
SIGMA = 20.0


def synthetic_clean(height: int = 160, width: int = 160, seed: int = 0) -> np.ndarray:
    """Smooth blobs and edges in [20, 230]: an image with structure to learn."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    image = 60 + 40 * np.sin(x / 11.0) * np.cos(y / 7.0)
    for _ in range(12):
        cy, cx, r = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(5, 20)
        image += 100 * ((y - cy) ** 2 + (x - cx) ** 2 < r**2)
    return np.clip(image, 20, 230).astype(np.float32)


def noisy(clean: np.ndarray, sigma: float = SIGMA, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (clean + rng.normal(0, sigma, clean.shape)).astype(np.float32)


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """Shared 2-core machines: two torch threads waiting on a busy core make small ops
    ~250x slower; one thread per process keeps the suite fast and predictable."""
    try:
        import torch
    except ImportError:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("data")
    clean = synthetic_clean()
    tifffile.imwrite(folder / "clean.tif", clean)
    tifffile.imwrite(folder / "noisy.tif", noisy(clean))
    return folder


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, data_dir) -> Path:
    """A tiny model trained for 60 steps with a Gaussian likelihood."""
    from hdn_deploy.training.config import ModelConfig, TrainConfig
    from hdn_deploy.training.noise_models import GaussianNoiseModel
    from hdn_deploy.training.trainer import train

    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    train([data_dir / "noisy.tif"], run_dir, model_config=ModelConfig(**TINY_ARCH),
          train_config=TrainConfig(batch_size=8, max_steps=60, steps_per_epoch=20, val_patches=16,
                                   seed=0),
          noise_model=GaussianNoiseModel(SIGMA), progress=False)
    return run_dir


@pytest.fixture(scope="session")
def tiny_package(tmp_path_factory, tiny_run) -> Path:
    from hdn_deploy.export import package_from_checkpoint

    return package_from_checkpoint(tiny_run / "best.safetensors",
                                   tmp_path_factory.mktemp("pkg") / "tiny", tile_size=64, overlap=16)


BLOCK_TORCH = """
import sys


class BlockTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError(f"import of {name} blocked by the test")
        return None


sys.meta_path.insert(0, BlockTorch())
"""


def run_without_torch(code: str, *args: str, cwd: Path, timeout: int = 300):
    """Run ``code`` in a fresh interpreter in which importing torch fails."""
    script = Path(cwd) / "no_torch_script.py"
    script.write_text(BLOCK_TORCH + code)
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)
