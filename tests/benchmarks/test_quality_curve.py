"""benchmarks/quality.py: a run's curve ends with its final weights when they are no snapshot."""
from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def _quality():
    spec = importlib.util.spec_from_file_location("quality", ROOT / "benchmarks" / "quality.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_snapshot_curve_scores_the_final_weights(tmp_path, monkeypatch):
    import hdn_deploy.training.checkpoint as checkpoint

    quality = _quality()
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.csv").write_text("step,train_seconds\n500,60\n1000,120\n1200,150\n")
    for name in ("step_500", "step_1000", "last"):
        (run / f"{name}.safetensors").write_bytes(b"")
    scored = []
    monkeypatch.setattr(checkpoint, "load_checkpoint",
                        lambda path: SimpleNamespace(provenance={"step": 1200}))
    monkeypatch.setattr(quality, "export", lambda snap, folder: scored.append(snap.name) or folder)
    monkeypatch.setattr(quality, "hdn_mmse", lambda package, noisy, n, seed: noisy)
    clean = {"img": np.arange(64, dtype=np.float32).reshape(8, 8)}
    curve = quality.snapshot_curve(run, ["img"], "gaussian25", 0, 1, images=clean)
    assert [p["step"] for p in curve] == [500, 1000, 1200]
    assert [p["train_seconds"] for p in curve] == [60.0, 120.0, 150.0]
    assert scored == ["step_500.safetensors", "step_1000.safetensors", "last.safetensors"]

    monkeypatch.setattr(checkpoint, "load_checkpoint",
                        lambda path: SimpleNamespace(provenance={"step": 1000}))
    scored.clear()
    curve = quality.snapshot_curve(run, ["img"], "gaussian25", 0, 1, images=clean)
    assert [p["step"] for p in curve] == [500, 1000]            # last == a snapshot: once
