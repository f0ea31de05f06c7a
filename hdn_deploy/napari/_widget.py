"""The "HDN denoise" dock widget: denoise an image layer with a model package.

Denoising runs in a worker thread (napari's ``thread_worker``) over
:meth:`hdn_deploy.Denoiser.iter_denoise`, so the viewer stays responsive: the progress
bar advances after every tile and *Cancel* stops the run after the current tile (nothing
is added then). When a run ends, the MMSE, the std and the kept samples are added as
image layers with the input layer's scale and translation, and the run's metadata
(seed, model hash, settings, versions) in ``layer.metadata["hdn_deploy"]``.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
from magicgui.widgets import ComboBox, Container, FileEdit, Label, ProgressBar, PushButton, SpinBox
from napari.qt.threading import GeneratorWorker, thread_worker

from ..denoiser import DenoiseResult, Denoiser
from ..latents import SamplingMode

if TYPE_CHECKING:  # pragma: no cover
    import napari

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "models" / "default"


@thread_worker(ignore_errors=True)  # errors go to the status line (errored)
def _denoise(get_denoiser: Callable[[str], Denoiser], model: str, image: np.ndarray,
             options: dict[str, Any]):
    """Yields ``Progress`` after every tile; returns the ``DenoiseResult``."""
    denoiser = get_denoiser(model)
    for event in denoiser.iter_denoise(image, **options):
        if event.result is not None:
            return event.result
        yield event
    return None  # pragma: no cover (iter_denoise always ends with a result)


class DenoiseWidget(Container):
    """Dock widget: model package, image layer, samples, sampling mode, seed, tile,
    kept samples; *Denoise* / *Cancel*; a progress bar and a status line."""

    def __init__(self, napari_viewer: "napari.viewer.Viewer", *, backend: str = "auto"):
        super().__init__(labels=True)
        self._viewer = napari_viewer
        self._backend = backend
        self._denoisers: dict[str, Denoiser] = {}
        self.worker: GeneratorWorker | None = None
        self.model = FileEdit(mode="d", value=DEFAULT_MODEL, label="model package")
        self.image = ComboBox(choices=self._image_layers, label="image")
        self.n_samples = SpinBox(value=32, min=1, max=100_000, label="samples")
        self.sampling = ComboBox(choices=[m.value for m in SamplingMode],
                                 value=SamplingMode.ANTITHETIC.value, label="sampling")
        self.seed = SpinBox(value=0, min=0, max=2**31 - 1, label="seed")
        self.tile = SpinBox(value=0, min=0, max=65_536, label="tile (0: model's)")
        self.keep_samples = SpinBox(value=0, min=0, max=1000, label="kept samples")
        self.run_button = PushButton(text="Denoise")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.progress = ProgressBar(value=0, min=0, max=1, label="progress")
        self.status = Label(value="")
        self.extend([self.model, self.image, self.n_samples, self.sampling, self.seed, self.tile,
                     self.keep_samples, self.run_button, self.cancel_button, self.progress,
                     self.status])
        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)
        for event in (napari_viewer.layers.events.inserted, napari_viewer.layers.events.removed):
            event.connect(lambda _event: self.image.reset_choices())

    # ----------------------------------------------------------------- public
    def run(self) -> GeneratorWorker | None:
        """Start denoising the selected layer; returns the worker (None if refused)."""
        layer = self.image.value
        if layer is None:
            self.status.value = "Add or select an image layer first."
            return None
        if getattr(layer, "rgb", False):
            self.status.value = f"'{layer.name}' is RGB; HDN needs one channel."
            return None
        options = {"n_samples": self.n_samples.value, "seed": self.seed.value,
                   "sampling": self.sampling.value, "keep_samples": self.keep_samples.value,
                   "tile": self.tile.value or None}
        worker = _denoise(self._denoiser, str(self.model.value), np.asarray(layer.data), options)
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(lambda result: self._add_layers(layer, result))
        worker.errored.connect(self._on_error)
        worker.aborted.connect(lambda: setattr(self.status, "value", "Cancelled."))
        worker.finished.connect(self._on_finished)
        self.worker = worker
        self._set_running(True)
        self.status.value = f"Denoising '{layer.name}'..."
        worker.start()
        return worker

    def cancel(self) -> None:
        """Ask the running worker to stop after the current tile."""
        if self.worker is not None:
            self.worker.quit()
            self.status.value = "Cancelling after the current tile..."

    # ---------------------------------------------------------------- helpers
    def _image_layers(self, _widget=None) -> list[tuple[str, Any]]:
        from napari.layers import Image

        return [(layer.name, layer) for layer in self._viewer.layers if isinstance(layer, Image)]

    def _denoiser(self, model: str) -> Denoiser:
        """One Denoiser per model folder, loaded once (in the worker thread)."""
        if model not in self._denoisers:
            self._denoisers[model] = Denoiser(model, backend=self._backend)
        return self._denoisers[model]

    def _set_running(self, running: bool) -> None:
        self.run_button.enabled = not running
        self.cancel_button.enabled = running

    def _on_progress(self, event) -> None:
        self.progress.max = event.tiles_total
        self.progress.value = event.tiles_done

    def _on_error(self, exc: Exception) -> None:
        self.status.value = f"Error: {exc}"

    def _on_finished(self) -> None:
        self._set_running(False)
        self.worker = None

    def _add_layers(self, layer, result: DenoiseResult) -> None:
        scale, translate = tuple(layer.scale), tuple(layer.translate)
        metadata = {"hdn_deploy": result.metadata}
        common = {"scale": scale, "translate": translate, "metadata": metadata}
        self._viewer.add_image(result.mmse, name=f"{layer.name} MMSE", **common)
        self._viewer.add_image(result.std, name=f"{layer.name} std", colormap="magma", **common)
        if result.samples is not None:
            self._viewer.add_image(result.samples, name=f"{layer.name} samples",
                                   scale=(1.0, *scale), translate=(0.0, *translate),
                                   metadata=metadata)
        self.progress.value = self.progress.max
        self.status.value = (f"Done: {result.metadata['n_samples']} samples "
                             f"({result.metadata['sampling']}), seed {result.metadata['seed']}.")
