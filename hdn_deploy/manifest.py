"""The model-package manifest (``manifest.json``): one typed, frozen schema.

Export writes a :class:`Manifest` with :func:`manifest_to_json`; the runtime reads it with
:func:`manifest_from_json`, which rejects unknown keys, missing keys and wrongly typed
values with a :class:`~hdn_deploy.errors.PackageError` naming the file and the key.

Format versions
---------------
3 (written for packages that need it)
    adds the optional direct denoiser: ``graphs.direct`` (``direct.onnx``, image ->
    MMSE in one pass) and ``direct`` (its provenance), and ``export.int8.calibration`` /
    ``export.int8.check`` (calibration data and the held-out accuracy check of an int8
    export). A package without these is written as version 2, so that older hdn-deploy
    releases keep reading it; one with them says 3, so that they refuse it with a version
    message instead of an unknown-key error.
2 (written for sampler-only packages)
    adds ``levels[].feature_channels`` (channels of the bottom-up input ``bu_<i>``) and
    ``intensity_range`` (what the model was trained and calibrated on); drops
    ``uncond_levels`` (it is ``levels[].sampled``).
1 (read)
    upgraded on load: ``feature_channels`` from ``model_config.n_filters``,
    ``intensity_range.noise_model`` from the likelihood (GMM ``min_signal``/``max_signal``,
    histogram ``min_value``/``max_value``), no training-data range.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from .errors import PackageError
from .options import GraphPrecision
from .schema import from_json, to_json

FORMAT_NAME = "hdn-deploy-model"
FORMAT_VERSION = 2  # sampler-only packages
DIRECT_FORMAT_VERSION = 3  # packages with a direct graph or a checked int8 export
READABLE_VERSIONS = (1, 2, 3)


@dataclass(frozen=True)
class Normalization:
    """x_norm = (x - mean) / std, in the input's intensity units; std > 0."""

    mean: float
    std: float

    def __post_init__(self) -> None:
        if not self.std > 0:
            raise ValueError(f"normalization.std must be > 0, got {self.std}")


@dataclass(frozen=True)
class GraphEntry:
    """One ONNX graph file of the package and its sha256 (64 hex digits)."""

    file: str
    sha256: str


@dataclass(frozen=True)
class Graphs:
    """The sampler's two graphs and, optionally (version 3), the direct denoiser."""

    encoder: GraphEntry
    decoder: GraphEntry
    direct: GraphEntry | None = None

    def entry(self, name: str) -> GraphEntry:
        """The entry of graph ``name`` ('encoder', 'decoder' or 'direct'); PackageError for
        another name or a direct graph the package does not have."""
        if name not in ("encoder", "decoder", "direct"):
            raise PackageError(f"unknown graph {name!r}; expected 'encoder', 'decoder' or "
                               "'direct'")
        entry = getattr(self, name)
        if entry is None:
            raise PackageError("this package has no direct graph (direct.onnx)")
        return entry


@dataclass(frozen=True)
class LevelInfo:
    """One latent level. ``downsample`` = 2**(index+1); latents and ``bu_<index>`` are
    (H/downsample, W/downsample) with ``channels`` and ``feature_channels`` channels."""

    index: int
    channels: int
    feature_channels: int
    downsample: int
    sampled: bool


@dataclass(frozen=True)
class DataRange:
    """Intensities of the training data (input units): extremes and 0.1/99.9 percentiles."""

    min: float
    max: float
    p0_1: float
    p99_9: float


@dataclass(frozen=True)
class SignalRange:
    """Signal range the noise model was calibrated on (input units)."""

    min: float
    max: float


@dataclass(frozen=True)
class IntensityRange:
    """What the model has seen; either part may be unknown (null)."""

    training_data: DataRange | None = None
    noise_model: SignalRange | None = None


@dataclass(frozen=True)
class Int8Check:
    """The accuracy check of an int8 export on patches held out from calibration.

    ``estimated_psnr_loss_db`` = 10 log10(1 + d / v): d the mean squared difference of the
    int8 and float MMSE (same latents), v the float model's mean posterior variance (its
    expected squared error); refused above ``max_loss_db``."""

    patches: int
    patch_size: int
    n_samples: int
    mean_sq_diff: float
    posterior_variance: float
    estimated_psnr_loss_db: float
    max_loss_db: float


@dataclass(frozen=True)
class Int8Info:
    """Set on INT8 copies of a package (``hdn-deploy export --int8``, or
    ``benchmarks/quantize.py`` without calibration record and check)."""

    method: str
    graphs: tuple[str, ...]
    calibration: Any = None  # data files, patches and tile of the calibration (version 3)
    check: Int8Check | None = None


@dataclass(frozen=True)
class DirectInfo:
    """The direct denoiser of a version-3 package: a network distilled to output the HDN
    MMSE in one pass (``hdn-deploy distill``). ``teacher_sha256`` is the package's
    ``weights_sha256``; ``verified_max_abs_diff`` compares onnxruntime with PyTorch."""

    weights_sha256: str
    teacher_sha256: str
    spatial_multiple: int
    verified_max_abs_diff: float | None = None
    provenance: Any = None


@dataclass(frozen=True)
class ExportInfo:
    hdn_deploy_version: str
    torch_version: str
    opset: int
    verified_max_abs_diff: float | None = None
    int8: Int8Info | None = None


@dataclass(frozen=True)
class Precision:
    """Set by :func:`hdn_deploy.export.precision.fp16_package` on FP16 copies."""

    kind: GraphPrecision
    source_package_graphs: Mapping[str, str]
    fp32_nodes: Mapping[str, tuple[str, ...]]


@dataclass(frozen=True)
class Manifest:
    """A package's manifest. ``likelihood``, ``model_config`` and ``provenance`` are
    free-form records of training (read-only mappings), not read by the runtime."""

    format: str
    format_version: int
    normalization: Normalization
    spatial_multiple: int
    recommended_tile: int
    recommended_overlap: int
    levels: tuple[LevelInfo, ...]
    graphs: Graphs
    weights_sha256: str
    export: ExportInfo
    intensity_range: IntensityRange = IntensityRange()
    created: str | None = None
    training_patch_size: int | None = None
    noise_description: str | None = None
    posterior_logvar_max: float | None = None
    precision: Precision | None = None
    direct: DirectInfo | None = None
    likelihood: Any = None
    model_config: Any = None
    provenance: Any = None

    def __post_init__(self) -> None:
        if not self.levels or not any(lv.sampled for lv in self.levels):
            raise ValueError("levels must be a non-empty list with at least one sampled level")
        if [lv.index for lv in self.levels] != list(range(len(self.levels))):
            raise ValueError("levels[].index must be 0, 1, 2, ... in order")
        if (self.graphs.direct is None) != (self.direct is None):
            raise ValueError("graphs.direct and direct must be given together")
        if self.format_version < required_version(self):
            raise ValueError(f"a direct graph or an int8 check needs format_version "
                             f"{DIRECT_FORMAT_VERSION}, not {self.format_version}")

    @property
    def sampled_levels(self) -> tuple[LevelInfo, ...]:
        return tuple(lv for lv in self.levels if lv.sampled)

    @property
    def uncond_levels(self) -> tuple[int, ...]:
        return tuple(lv.index for lv in self.levels if not lv.sampled)

    @property
    def graph_precision(self) -> GraphPrecision:
        return self.precision.kind if self.precision else GraphPrecision.FP32


def required_version(manifest: Manifest) -> int:
    """The lowest format version that describes ``manifest`` (see the module docstring)."""
    int8 = manifest.export.int8
    if manifest.graphs.direct is not None or (
            int8 is not None and (int8.check is not None or int8.calibration is not None)):
        return DIRECT_FORMAT_VERSION
    return FORMAT_VERSION


def signal_range_of(likelihood: Mapping[str, Any] | None) -> SignalRange | None:
    """The calibrated signal range of a noise-model description (``likelihood`` of a
    checkpoint or manifest): GMM min/max_signal, histogram min/max_value (a line-artefact
    likelihood's from its pixel model); else None."""
    if not isinstance(likelihood, Mapping):
        return None
    if likelihood.get("kind") == "lines":
        return signal_range_of(likelihood.get("pixel"))
    keys = {"gmm": ("min_signal", "max_signal"), "histogram": ("min_value", "max_value")}
    pair = keys.get(likelihood.get("kind"))
    if pair is None or not all(isinstance(likelihood.get(k), (int, float)) for k in pair):
        return None
    return SignalRange(min=float(likelihood[pair[0]]), max=float(likelihood[pair[1]]))


def manifest_to_json(manifest: Manifest) -> dict[str, Any]:
    """Plain JSON of ``manifest`` (``json.dumps``-able; round-trips through the reader).

    A version-2 manifest leaves out the keys version 3 added (they are null there), so
    that older releases, whose reader rejects unknown keys, keep reading it."""
    data = to_json(manifest)
    if manifest.format_version < DIRECT_FORMAT_VERSION:
        data.pop("direct", None)
        data["graphs"].pop("direct", None)
        if data["export"].get("int8") is not None:
            data["export"]["int8"].pop("calibration", None)
            data["export"]["int8"].pop("check", None)
    return data


def manifest_from_json(data: Any, file: str | Path) -> Manifest:
    """Validate parsed ``manifest.json`` content (version 1, 2 or 3) and return a Manifest.

    Raises
    ------
    PackageError
        Not an hdn-deploy manifest, unsupported version, unknown / missing / mistyped key
        (the message names ``file`` and the key).
    """
    if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
        raise PackageError(f"{file}: not an hdn-deploy model manifest")
    version = data.get("format_version")
    if version not in READABLE_VERSIONS:
        raise PackageError(
            f"{file}: package format version {version!r} is not supported (this hdn-deploy "
            f"reads versions {', '.join(map(str, READABLE_VERSIONS))}); re-export the model "
            "with a matching hdn-deploy or upgrade hdn-deploy")
    if version == 1:
        data = _upgrade_v1(data, file)
    try:
        return from_json(Manifest, data, file)
    except PackageError as exc:
        raise PackageError(f"{exc}; re-export the model with `hdn-deploy export`, or use the "
                           "hdn-deploy version that wrote it") from exc


def _upgrade_v1(data: dict[str, Any], file: str | Path) -> dict[str, Any]:
    """Version-1 content as version 2 (see the module docstring)."""
    data = dict(data, format_version=2)
    data.pop("uncond_levels", None)
    levels = data.get("levels")
    if isinstance(levels, list) and all(isinstance(lv, dict) for lv in levels):
        filters = (data.get("model_config") or {}).get("n_filters")
        if not isinstance(filters, int):
            raise PackageError(f"{file}: version-1 manifest lacks model_config.n_filters (the "
                               "bottom-up feature channels); re-export the model")
        data["levels"] = [{**lv, "feature_channels": filters} for lv in levels]
    noise = signal_range_of(data.get("likelihood"))
    data["intensity_range"] = {"training_data": None,
                               "noise_model": None if noise is None else to_json(noise)}
    return data
