"""The reference prediction algorithm, timed: PyTorch, a full pass per sample, batch 1.

This is how the published HDN predicts: the model in eval mode; for every sample a
complete forward pass (bottom-up + top-down, with the per-level KL and the likelihood
that its forward computes), batch 1, the whole image at once (no tiling; the image is
padded, centred, with zeros in normalised units to a multiple of 2**levels and cropped
back), gradients left on (the ``no_grad`` variant is also available). The model is
built from the same checkpoint the model package was exported from (same weights).

Usage as a script (one isolated process, so its peak RSS is its own)::

    python -m hdn_deploy.training.reference CHECKPOINT --size 256 --repeats 3 [--no-grad] [-o ref.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from hdn_deploy._optional import require
from hdn_deploy.atomic import atomic_write_text
from hdn_deploy.benchmark import machine_info, peak_rss_mb, summarize, synthetic_image
from hdn_deploy.package import sha256_file

__all__ = ["ReferencePredictor", "reference_seconds_per_sample"]


class ReferencePredictor:
    """The reference algorithm around a checkpoint's LadderVAE.

    Parameters
    ----------
    checkpoint
        ``best.safetensors`` of a training run.
    threads
        ``torch.set_num_threads`` (None: leave torch's default).
    with_loss
        Also compute the likelihood of the input under the noise model, as the
        reference forward pass does (skipped if the checkpoint has no noise model).
    """

    def __init__(self, checkpoint: str | Path, *, threads: int | None = None,
                 with_loss: bool = True) -> None:
        self.torch = require("torch", purpose="the PyTorch reference benchmark")
        from hdn_deploy.training.checkpoint import load_checkpoint

        if threads:
            self.torch.set_num_threads(int(threads))
        self.checkpoint = Path(checkpoint)
        ckpt = load_checkpoint(self.checkpoint)
        self.model = ckpt.build_model()
        self.mean = float(ckpt.normalization.mean)
        self.std = float(ckpt.normalization.std)
        self.weights_sha256 = sha256_file(self.checkpoint)
        self.noise_model = None
        if with_loss and ckpt.likelihood:
            try:
                self.noise_model = ckpt.build_noise_model()
            except Exception:  # noqa: BLE001 - a timing aid only; the network dominates
                self.noise_model = None

    @property
    def spatial_multiple(self) -> int:
        return int(self.model.config.spatial_multiple)

    def _prepare(self, image: np.ndarray):
        """Normalise and centre-pad to the spatial multiple; returns (x, crop slices)."""
        image = np.asarray(image, dtype=np.float32)
        m = self.spatial_multiple
        h, w = image.shape
        ph, pw = -(-h // m) * m, -(-w // m) * m
        top, left = (ph - h) // 2, (pw - w) // 2
        x = np.zeros((1, 1, ph, pw), dtype=np.float32)
        x[0, 0, top:top + h, left:left + w] = (image - self.mean) / self.std
        return self.torch.from_numpy(x), (slice(top, top + h), slice(left, left + w))

    def _sample(self, x, raw, generator):
        """One complete forward pass at batch 1: the reference's per-sample work."""
        model = self.model
        eps = model.draw_eps(1, x.shape[2], x.shape[3], generator)
        result = model.top_down(model.bottom_up(x), eps, prediction=True, compute_kl=True)
        signal = result.signal
        if self.noise_model is not None:
            self.noise_model.log_likelihood(raw, signal * self.std + self.mean).mean()
        return signal

    def time_samples(self, image: np.ndarray, n_samples: int, *, grad: bool = True,
                     seed: int = 0) -> list[float]:
        """Seconds of each of ``n_samples`` samples (including the copy to numpy)."""
        torch = self.torch
        x, crop = self._prepare(image)
        raw = x * self.std + self.mean
        generator = torch.Generator().manual_seed(seed)
        seconds = []
        with torch.set_grad_enabled(grad):
            for _ in range(n_samples):
                start = time.perf_counter()
                signal = self._sample(x, raw, generator)
                signal.detach().numpy()[0, 0][crop] * self.std + self.mean
                seconds.append(time.perf_counter() - start)
                del signal
        return seconds

    def predict(self, image: np.ndarray, n_samples: int, *, seed: int = 0) -> np.ndarray:
        """MMSE of ``n_samples`` reference samples (no_grad), raw units."""
        torch = self.torch
        x, crop = self._prepare(image)
        raw = x * self.std + self.mean
        generator = torch.Generator().manual_seed(seed)
        total = np.zeros(np.shape(image), dtype=np.float64)
        with torch.no_grad():
            for _ in range(n_samples):
                total += self._sample(x, raw, generator).numpy()[0, 0][crop]
        return (total / n_samples * self.std + self.mean).astype(np.float32)

    def mean_pass(self, image: np.ndarray) -> np.ndarray:
        """One pass with every level at its posterior mean (eps = 0), raw units."""
        torch = self.torch
        x, crop = self._prepare(image)
        with torch.no_grad():
            bu = self.model.bottom_up(x)
            eps = [None] * self.model.config.n_levels
            signal = self.model.top_down(bu, eps, prediction=True, compute_kl=False).signal
        return (signal.numpy()[0, 0][crop] * self.std + self.mean).astype(np.float32)


def reference_seconds_per_sample(
    checkpoint: str | Path,
    size: int,
    repeats: int,
    grad: bool = True,
    *,
    n_samples: int = 1,
    threads: int | None = None,
    image: np.ndarray | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Time the reference algorithm on a ``size x size`` image (or ``image``).

    One warm-up sample, then ``repeats`` rounds of ``n_samples`` samples.

    Returns
    -------
    dict
        ``seconds_per_sample`` (median and spread over rounds, each round's mean),
        ``settings``, ``weights_sha256``, ``peak_rss_mb`` (process peak so far).
    """
    predictor = ReferencePredictor(checkpoint, threads=threads)
    if image is None:
        image = synthetic_image(size, mean=predictor.mean, std=predictor.std, seed=seed)
    predictor.time_samples(image, 1, grad=grad, seed=seed + 1)  # warm-up
    rounds = [float(np.mean(predictor.time_samples(image, n_samples, grad=grad, seed=seed + r)))
              for r in range(repeats)]
    return {
        "kind": "reference (PyTorch, full pass per sample, batch 1, no tiling)",
        "settings": {"image_shape": list(np.shape(image)), "grad": grad, "repeats": repeats,
                     "n_samples": n_samples, "threads": predictor.torch.get_num_threads()},
        "weights_sha256": predictor.weights_sha256,
        "seconds_per_sample": summarize(rounds),
        "peak_rss_mb": peak_rss_mb(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--samples", type=int, default=1, help="samples per repeat")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--no-grad", action="store_true")
    parser.add_argument("-o", "--output", type=Path)
    args = parser.parse_args(argv)
    result = reference_seconds_per_sample(args.checkpoint, args.size, args.repeats,
                                          grad=not args.no_grad, n_samples=args.samples,
                                          threads=args.threads)
    result["machine"] = machine_info()
    text = json.dumps(result, indent=2)
    if args.output:
        atomic_write_text(args.output, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
