"""The napari plugin, headless: manifest, widget (run, progress, cancel, layers), reader."""
from __future__ import annotations

import numpy as np
import pytest
import tifffile

from hdn_deploy.denoiser import Denoiser
from hdn_deploy.io import write_tiff_atomic
from hdn_deploy.napari._reader import get_reader
from hdn_deploy.napari._widget import DenoiseWidget

from conftest import noisy, synthetic_clean

TIMEOUT_MS = 300_000
NO_GL = ("no OpenGL context (no X server): napari's canvas cannot render; run under "
         "`xvfb-run -a` (make test does when xvfb is installed)")


def _opengl_works() -> bool:
    """Can Qt make an OpenGL context current here (napari's vispy canvas needs one)?"""
    from OpenGL import GL
    from qtpy.QtGui import QOffscreenSurface, QOpenGLContext

    surface = QOffscreenSurface()
    surface.create()
    context = QOpenGLContext()
    if not (context.create() and context.makeCurrent(surface)):
        return False
    try:
        return GL.glGetString(GL.GL_VERSION) is not None
    finally:
        context.doneCurrent()


@pytest.fixture
def viewer(qapp, request):
    """napari's own test viewer (make_napari_viewer) when OpenGL works; otherwise napari's
    headless ViewerModel, so the widget logic is still tested without a display."""
    if _opengl_works():
        return request.getfixturevalue("make_napari_viewer")()
    import npe2
    from napari.components import ViewerModel

    npe2.PluginManager.instance().discover(include_npe1=False)  # what the Qt viewer does
    return ViewerModel()


def _wait_done(qtbot, widget) -> None:
    qtbot.waitUntil(lambda: widget.worker is None, timeout=TIMEOUT_MS)


def _with_image(viewer, size: int = 128):
    image = noisy(synthetic_clean(size, size, seed=8), seed=9)
    layer = viewer.add_image(image, name="noisy", scale=(2.0, 0.5), translate=(3.0, 4.0))
    return viewer, layer, image


def test_manifest_registers_widget_reader_and_sample():
    import npe2

    manifest = npe2.PluginManifest.from_distribution("hdn-deploy")
    contributions = manifest.contributions
    assert [w.display_name for w in contributions.widgets] == ["HDN denoise"]
    assert contributions.readers[0].command == "hdn-deploy.get_reader"
    assert [s.key for s in contributions.sample_data] == ["nuclei_noisy"]
    for command in contributions.commands:  # every python_name resolves
        assert callable(command.exec) or command.python_name


@pytest.mark.slow
def test_widget_run_adds_mmse_std_samples_like_the_api(viewer, qtbot, tiny_package):
    viewer, layer, image = _with_image(viewer)
    widget = DenoiseWidget(viewer, backend="cpu")
    widget.model.value = tiny_package
    widget.image.value = layer
    widget.n_samples.value, widget.seed.value, widget.tile.value = 4, 7, 64
    widget.keep_samples.value = 2
    assert widget.run() is not None
    assert not widget.run_button.enabled and widget.cancel_button.enabled
    _wait_done(qtbot, widget)
    assert widget.status.value.startswith("Done"), widget.status.value
    assert [lyr.name for lyr in viewer.layers] == ["noisy", "noisy MMSE", "noisy std",
                                                   "noisy samples"]
    want = Denoiser(tiny_package, backend="cpu").denoise(
        image, n_samples=4, seed=7, tile=64, sampling="antithetic", keep_samples=2)
    mmse, std, samples = (viewer.layers[i] for i in (1, 2, 3))
    np.testing.assert_array_equal(mmse.data, want.mmse)
    np.testing.assert_array_equal(std.data, want.std)
    np.testing.assert_array_equal(samples.data, want.samples)
    for out in (mmse, std):
        assert tuple(out.scale) == (2.0, 0.5) and tuple(out.translate) == (3.0, 4.0)
    assert tuple(samples.scale) == (1.0, 2.0, 0.5)
    assert mmse.metadata["hdn_deploy"]["seed"] == 7
    assert widget.progress.max > 1 and widget.progress.value == widget.progress.max
    assert widget.run_button.enabled and not widget.cancel_button.enabled


@pytest.mark.slow
def test_screenshot_of_the_viewer_after_a_run(make_napari_viewer, qtbot, tiny_package, tmp_path):
    if not _opengl_works():
        pytest.skip(NO_GL)
    viewer, layer, _ = _with_image(make_napari_viewer())
    widget = DenoiseWidget(viewer, backend="cpu")
    viewer.window.add_dock_widget(widget, name="HDN denoise")
    widget.model.value, widget.n_samples.value = tiny_package, 2
    widget.run()
    _wait_done(qtbot, widget)
    (viewer.canvas.grid if hasattr(viewer, "canvas") else viewer.grid).enabled = True
    shot = viewer.screenshot(path=str(tmp_path / "shot.png"), canvas_only=False, flash=False)
    assert (tmp_path / "shot.png").stat().st_size > 1000
    assert shot.ndim == 3 and shot.shape[0] > 200 and shot[..., :3].std() > 10


@pytest.mark.slow
def test_cancel_stops_after_a_tile_and_adds_nothing(viewer, qtbot, tiny_package):
    viewer, layer, _ = _with_image(viewer, size=256)
    widget = DenoiseWidget(viewer, backend="cpu")
    widget.model.value = tiny_package
    widget.n_samples.value, widget.tile.value = 64, 64
    worker = widget.run()
    worker.yielded.connect(lambda _event: widget.cancel())
    _wait_done(qtbot, widget)
    assert widget.status.value == "Cancelled."
    assert [lyr.name for lyr in viewer.layers] == ["noisy"]
    assert 1 <= widget.progress.value < widget.progress.max


def test_widget_reports_errors_in_its_status_line(viewer, qtbot, tmp_path):
    widget = DenoiseWidget(viewer, backend="cpu")
    assert widget.run() is None and "image layer" in widget.status.value
    viewer.add_image(np.zeros((64, 64), np.float32), name="blank")
    widget.model.value = tmp_path  # not a model package
    widget.run()
    _wait_done(qtbot, widget)
    assert widget.status.value.startswith("Error:") and "not a model package" in widget.status.value
    assert [lyr.name for lyr in viewer.layers] == ["blank"]


def test_reader_opens_our_outputs_with_their_metadata(viewer, tmp_path):
    metadata = {"software": "hdn-deploy", "seed": 3, "kind": "std", "model_sha256": "ab"}
    ours = write_tiff_atomic(tmp_path / "img_std.tif", np.arange(12, dtype=np.float32).reshape(3, 4),
                             metadata=metadata, axes="YX")
    plain = tmp_path / "plain.tif"
    tifffile.imwrite(plain, np.zeros((3, 4), np.float32))
    assert get_reader(str(plain)) is None
    (data, attrs, kind), = get_reader(str(ours))(str(ours))
    assert kind == "image" and attrs["metadata"]["hdn_deploy"] == metadata
    assert attrs["colormap"] == "magma"
    np.testing.assert_array_equal(data, np.arange(12, dtype=np.float32).reshape(3, 4))
    layers = viewer.open(str(ours), plugin="hdn-deploy")
    assert layers[0].name == "img_std" and layers[0].metadata["hdn_deploy"]["seed"] == 3


def test_plugin_imports_without_torch(tmp_path):
    from conftest import run_without_torch

    done = run_without_torch("import hdn_deploy.napari._widget, hdn_deploy.napari._reader\n"
                             "print('plugin ok')", cwd=tmp_path)
    assert done.returncode == 0 and "plugin ok" in done.stdout, done.stderr


def test_napari_opens_the_ome_zarr_outputs_with_scale_and_pyramid(tiny_package, tmp_path):
    """Issue 14: napari (with napari-ome-zarr) opens our OME-Zarr MMSE as a multiscale
    image with the input's physical scale."""
    pytest.importorskip("napari_ome_zarr", reason="needs napari-ome-zarr ([napari] extra)")
    zarr = pytest.importorskip("zarr", reason="needs the [big] extra")
    import npe2
    from click.testing import CliRunner
    from napari.components import ViewerModel
    from ome_zarr.writer import write_image

    from hdn_deploy.cli.main import main

    data = np.random.default_rng(2).normal(100, 30, (96, 112)).clip(0).astype(np.uint16)
    src = tmp_path / "in" / "cells.ome.zarr"
    write_image(data, zarr.open_group(src, mode="w"), axes="yx", scale_factors=(),
                scale={"y": 0.5, "x": 0.25},
                axes_units={"y": "micrometer", "x": "micrometer"})
    res = CliRunner().invoke(main, ["denoise", str(src), "-m", str(tiny_package), "-o",
                                    str(tmp_path / "out"), "--n-samples", "2", "--pyramid", "1",
                                    "--backend", "cpu", "--threads", "1", "--quiet"])
    assert res.exit_code == 0, res.output
    npe2.PluginManager.instance().discover(include_npe1=False)
    viewer = ViewerModel()
    layers = viewer.open(str(tmp_path / "out" / "cells_mmse.ome.zarr"), plugin="napari-ome-zarr")
    assert len(layers) == 1
    layer = layers[0]
    assert layer.multiscale and len(layer.data) == 2
    assert tuple(layer.data[0].shape) == data.shape
    assert tuple(layer.data[1].shape) == (48, 56)
    np.testing.assert_allclose(layer.scale, (0.5, 0.25))
    expected = Denoiser(tiny_package, backend="cpu", threads=1).denoise(data, n_samples=2).mmse
    assert np.asarray(layer.data[0]).tobytes() == expected.tobytes()
