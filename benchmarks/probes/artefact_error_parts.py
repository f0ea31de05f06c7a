"""Squared error of an artefact case's two models split into global mean, line means and
the rest (20 samples).

    python benchmarks/probes/artefact_error_parts.py nuclei_q4_rows 0 runs/artefacts
"""
import sys, numpy as np, tempfile
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.quality import clean_images, export, hdn_mmse
from benchmarks.artefacts import draw_artefact_noise
import tifffile
case = sys.argv[1]; img, art = case.rsplit("_", 1)
clean = clean_images()[img]
seed = int(sys.argv[2]) if len(sys.argv) > 2 else 0
root = (Path(sys.argv[3]) if len(sys.argv) > 3 else Path("runs/artefacts")) / case
noisy = tifffile.imread(root / "noisy.tif")
for kind in ("pixel", "structured"):
    with tempfile.TemporaryDirectory() as d:
        pkg = export(root / kind / "last.safetensors", Path(d) / "pkg")
        est = hdn_mmse(pkg, noisy, 20, 0)
    err = est - clean
    ax = 1 if art == "rows" else 0
    lm = err.mean(axis=ax, keepdims=True)
    print(kind, "mse", err.var() + err.mean()**2, "mean", err.mean(), "line-mean part", (lm**2).mean(), "rest", ((err - lm)**2).mean())
