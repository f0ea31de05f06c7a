"""Export a trained HDN checkpoint to a model package of two ONNX graphs.

Why two graphs: the bottom-up (encoder) half is deterministic and about a fifth of the
compute; the runtime runs ``encoder.onnx`` once per tile and ``decoder.onnx`` once per
batch of samples, however the samples are batched. Every random latent ``eps_<level>`` is
a decoder input, so the graphs contain no random operators and the runtime owns all
randomness (seeded, see ``hdn_deploy.latents``).
"""
from __future__ import annotations

import json
import warnings
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from torch import nn

from hdn_deploy._version import __version__
from hdn_deploy.errors import ConfigError, HDNWarning, PackageError
from hdn_deploy.atomic import staged_folder
from hdn_deploy.manifest import (
    FORMAT_NAME,
    FORMAT_VERSION,
    ExportInfo,
    GraphEntry,
    Graphs,
    IntensityRange,
    LevelInfo,
    Manifest,
    Normalization,
    manifest_to_json,
    signal_range_of,
)
from hdn_deploy.package import DECODER_FILE, ENCODER_FILE, MANIFEST_FILE, sha256_file
from hdn_deploy.schema import freeze

from ..training.checkpoint import load_checkpoint
from ..training.model import LadderVAE

DEFAULT_OPSET = 18
VERIFY_TOLERANCE = 1e-4
DEFAULT_POSTERIOR_LOGVAR_MAX = 4.0


class EncoderGraph(nn.Module):
    """image (1, 1, H, W), normalised -> bottom-up features of the conditioned levels."""

    def __init__(self, model: LadderVAE):
        super().__init__()
        self.model = model
        self.levels = conditioned_levels(model)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        features = self.model.bottom_up(image)
        return tuple(features[i] for i in self.levels)


class DecoderGraph(nn.Module):
    """(bu_<i>..., eps_<i>...) -> samples (N, 1, H, W), normalised.

    ``bu_<i>`` has batch 1 and broadcasts over the N samples given by ``eps_<i>``.
    """

    def __init__(self, model: LadderVAE):
        super().__init__()
        self.model = model
        self.levels = conditioned_levels(model)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        k = len(self.levels)
        bu: list[torch.Tensor | None] = [None] * self.model.config.n_levels
        eps: list[torch.Tensor | None] = [None] * self.model.config.n_levels
        for j, level in enumerate(self.levels):
            bu[level], eps[level] = inputs[j], inputs[k + j]
        return self.model.top_down(bu, eps, prediction=True, compute_kl=False).signal


def conditioned_levels(model: LadderVAE) -> list[int]:
    """Levels that read the bottom-up input and draw eps (all but the uncond ones)."""
    return model.sampled_levels()


def _export(module: nn.Module, args: tuple, path: Path, input_names, output_names,
            dynamic_axes, opset: int) -> None:
    module.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # The TorchScript-based exporter: exact for this network (verified below) and much
        # faster than the dynamo exporter; dynamic axes by name.
        torch.onnx.export(
            module, args, str(path), input_names=input_names, output_names=output_names,
            dynamic_axes=dynamic_axes, opset_version=opset, dynamo=False,
            do_constant_folding=True,
        )
    module.eval()


def _fix_channels(path: Path, channels: int) -> None:
    """State the channel count of every graph output (the exporter leaves the encoder's
    ``bu_<i>`` channels symbolic), so that loading can check them against the manifest."""
    import onnx

    graph = onnx.load(str(path))
    for output in graph.graph.output:
        dim = output.type.tensor_type.shape.dim[1]
        if not dim.HasField("dim_value"):
            dim.Clear()
            dim.dim_value = channels
    onnx.save(graph, str(path))


def _verification_image(size: int, seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.standard_normal((1, 1, size, size), dtype=np.float32))


def verify_package(folder: Path, model: LadderVAE, *, size: int, n_samples: int = 2,
                   seed: int = 0, tolerance: float = VERIFY_TOLERANCE) -> float:
    """Run both ONNX graphs in onnxruntime and the model in PyTorch on the same image and
    eps; return the max abs difference (normalised units); PackageError above tolerance."""
    import onnx
    import onnxruntime as ort

    for name in (ENCODER_FILE, DECODER_FILE):
        onnx.checker.check_model(str(folder / name), full_check=True)
    levels = conditioned_levels(model)
    image = _verification_image(size, seed)
    rng = np.random.default_rng(seed + 1)
    eps = [
        rng.standard_normal((n_samples, c, h, w), dtype=np.float32)
        for (c, h, w) in model.latent_shapes(size, size)
    ]
    with torch.no_grad():
        bu = model.bottom_up(image)
        torch_eps: list[torch.Tensor | None] = [torch.from_numpy(e) for e in eps]
        expected = model.top_down(bu, torch_eps, prediction=True, compute_kl=False).signal.numpy()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    enc = ort.InferenceSession(str(folder / ENCODER_FILE), options, providers=["CPUExecutionProvider"])
    dec = ort.InferenceSession(str(folder / DECODER_FILE), options, providers=["CPUExecutionProvider"])
    features = enc.run(None, {"image": image.numpy()})
    feed = {f"bu_{i}": f for i, f in zip(levels, features)}
    feed.update({f"eps_{i}": eps[i] for i in levels})
    got = dec.run(None, feed)[0]
    diff = float(np.abs(got - expected).max())
    if not diff <= tolerance:
        raise PackageError(
            f"export verification failed: onnxruntime differs from PyTorch by {diff:.3g} "
            f"(normalised units), above the tolerance {tolerance:g}"
        )
    return diff


def package_from_checkpoint(
    checkpoint: str | Path,
    output: str | Path,
    *,
    opset: int = DEFAULT_OPSET,
    tile_size: int | None = None,
    overlap: int | None = None,
    verify: bool = True,
    overwrite: bool = False,
    description: str | None = None,
    posterior_logvar_max: float | None = DEFAULT_POSTERIOR_LOGVAR_MAX,
    allow_collapsed: bool = False,
) -> Path:
    """Write a model package folder for the runtime from a training checkpoint.

    Parameters
    ----------
    checkpoint
        ``best.safetensors`` (or any checkpoint) of a training run.
    output
        Package folder to create (written to a temporary folder, then renamed).
    opset
        ONNX opset (>= 18).
    tile_size, overlap
        Recommended tiling stored in the manifest. Default tile: the largest tile in which
        training's tile check found no drift (``tile_check`` in the checkpoint's provenance,
        see ``training/tile_check.py``), else 8x the training patch; default overlap: 1x the
        patch (both multiples of 2**levels). A tile above the checked one warns
        (HDNWarning).
    verify
        Check the graphs with onnx.checker and against PyTorch (max abs diff <= 1e-4).
    overwrite
        Replace an existing package folder.
    description
        Free text stored as ``noise_description`` (e.g. the noise the model is for).
    posterior_logvar_max
        Upper clamp of the posterior log-variance in the exported graphs (default 4: the
        prior is N(0, 1), so a posterior std above e**2 only appears when a model is fed
        inputs far from its training regime). ``None`` keeps the training clamp only.
    allow_collapsed
        Export even a checkpoint whose training validation found a posterior collapse
        (recorded in its provenance): such a model returns a flat image, worse than its
        input, so it is refused by default.

    Raises
    ------
    PackageError
        For an existing output (without ``overwrite``), an old opset, or a collapsed model
        (without ``allow_collapsed``).
    """
    if opset < 18:
        raise PackageError(f"opset {opset} is too old; use 18 or newer")
    checkpoint = Path(checkpoint)
    output = Path(output)
    if output.exists() and not overwrite:
        raise PackageError(f"{output} exists already; remove it or pass --overwrite")
    ckpt = load_checkpoint(checkpoint)
    collapse = (ckpt.provenance or {}).get("collapse")
    if collapse and not allow_collapsed:
        raise PackageError(
            f"{checkpoint}: this model collapsed in training ({collapse}): its latents carry "
            "(almost) nothing, so it would return a flat image, worse than its input; refusing "
            "to export it. Retrain (see the advice in the training log, or --stop-on-collapse), "
            "export an earlier snapshot, or pass --allow-collapsed to export it anyway.")
    model = ckpt.build_model()
    for level in model.top_down_levels:
        level.stochastic.posterior_logvar_max = posterior_logvar_max
    cfg = model.config
    multiple = cfg.spatial_multiple
    tile = tile_size or recommended_tile(ckpt.provenance, cfg)
    _warn_drifting_tile(ckpt.provenance, tile)
    ovl = overlap if overlap is not None else max(cfg.patch_size, multiple)
    if tile < multiple or tile % multiple or ovl % multiple or not 0 <= ovl < tile:
        raise ConfigError(
            f"recommended tile {tile} / overlap {ovl} do not fit this model: both must be "
            f"multiples of {multiple} (2**levels) with 0 <= overlap < tile; e.g. "
            f"--tile {4 * multiple} --overlap {multiple}"
        )
    levels = conditioned_levels(model)
    size = max(cfg.patch_size, multiple)
    example = _verification_image(size, 0)

    with staged_folder(output) as staging:
        with torch.no_grad():
            features = model.bottom_up(example)
            eps = model.draw_eps(2, size, size, torch.Generator().manual_seed(0))
        bu_names = [f"bu_{i}" for i in levels]
        eps_names = [f"eps_{i}" for i in levels]
        spatial = {2: "height", 3: "width"}
        _export(
            EncoderGraph(model), (example,), staging / ENCODER_FILE, ["image"], bu_names,
            {"image": spatial, **{n: {2: f"h_{i}", 3: f"w_{i}"} for n, i in zip(bu_names, levels)}},
            opset,
        )
        _fix_channels(staging / ENCODER_FILE, cfg.n_filters)
        _export(
            DecoderGraph(model),
            tuple(features[i] for i in levels) + tuple(eps[i] for i in levels),
            staging / DECODER_FILE, bu_names + eps_names, ["samples"],
            {
                **{n: {2: f"h_{i}", 3: f"w_{i}"} for n, i in zip(bu_names, levels)},
                **{n: {0: "n_samples", 2: f"h_{i}", 3: f"w_{i}"} for n, i in zip(eps_names, levels)},
                "samples": {0: "n_samples", 2: "height", 3: "width"},
            },
            opset,
        )
        diff = verify_package(staging, model, size=size) if verify else None
        manifest = manifest_for_checkpoint(
            ckpt, checkpoint, staging, tile=tile, overlap=ovl, opset=opset, max_abs_diff=diff,
            description=description, posterior_logvar_max=posterior_logvar_max)
        (staging / MANIFEST_FILE).write_text(json.dumps(manifest_to_json(manifest), indent=2))
    return output


def recommended_tile(provenance: dict, cfg) -> int:
    """The tile export recommends without ``--tile``: the tile check's ``safe_tile``; twice
    the patch when the check found drift at every size; 8x the patch without a check (older
    checkpoints, snapshots)."""
    check = (provenance or {}).get("tile_check") or {}
    base = max(cfg.patch_size, cfg.spatial_multiple)
    if check.get("safe_tile"):
        return int(check["safe_tile"])
    if check.get("drift"):
        return 2 * base
    return 8 * base


def _warn_drifting_tile(provenance: dict, tile: int) -> None:
    check = (provenance or {}).get("tile_check") or {}
    drift = {int(size): ratio for size, ratio in (check.get("drift") or {}).items()}
    worse = {size: ratio for size, ratio in drift.items() if size <= tile and ratio > check["limit"]}
    if worse:
        warnings.warn(
            f"recommended tile {tile}: training's tile check found this model's MMSE offset "
            f"from its input in tiles of {sorted(worse)} px (drift {worse}, limit "
            f"{check['limit']}); " + (f"use --tile {check['safe_tile']} (the default)"
                                      if check.get("safe_tile") else "train longer"),
            HDNWarning, stacklevel=3)


def manifest_for_checkpoint(ckpt, checkpoint: Path, staging: Path, *, tile: int, overlap: int,
                            opset: int, max_abs_diff: float | None, description: str | None,
                            posterior_logvar_max: float | None) -> Manifest:
    """The manifest of the graphs in ``staging`` exported from checkpoint ``ckpt``."""
    cfg = ckpt.model_config
    return Manifest(
        format=FORMAT_NAME,
        format_version=FORMAT_VERSION,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        normalization=Normalization(mean=ckpt.normalization.mean, std=ckpt.normalization.std),
        spatial_multiple=cfg.spatial_multiple,
        training_patch_size=cfg.patch_size,
        recommended_tile=tile,
        recommended_overlap=overlap,
        levels=tuple(
            LevelInfo(index=i, channels=z, feature_channels=cfg.n_filters,
                      downsample=2 ** (i + 1), sampled=i not in cfg.uncond_levels)
            for i, z in enumerate(cfg.z_dims)
        ),
        graphs=Graphs(**{
            name: GraphEntry(file=file, sha256=sha256_file(staging / file))
            for name, file in (("encoder", ENCODER_FILE), ("decoder", DECODER_FILE))
        }),
        weights_sha256=sha256_file(checkpoint),
        intensity_range=IntensityRange(training_data=ckpt.normalization.data_range,
                                       noise_model=signal_range_of(ckpt.likelihood)),
        likelihood=freeze(ckpt.likelihood),
        noise_description=description,
        posterior_logvar_max=posterior_logvar_max,
        model_config=freeze(cfg.to_dict()),
        provenance=freeze(ckpt.provenance),
        export=ExportInfo(hdn_deploy_version=__version__, torch_version=torch.__version__,
                          opset=opset, verified_max_abs_diff=max_abs_diff),
    )
