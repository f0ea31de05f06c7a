"""training.sample_images: the StarDist test image is read from inside its wheel, once."""
import io
import subprocess
import zipfile

import numpy as np
import pytest
import tifffile

from hdn_deploy.training import sample_images


def _fake_pip(image, calls):
    def run(cmd, *args, **kwargs):
        calls.append(cmd)
        folder = cmd[cmd.index("-d") + 1]
        wheel = f"{folder}/stardist-0.9.2-cp311-cp311-manylinux_2_28_x86_64.whl"
        with zipfile.ZipFile(wheel, "w") as archive:
            archive.writestr("stardist/__init__.py", "")
            buffer = io.BytesIO()
            tifffile.imwrite(buffer, image)
            archive.writestr(sample_images.NUCLEI_MEMBER, buffer.getvalue())
        return subprocess.CompletedProcess(cmd, 0)
    return run


def test_nuclei_read_from_the_wheel_and_cached(tmp_path, monkeypatch):
    image = np.arange(64, dtype=np.uint16).reshape(8, 8)
    calls = []
    monkeypatch.setattr(sample_images.subprocess, "run", _fake_pip(image, calls))
    first = sample_images.stardist_nuclei(tmp_path)
    second = sample_images.stardist_nuclei(tmp_path)
    assert first.dtype == np.float32 and np.array_equal(first, image)
    assert np.array_equal(second, first)
    assert len(calls) == 1                                   # fetched once
    assert "--no-deps" in calls[0] and sample_images.STARDIST_WHEEL in calls[0]


def test_fetch_failure_says_what_to_run(tmp_path, monkeypatch):
    monkeypatch.setattr(sample_images.subprocess, "run",
                        lambda cmd, *a, **k: subprocess.CompletedProcess(cmd, 1))
    with pytest.raises(SystemExit, match="pip download"):
        sample_images.stardist_nuclei(tmp_path)
    assert not (tmp_path / "stardist_img2d.tif").exists()
