"""benchmarks/artefacts.py: the artefact model, the share-removed score, parallel training."""
from __future__ import annotations

import sys

import numpy as np
import pytest

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2]))
from benchmarks import artefacts  # noqa: E402


@pytest.mark.parametrize("artefact", ["rows", "columns"])
def test_artefact_is_an_offset_on_a_share_of_the_lines(artefact):
    clean = np.full((200, 300), 100.0, dtype=np.float32)
    noisy = artefacts.add_artefact_noise(clean, artefact, seed=1)
    axis = 1 if artefact == "rows" else 0
    line_means = (noisy - clean).mean(axis=axis)
    offset = np.abs(line_means) > 4 * 25 / np.sqrt(clean.shape[axis])  # far beyond the noise
    assert 0.15 < offset.mean() < 0.4  # 30 % of the lines, minus the small offsets
    # a perfect estimate removes all of it, the noisy input none
    assert artefacts.artefact_removed(clean, noisy, clean, artefact) == 1.0
    assert artefacts.artefact_removed(noisy, noisy, clean, artefact) == 0.0
    other = "columns" if artefact == "rows" else "rows"
    assert abs(artefacts.artefact_removed(noisy, noisy, clean, other)) < 1e-9


def test_offset_kept_ignores_errors_unrelated_to_the_artefact():
    clean = np.full((256, 256), 100.0, dtype=np.float32)
    noisy, offsets = artefacts.draw_artefact_noise(clean, "rows", seed=2)
    assert artefacts.artefact_kept(noisy, clean, offsets, "rows") == pytest.approx(1.0, abs=0.05)
    assert artefacts.artefact_kept(clean, clean, offsets, "rows") == 0.0
    # an estimate keeping a quarter of the offsets plus a smooth error of its own
    error = 5 * np.sin(np.arange(256) / 9.0)[:, None]
    estimate = clean + 0.25 * offsets[:, None] + error
    assert artefacts.artefact_kept(estimate, clean, offsets, "rows") == pytest.approx(0.25, abs=0.05)
    assert artefacts.artefact_removed(estimate, noisy, clean, "rows") < 0.75  # lowered by error


def test_train_all_runs_every_command_and_fails_loudly(tmp_path):
    marks = [tmp_path / f"m{i}" for i in range(3)]
    artefacts.train_all([[sys.executable, "-c", f"open({str(m)!r}, 'w')"] for m in marks], jobs=2)
    assert all(m.is_file() for m in marks)
    with pytest.raises(SystemExit, match="training failed"):
        artefacts.train_all([[sys.executable, "-c", "raise SystemExit(3)"]], jobs=2)


def test_each_model_gets_its_flags(tmp_path):
    cmd = artefacts.train_command(tmp_path / "n.tif", tmp_path / "s", "structured", "rows", 10, 0, [])
    assert "--structured" in cmd and "--gaussian-sigma" in cmd
    assert "--structured" not in artefacts.train_command(tmp_path / "n.tif", tmp_path / "p",
                                                         "pixel", "rows", 10, 0, [])
