"""What each latent level encodes: :meth:`Denoiser.explain` and ``hdn-deploy explain``.

HDN's latent levels run from fine (level 0: one latent pixel per 2x2 image pixels) to
coarse (level i: 2**(i+1) pixels). A level at its posterior mean has ``eps = 0``, i.e.
``z_i = mu_i``: the decoder graphs take ``eps`` per level, so this needs the model
package only (no PyTorch). Two views, as the HDN paper uses them to show what each level
encodes and to choose the unconditional levels that remove structured noise (Prakash,
Delbracio, Milanfar, Jug, "Interpretable Unsupervised Diversity Denoising and Artefact
Removal", ICLR 2022):

* **Spread of one level.** Every other sampled level at its mean, level ``l`` sampled
  (``n_samples`` independent samples, ``"mc"`` mode: exactly the latents a denoise run
  with the same seed draws for level ``l``); the per-pixel std over those samples is the
  variation that level alone contributes.
* **Levels to their mean from the finest up.** The MMSE (``n_samples`` antithetic
  samples) with no level at its mean, then level 0, then levels 0-1, ... at their mean;
  the last (all levels at their mean) is one pass, as ``sampling="mean"``. A line
  artefact that disappears once level ``l`` is at its mean is carried by level ``l``.

Every view is one :meth:`Denoiser.iter_denoise` run with ``mean_levels`` (same tiles,
margin, blending and latent contract as denoising), so ``2 L + 1`` runs for ``L``
sampled levels. Unconditional levels (``levels[].sampled`` false in the manifest) are
at their mean in every view: the graph has no eps for them.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from .errors import InputError, OutOfRangeWarning

if TYPE_CHECKING:  # pragma: no cover
    from .denoiser import Denoiser

__all__ = ["Explanation", "explain", "write_explanation"]

DEFAULT_EXPLAIN_SAMPLES = 8
MONTAGE_PANEL = 384  # longest side of a montage panel, pixels (the TIFF has full size)


def _span(levels: Sequence[int]) -> str:
    """'level 0', 'levels 0-2' or 'levels 2, 4' for labels."""
    if len(levels) == 1:
        return f"level {levels[0]}"
    if list(levels) == list(range(levels[0], levels[-1] + 1)):
        return f"levels {levels[0]}-{levels[-1]}"
    return "levels " + ", ".join(map(str, levels))


def _mean_labels(levels: Sequence[int]) -> list[str]:
    labels = ["MMSE, every level sampled"]
    for k in range(1, len(levels) + 1):
        every = " (all)" if k == len(levels) and k > 1 else ""
        labels.append(f"{_span(levels[:k])} at mean{every}")
    return labels


@dataclass(frozen=True)
class Explanation:
    """Result of :meth:`Denoiser.explain`, in the input's intensity units.

    Attributes
    ----------
    image : numpy.ndarray
        float32 ``(Y, X)``: the input.
    levels : tuple of int
        The model's sampled latent levels, finest first (``L`` of them).
    uncond_levels : tuple of int
        Unconditional levels (always at their mean; no eps input).
    level_std : numpy.ndarray
        float32 ``(L, Y, X)``: plane ``i`` is the per-pixel std over ``n_samples``
        samples with ``levels[i]`` sampled and every other level at its mean.
    mean_decodes : numpy.ndarray
        float32 ``(L + 1, Y, X)``: plane ``k`` is the MMSE with ``levels[:k]`` at their
        mean (plane 0: every level sampled; plane ``L``: every level at its mean).
    metadata : dict
        Seed, sample count, settings, model hash, versions, plane labels and the mean
        std per level (``explain.level_spread``, intensity units).
    """

    image: np.ndarray
    levels: tuple[int, ...]
    uncond_levels: tuple[int, ...]
    level_std: np.ndarray
    mean_decodes: np.ndarray
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def mean_labels(self) -> list[str]:
        """Labels of ``mean_decodes``' planes."""
        return _mean_labels(self.levels)

    @property
    def std_labels(self) -> list[str]:
        """Labels of ``level_std``' planes."""
        return [f"std, level {lv} alone" for lv in self.levels]

    @property
    def labels(self) -> list[str]:
        """Labels of the planes of :meth:`stack`."""
        return ["input", *self.mean_labels, *self.std_labels]

    def stack(self) -> np.ndarray:
        """float32 ``(2 L + 2, Y, X)``: input, ``mean_decodes``, ``level_std``."""
        return np.concatenate([self.image[None], self.mean_decodes, self.level_std]).astype(
            np.float32)


def explain(denoiser: "Denoiser", image: np.ndarray, *, n_samples: int = DEFAULT_EXPLAIN_SAMPLES,
            seed: int = 0, tile: int | None = None, overlap: int | None = None,
            margin: int | None = None, blend: str = "hann", batch_size: int = 1,
            allow_out_of_range: bool = False,
            on_progress: Callable[[int, int], None] | None = None) -> Explanation:
    """Per-level spread and levels-to-mean decodes of one 2D image (module docstring).

    Parameters are those of :meth:`Denoiser.iter_denoise`; ``n_samples`` (8) is the
    number of samples of each view. ``on_progress(done, total)`` is called after each
    of the ``2 L + 1`` runs.

    Raises
    ------
    InputError
        For anything but a finite 2D image (or an input out of the model's range, as
        denoising does).
    ConfigError
        For invalid options.
    """
    array = np.asarray(image)
    if array.ndim != 2:
        raise InputError(f"explain takes one 2D image (Y, X); got shape {array.shape}: "
                         "save the plane to explain as its own file")
    levels = tuple(lv.index for lv in denoiser.package.sampled_levels)
    common = dict(n_samples=n_samples, seed=seed, tile=tile, overlap=overlap, margin=margin,
                  blend=blend, batch_size=batch_size)
    runs = ([dict(sampling="antithetic", mean_levels=levels[:k]) for k in range(len(levels) + 1)]
            + [dict(sampling="mc", mean_levels=[o for o in levels if o != lv]) for lv in levels])
    results = []
    for done, run in enumerate(runs, start=1):
        with warnings.catch_warnings():
            if done > 1:  # the range check warned (or refused) on the first run already
                warnings.simplefilter("ignore", OutOfRangeWarning)
            results.append(denoiser.denoise(array, allow_out_of_range=allow_out_of_range or done > 1,
                                            **common, **run))
        if on_progress is not None:
            on_progress(done, len(runs))
    mean_decodes = np.stack([r.mmse for r in results[:len(levels) + 1]])
    level_std = np.stack([r.std for r in results[len(levels) + 1:]])
    return _explanation(array.astype(np.float32), levels, denoiser, mean_decodes, level_std,
                        results[0].metadata, n_samples)


def _explanation(image, levels, denoiser, mean_decodes, level_std, base, n_samples) -> Explanation:
    uncond = tuple(denoiser.package.manifest.uncond_levels)
    meta = {k: v for k, v in base.items() if k not in ("sampling", "mean_levels", "n_samples")}
    meta["explain"] = {
        "n_samples": int(n_samples),
        "levels": list(levels),
        "uncond_levels": list(uncond),
        "mean_decodes_sampling": "antithetic",
        "level_std_sampling": "mc",
        "level_spread": {str(lv): float(s.mean()) for lv, s in zip(levels, level_std)},
    }
    result = Explanation(image=image, levels=levels, uncond_levels=uncond, level_std=level_std,
                         mean_decodes=mean_decodes, metadata=meta)
    meta["explain"]["planes"] = result.labels
    return result


def write_explanation(result: Explanation, out_dir: str | Path, stem: str) -> tuple[Path, Path]:
    """Write ``<stem>_explain.tif`` (float32 ImageJ stack ``(2 L + 2, Y, X)``, one label
    per plane, metadata as JSON in ``Info``) and ``<stem>_explain.png`` (montage: the
    input and the levels-to-mean decodes in the first row, the per-level std in the
    second, all std panels on one shared scale). Atomic; returns both paths.

    Raises InputError if the folder cannot be written."""
    from .demo import write_grid
    from .io import write_tiff_atomic

    out_dir = Path(out_dir)
    tif = write_tiff_atomic(out_dir / f"{stem}_explain.tif", result.stack(),
                            metadata={**result.metadata, "kind": "explain"}, axes="SYX",
                            labels=result.labels)
    low, high = (float(v) for v in np.percentile(result.mean_decodes[0], [0.5, 99.5]))
    std_high = max(float(np.percentile(result.level_std, 99.5)), 1e-12)
    spread = result.metadata["explain"]["level_spread"]
    top = [("input", result.image, (low, high))]
    top += [(label, plane, (low, high)) for label, plane in zip(result.mean_labels,
                                                                 result.mean_decodes)]
    bottom = [(f"{label} (mean {spread[str(lv)]:.3g})", plane, (0.0, std_high))
              for lv, label, plane in zip(result.levels, result.std_labels, result.level_std)]
    uncond = (f"; unconditional (always at mean): {_span(result.uncond_levels)}"
              if result.uncond_levels else "")
    title = (f"{result.metadata['explain']['n_samples']} samples, seed {result.metadata['seed']}; "
             f"level 0 finest{uncond}. Row 1: levels set to their mean from the finest up "
             f"(grey range {low:.4g}-{high:.4g}). Row 2: spread each level adds alone "
             f"(std, 0-{std_high:.3g}).")
    png = write_grid(out_dir / f"{stem}_explain.png", [top, bottom], title=title,
                     max_side=MONTAGE_PANEL)
    return tif, png
