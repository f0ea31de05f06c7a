"""PyTorch pieces of the GPU suite (any torch device; ``cuda`` on the GPU machine).

- :func:`reference_seconds`: the reference algorithm on the device (full pass per sample,
  batch 1, no tiling, per-level KL computed as the reference forward does; the noise-model
  likelihood term is left out).
- :class:`TorchBackend`: the two-call backend contract on torch, the stand-in for a GPU
  backend where TensorRT is absent (runs under :class:`hdn_deploy.denoiser.Denoiser`, so
  latents are the runtime's seeded numpy ones, drawn on the CPU).
- :func:`device_sampler`: everything on the device: encoder once per tile, eps drawn on
  the GPU with torch, per-tile moments on the device; tiles blended on the host.
"""
from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hdn_deploy.backends.base import Backend
from hdn_deploy.package import ModelPackage
from hdn_deploy.tiling import Tiler
from hdn_deploy.training.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from hdn_deploy.training.config import ModelConfig
from hdn_deploy.training.data import Normalization
from hdn_deploy.training.model import LadderVAE
from hdn_deploy.training.noise_models import GaussianNoiseModel


def random_checkpoint(path: Path, config: ModelConfig, *, mean: float, std: float) -> Path:
    """An untrained checkpoint (timings only: its denoising quality is meaningless)."""
    torch.manual_seed(0)
    meta, arrays = GaussianNoiseModel(std).state()
    ckpt = Checkpoint(model_config=config, normalization=Normalization(mean, std),
                      model_state=LadderVAE(config).state_dict(), likelihood=meta,
                      likelihood_arrays=arrays, provenance={"note": "random init, GPU suite"})
    return save_checkpoint(path, ckpt)


def load_model(checkpoint: str | Path, device: str) -> LadderVAE:
    return load_checkpoint(checkpoint).build_model().to(device).eval()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _autocast(device: torch.device, half: bool):
    if not half:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.float16 if device.type == "cuda" else torch.bfloat16)


def reference_seconds(model: LadderVAE, image_norm: np.ndarray, n_samples: int, *,
                      grad: bool, seed: int = 0) -> list[float]:
    """Seconds per sample of the reference: full pass at batch 1, result copied to host."""
    device = next(model.parameters()).device
    x = torch.from_numpy(np.ascontiguousarray(image_norm[None, None], np.float32)).to(device)
    generator = torch.Generator(device).manual_seed(seed)
    seconds = []
    with torch.set_grad_enabled(grad):
        for _ in range(n_samples + 1):  # the first is a warm-up
            start = time.perf_counter()
            eps = model.draw_eps(1, x.shape[2], x.shape[3], generator)
            out = model.top_down(model.bottom_up(x), eps, prediction=True, compute_kl=True)
            out.signal.detach().cpu().numpy()
            seconds.append(time.perf_counter() - start)
            del out, eps
    return seconds[1:]


class TorchBackend(Backend):
    """Backend contract on a torch device (numpy in/out; features cached on the device)."""

    name = "torch"

    def __init__(self, package: ModelPackage, checkpoint: str | Path, *, device: str = "cuda",
                 half: bool = False):
        super().__init__(package)
        self.device = torch.device(device)
        self.model = load_model(checkpoint, device)
        self.half = half
        self._host: tuple = ()
        self._device_bu: list = []

    def _encode(self, image: np.ndarray) -> list[np.ndarray]:
        with torch.no_grad(), _autocast(self.device, self.half):
            bu = self.model.bottom_up(torch.from_numpy(image).to(self.device))
        self._device_bu = [bu[i].float() for i in self.levels]
        self._host = tuple(b.cpu().numpy() for b in self._device_bu)
        return list(self._host)

    def _decode(self, features: list[np.ndarray], eps: list[np.ndarray]) -> np.ndarray:
        n_levels = self.model.config.n_levels
        same = len(features) == len(self._host) and all(a is b for a, b in zip(features, self._host))
        device_bu = self._device_bu if same else [torch.from_numpy(f).to(self.device) for f in features]
        bu: list = [None] * n_levels
        full_eps: list = [None] * n_levels
        for j, level in enumerate(self.levels):
            bu[level] = device_bu[j]
            full_eps[level] = torch.from_numpy(eps[j]).to(self.device, non_blocking=True)
        with torch.no_grad(), _autocast(self.device, self.half):
            signal = self.model.top_down(bu, full_eps, prediction=True, compute_kl=False).signal
        return signal.float().cpu().numpy()

    def describe(self) -> dict:
        return {"name": self.name, "device": str(self.device), "half": self.half,
                "torch_version": torch.__version__}


class _PhaseTimer:
    """Seconds per phase: CUDA events on a GPU (no per-phase sync), perf_counter elsewhere."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.marks: list[tuple[str, Any, Any]] = []

    @contextlib.contextmanager
    def __call__(self, phase: str):
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            yield
            end.record()
        else:
            start = time.perf_counter()
            yield
            end = time.perf_counter()
        self.marks.append((phase, start, end))

    def totals(self) -> dict[str, float]:
        if self.cuda:
            torch.cuda.synchronize()
        totals: dict[str, float] = {}
        for phase, start, end in self.marks:
            seconds = start.elapsed_time(end) / 1e3 if self.cuda else end - start
            totals[phase] = totals.get(phase, 0.0) + seconds
        return totals


def device_sampler(model: LadderVAE, image_norm: np.ndarray, tiler: Tiler, *, n_samples: int,
                   batch_size: int, half: bool = False, seed: int = 0) -> dict[str, Any]:
    """MMSE and std of ``image_norm`` (normalised units) with everything on the device."""
    device = next(model.parameters()).device
    generator = torch.Generator(device).manual_seed(seed)
    sampled = model.sampled_levels()
    plan = tiler.plan(image_norm.shape)
    merger = tiler.merger(plan)
    timer = _PhaseTimer(device)
    tile_seconds = []
    _sync(device)
    start = time.perf_counter()
    with torch.no_grad(), _autocast(device, half):
        for tile, patch in tiler.iter_tiles(image_norm, plan):
            t0 = time.perf_counter()
            with timer("encode"):
                bu = model.bottom_up(torch.from_numpy(np.ascontiguousarray(patch[None, None])).to(device))
            s1 = torch.zeros(patch.shape, device=device)
            s2 = torch.zeros(patch.shape, device=device)
            shapes = model.latent_shapes(*patch.shape)
            for first in range(0, n_samples, batch_size):
                b = min(batch_size, n_samples - first)
                with timer("latents"):
                    eps = [torch.randn((b, *shapes[i]), generator=generator, device=device)
                           if i in sampled else None for i in range(len(shapes))]
                with timer("decode"):
                    signal = model.top_down(bu, eps, prediction=True, compute_kl=False).signal
                with timer("stats"):
                    signal = signal.float()[:, 0]
                    s1 += signal.sum(0)
                    s2 += (signal * signal).sum(0)
            tile_mean = s1 / n_samples
            tile_var = torch.clamp(s2 / n_samples - tile_mean * tile_mean, min=0)
            merger.add(tile, torch.stack([tile_mean, tile_var]).cpu().numpy())
            tile_seconds.append(time.perf_counter() - t0)
    merged = merger.finalize()
    mean, std = merged[0].astype(np.float32), np.sqrt(merged[1]).astype(np.float32)
    wall = time.perf_counter() - start
    phases = timer.totals()
    return {"mean": mean, "std": std, "wall_s": wall, "tile_seconds": tile_seconds,
            "phases_s": phases, "latent_share": phases.get("latents", 0.0) / max(sum(phases.values()), 1e-12),
            "tiles": len(tile_seconds)}
