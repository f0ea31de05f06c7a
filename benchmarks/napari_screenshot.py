"""Screenshot of napari after an "HDN denoise" run on the bundled sample (for the README).

    QT_QPA_PLATFORM=offscreen xvfb-run -a .venv/bin/python benchmarks/napari_screenshot.py

Loads the bundled noisy sample, runs the plugin's widget with the bundled model (32
antithetic samples, seed 0, 2 kept samples) in napari's worker thread, shows the layers
side by side (grid mode: input, MMSE, std; the kept samples layer hidden) and writes ``docs/napari_screenshot.png``.
"""
from __future__ import annotations

import argparse
import io
import time
from pathlib import Path

import napari
import numpy as np
from PIL import Image
from qtpy.QtWidgets import QApplication

from hdn_deploy.atomic import atomic_write_bytes
from hdn_deploy.napari._reader import sample_noisy
from hdn_deploy.napari._widget import DenoiseWidget

OUT = Path(__file__).resolve().parents[1] / "docs" / "napari_screenshot.png"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=OUT)
    parser.add_argument("--samples", type=int, default=32)
    args = parser.parse_args()
    viewer = napari.Viewer(show=False)
    (data, attrs, _kind), = sample_noisy()
    viewer.add_image(data, **attrs)
    widget = DenoiseWidget(viewer, backend="cpu")
    viewer.window.add_dock_widget(widget, name="HDN denoise")
    widget.n_samples.value, widget.keep_samples.value = args.samples, 2
    start = time.perf_counter()
    widget.run()
    while widget.worker is not None:
        QApplication.processEvents()
        time.sleep(0.05)
    print(f"{widget.status.value} ({time.perf_counter() - start:.1f} s)")
    viewer.layers[f"{attrs['name']} samples"].visible = False  # grid: input | MMSE | std
    grid = viewer.canvas.grid if hasattr(viewer, "canvas") else viewer.grid  # napari >= 0.9
    grid.enabled = True
    viewer.window._qt_window.resize(1600, 720)
    viewer.reset_view()
    shot = viewer.screenshot(canvas_only=False, flash=False)
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(shot)).save(buffer, format="PNG", optimize=True)
    atomic_write_bytes(args.output, buffer.getvalue())
    print(f"wrote {args.output}")
    viewer.close()


if __name__ == "__main__":
    main()
