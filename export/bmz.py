"""Export a model package to a BioImage Model Zoo (bioimage.io) model, spec 0.5.

The zoo model is one ONNX graph (:mod:`hdn_deploy.export.bmz_graph`): it takes the raw
image and returns the MMSE estimate and the per-pixel std over ``n_samples``
deterministic posterior samples (antithetic pairs; the latent noise is a hash of the
latent position, seeded at export). Normalisation and padding are inside the graph, so
consumers need no pre- or post-processing. Test inputs and outputs are computed with
onnxruntime on the exported graph; ``bioimageio.core``'s ``test_model`` replays them.

Needs the ``[export]`` and ``[bmz]`` extras (onnx, onnxruntime, bioimageio.spec/core).
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

from hdn_deploy.atomic import atomic_path, atomic_write_bytes, atomic_write_text
from hdn_deploy.errors import ConfigError, InputError, PackageError
from hdn_deploy.package import ModelPackage, load_package

from .bmz_docs import HDN_CITATION, documentation
from .bmz_graph import INPUT_NAME, OUTPUT_NAMES, build_bmz_graph, min_input_size, save_graph

__all__ = ["bmz_package_from_model", "check_bmz_package", "DEFAULT_BMZ_SAMPLES", "DEFAULT_TEST_SIZE"]

DEFAULT_BMZ_SAMPLES = 8
DEFAULT_TEST_SIZE = 128


def _test_input(package: ModelPackage, test_image: Path | None, size: int) -> np.ndarray:
    """Centre crop (at most ``size`` x ``size``) of a 2D test image, float32 (1, 1, H, W)."""
    import hdn_deploy
    from hdn_deploy.io import read_image

    sample = Path(hdn_deploy.__file__).parent / "sample_data" / "nuclei_noisy.tif"
    data = read_image(test_image or sample).array
    image = data[0] if data.ndim == 3 else data
    h, w = (min(size, s) for s in image.shape)
    if min(h, w) < min_input_size(package):
        raise InputError(
            f"test image of shape {image.shape} is smaller than the model's minimum size "
            f"{min_input_size(package)}; give a larger --test-image"
        )
    y0, x0 = (image.shape[0] - h) // 2, (image.shape[1] - w) // 2
    return np.ascontiguousarray(image[None, None, y0:y0 + h, x0:x0 + w], dtype=np.float32)


def _run_graph(graph_path: Path, image: np.ndarray) -> list[np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(graph_path), options, providers=["CPUExecutionProvider"])
    return session.run(list(OUTPUT_NAMES), {INPUT_NAME: image})


def _percentile_u8(image: np.ndarray, low: float, high: float) -> np.ndarray:
    scaled = (image - low) / max(high - low, 1e-12)
    return (np.clip(scaled, 0, 1) * 255).astype(np.uint8)


def _cover_png(left: np.ndarray, right: np.ndarray, *, same_range: bool) -> bytes:
    """Two panels side by side (2:1), grey, percentile-stretched; PNG bytes."""
    import io

    from PIL import Image

    lo, hi = np.percentile(left, [0.5, 99.5])
    rlo, rhi = (lo, hi) if same_range else np.percentile(right, [0.5, 99.5])
    panel = np.concatenate([_percentile_u8(left, lo, hi), _percentile_u8(right, rlo, rhi)], axis=1)
    buffer = io.BytesIO()
    Image.fromarray(panel).resize((512, 256), Image.NEAREST).save(buffer, format="PNG")
    return buffer.getvalue()


def _axes(package: ModelPackage, channel: str, *, output: bool):
    from bioimageio.spec.model import v0_5

    if not output:
        size = v0_5.ParameterizedSize(min=min_input_size(package), step=1)
        space = [v0_5.SpaceInputAxis(id=v0_5.AxisId(a), size=size) for a in "yx"]
    else:
        space = [v0_5.SpaceOutputAxis(id=v0_5.AxisId(a), size=v0_5.SizeReference(
            tensor_id=v0_5.TensorId(INPUT_NAME), axis_id=v0_5.AxisId(a))) for a in "yx"]
    return [v0_5.BatchAxis(size=1), v0_5.ChannelAxis(channel_names=[v0_5.Identifier(channel)]),
            *space]


_OUTPUT_TEXT = {
    "mmse": "MMSE estimate: mean of the posterior samples, input intensity units",
    "std": "per-pixel std of the posterior samples (uncertainty), input intensity units",
}


def _tensors(package: ModelPackage, files: dict[str, Path]):
    from bioimageio.spec.model import v0_5

    inputs = [v0_5.InputTensorDescr(
        id=v0_5.TensorId(INPUT_NAME), axes=_axes(package, INPUT_NAME, output=False),
        description="noisy image, raw intensities (one channel, 2D)",
        test_tensor=v0_5.FileDescr(source=files[INPUT_NAME]),
        data=v0_5.IntervalOrRatioDataDescr(type="float32"),
    )]
    outputs = [v0_5.OutputTensorDescr(
        id=v0_5.TensorId(name), axes=_axes(package, name, output=True),
        description=_OUTPUT_TEXT[name], test_tensor=v0_5.FileDescr(source=files[name]),
        data=v0_5.IntervalOrRatioDataDescr(type="float32"),
    ) for name in OUTPUT_NAMES]
    return inputs, outputs


def _model_descr(package: ModelPackage, files: dict[str, Path], *, name: str,
                 authors: Sequence[str], license_id: str, n_samples: int, seed: int,
                 tolerance: float):
    from bioimageio.spec.model import v0_5

    inputs, outputs = _tensors(package, files)
    return v0_5.ModelDescr(
        name=name,
        description=("Hierarchical DivNoising (HDN) unsupervised denoiser: MMSE estimate and "
                     f"per-pixel std over {n_samples} deterministic posterior samples."),
        authors=[v0_5.Author(name=a) for a in authors],
        cite=[v0_5.CiteEntry(**HDN_CITATION)],
        license=license_id,
        documentation=v0_5.FileDescr(source=files["documentation"]),
        covers=[v0_5.FileDescr(source=files[k]) for k in ("cover_mmse", "cover_std")],
        tags=["denoising", "unsupervised", "vae", "hierarchical-vae", "diversity-denoising",
              "hdn", "2d", "fluorescence-light-microscopy", "onnx"],
        inputs=inputs,
        outputs=outputs,
        weights=v0_5.WeightsDescr(onnx=v0_5.OnnxWeightsDescr(source=files["weights"],
                                                             opset_version=18)),
        config=v0_5.Config(
            bioimageio=v0_5.BioimageioConfig(reproducibility_tolerance=[
                v0_5.ReproducibilityTolerance(relative_tolerance=1e-3,
                                              absolute_tolerance=tolerance)]),
            hdn_deploy={"model_sha256": package.model_hash, "n_samples": n_samples,
                        "seed": seed, "sampling": "antithetic, in-graph hash noise",
                        "spatial_multiple": package.spatial_multiple},
        ),
    )


def _write_files(folder: Path, package: ModelPackage, image: np.ndarray, *, n_samples: int,
                 seed: int) -> dict[str, Path]:
    """Graph, test tensors, covers and documentation into ``folder``; their paths."""
    files = {"weights": folder / "hdn_mmse.onnx"}
    save_graph(build_bmz_graph(package, n_samples=n_samples, seed=seed), files["weights"])
    mmse, std = _run_graph(files["weights"], image)
    for key, array in ((INPUT_NAME, image), ("mmse", mmse), ("std", std)):
        files[key] = folder / f"test_{key}.npy"
        with atomic_path(files[key]) as tmp, open(tmp, "wb") as fh:
            np.save(fh, array)
    files["cover_mmse"] = atomic_write_bytes(
        folder / "cover_mmse.png", _cover_png(image[0, 0], mmse[0, 0], same_range=True))
    files["cover_std"] = atomic_write_bytes(
        folder / "cover_std.png", _cover_png(image[0, 0], std[0, 0], same_range=False))
    files["documentation"] = atomic_write_text(
        folder / "README.md", documentation(package, n_samples=n_samples, seed=seed))
    return files


def bmz_package_from_model(
    model: str | Path | ModelPackage,
    output: str | Path,
    *,
    n_samples: int = DEFAULT_BMZ_SAMPLES,
    seed: int = 0,
    test_image: str | Path | None = None,
    test_size: int = DEFAULT_TEST_SIZE,
    name: str = "HDN denoiser (hdn-deploy)",
    authors: Sequence[str] = ("hdn-deploy",),
    license_id: str = "BSD-3-Clause",
    overwrite: bool = False,
) -> Path:
    """Write a bioimage.io model zip (spec 0.5) for a model package.

    Parameters
    ----------
    model
        Model package folder or loaded package.
    output
        The ``.zip`` to write (atomically).
    n_samples
        Posterior samples per image inside the graph (even, >= 2; memory grows with it).
    seed
        Seed of the in-graph latent noise (stored in the model's config).
    test_image
        TIFF whose centre crop (``test_size`` pixels at most) becomes the test input;
        default: the bundled sample ``nuclei_noisy.tif``.
    name, authors, license_id
        Zoo metadata (license: an SPDX identifier).
    overwrite
        Replace an existing ``output``.

    Raises
    ------
    PackageError
        If ``output`` exists (and not ``overwrite``) or the description does not validate.
    ConfigError
        If ``n_samples`` is not even and >= 2, or ``output`` does not end in ``.zip``.
    InputError
        If the test image cannot be read or is too small.
    """
    from bioimageio.spec import save_bioimageio_package

    output = Path(output)
    if output.suffix != ".zip":
        raise ConfigError(f"output {output} must end in .zip (a bioimage.io package)")
    if output.exists() and not overwrite:
        raise PackageError(f"{output} exists already; remove it or pass --overwrite")
    package = model if isinstance(model, ModelPackage) else load_package(model)
    image = _test_input(package, Path(test_image) if test_image else None, test_size)
    with tempfile.TemporaryDirectory(prefix="hdn-bmz-") as tmp:
        files = _write_files(Path(tmp), package, image, n_samples=n_samples, seed=seed)
        try:
            descr = _model_descr(package, files, name=name, authors=list(authors),
                                 license_id=license_id, n_samples=n_samples, seed=seed,
                                 tolerance=1e-3 * package.std)
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            raise PackageError(f"the bioimage.io description does not validate: {exc}") from exc
        with atomic_path(output) as staged:
            save_bioimageio_package(descr, output_path=staged)
    return output


def check_bmz_package(path: str | Path) -> str:
    """Run ``bioimageio.core``'s ``test_model`` on a zoo zip (format validation, replay of
    the test inputs against the test outputs, inference at several sizes).

    Returns
    -------
    str
        ``"passed"``.

    Raises
    ------
    PackageError
        If the test fails; the message lists the failed checks and their errors.
    """
    from bioimageio.core import test_model

    summary = test_model(str(path))
    if summary.status == "passed":
        return "passed"
    failed = [f"{d.name}: {'; '.join(e.msg for e in d.errors)}"
              for d in summary.details if d.status != "passed"] or [str(summary.status)]
    raise PackageError(f"bioimageio.core test_model failed for {path}: " + " | ".join(failed))
