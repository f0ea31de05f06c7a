"""The documentation (README.md) and citation of a BioImage Model Zoo export."""
from __future__ import annotations

from typing import Any

from hdn_deploy.package import ModelPackage

HDN_CITATION: dict[str, Any] = {
    "text": ("Prakash M., Delbracio M., Milanfar P., Jug F. Interpretable Unsupervised "
             "Diversity Denoising and Artefact Removal. ICLR 2022."),
    "doi": "10.48550/arXiv.2104.01374",
    "url": "https://arxiv.org/abs/2104.01374",
}


def _noise_text(package: ModelPackage) -> str:
    manifest = package.manifest
    likelihood = dict(manifest.likelihood or {})
    description = manifest.noise_description or "not given at export"
    return (f"- Noise the model was trained for: {description}\n"
            f"- Likelihood / noise model used in training: `{likelihood.get('kind', 'unknown')}` "
            f"({', '.join(f'{k}={v}' for k, v in likelihood.items() if k != 'kind') or 'no parameters'})")


def _training_text(package: ModelPackage) -> str:
    provenance = dict(package.manifest.provenance or {})
    data = provenance.get("data") or []
    names = ", ".join(str(d).rsplit("/", 1)[-1] for d in data) or "not recorded"
    return (f"- Training images (noisy only; HDN never sees clean targets): {names}\n"
            f"- Training steps: {provenance.get('step', 'unknown')}, best validation loss "
            f"{provenance.get('best_val_loss', 'unknown')} nats/pixel\n"
            f"- Architecture: {dict(package.manifest.model_config or {})}")


def documentation(package: ModelPackage, *, n_samples: int, seed: int) -> str:
    """Markdown documentation of the zoo model: what the outputs are, how they are
    computed, training data, noise model, limits and citation."""
    levels = package.sampled_levels
    return f"""# Hierarchical DivNoising (HDN) denoiser

Unsupervised denoiser for one-channel 2D microscopy images, exported with
hdn-deploy (`hdn-deploy export-bmz`) from a model package (model hash
`{package.model_hash}`). HDN is a hierarchical (ladder) variational autoencoder trained on
noisy images alone with a model of the camera noise; it describes a *distribution* of
clean images given a noisy one.

## What the outputs are

- **`mmse`**: the mean of {n_samples} posterior samples: a Monte-Carlo estimate of the
  minimum mean-squared-error (MMSE) denoised image, in the input's intensity units.
- **`std`**: the per-pixel standard deviation of those {n_samples} samples (ddof 0), an
  estimate of the posterior uncertainty, in intensity units. With {n_samples} samples it is
  itself noisy; it is not a calibrated error bar.

Neither output is a single "posterior sample". Running the model twice on the same
input gives the same output (see below).

## How the outputs are computed (inside the ONNX graph)

1. Normalise: `(raw - {package.mean:.6g}) / {package.std:.6g}` (mean/std of the training data).
2. Pad by reflection: {package.recommended_overlap // 2} pixels of context on every side
   (so borders see image-like context, as in hdn-deploy's runtime), then bottom/right to
   multiples of {package.spatial_multiple} (2^levels); cropped back at the end.
3. Encoder (bottom-up path) once.
4. Latent noise: for each of the {len(levels)} sampled levels, standard-normal `eps` from a
   32-bit integer hash of (level key, sample pair, channel, latent position) with a
   Box-Muller transform; the level keys derive from the seed {seed}. Samples come in
   antithetic pairs (`eps`, `-eps`): every sample is a valid posterior draw and pairs
   cancel much of the Monte-Carlo error of the mean. No random operator: the graph is a
   pure function of its input, so the zoo can replay test inputs and compare outputs.
5. Decoder (top-down path) for all {n_samples} samples at once; each latent is
   `mu + sigma * eps` from the posterior; the output is the signal estimate.
6. Mean and std over the samples, crop to the input size, de-normalise.

This noise is not the Philox latent noise of `hdn-deploy denoise`: both estimate the same
posterior mean, with different Monte-Carlo noise. For more samples, tiling of large
images, seeds and kept samples, use `hdn-deploy denoise` with the original model package.

## Training data and noise model

{_training_text(package)}
{_noise_text(package)}

## Limits

- Input: one channel, 2D, float32, height and width >= {max(package.spatial_multiple, package.recommended_overlap // 2 + 1)}; any
  size above that (the graph pads internally). Denoise each slice of a stack separately.
- The whole image goes through the network at once, {n_samples} samples in one batch:
  memory grows with image area times {n_samples}. For large images use `hdn-deploy
  denoise` (tiled) or tile with halo in your consumer software.
- The model only knows the noise and image content it was trained on; apply it to other
  cameras, gains or structures and the result can contain artefacts or hallucinations.
  Inspect the `std` output and the input.
- Tolerance for reproducing the test outputs: relative 1e-3, absolute 1e-3 x normalisation std.

## Validation

Checked at export: bioimageio.core's `test_model` (format, replay of the test input
against the test outputs, inference at several input sizes). hdn-deploy's tests also check
that this graph equals the model package's encoder and decoder run with the same noise
(computed independently in numpy), that the noise is standard normal and antithetic, and
that the MMSE agrees with `hdn-deploy denoise` within Monte-Carlo error. No ground truth is
involved: the test input is a noisy image, the outputs are the model's own.

## Citation

{HDN_CITATION['text']} {HDN_CITATION['url']}
"""
