"""PSNR and global bias of an artefact case's two models (artefacts.py's work folder) at
several tile/overlap settings (20 samples, seed 0).

    python benchmarks/probes/artefact_tiles.py runs/artefacts_dropout0/nuclei_q4_rows nuclei_q4 128/64 256/64
"""
import sys
import tempfile
from pathlib import Path

import tifffile

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.quality import clean_images, export, scores
from hdn_deploy import Denoiser
root = Path(sys.argv[1]); clean = clean_images()[sys.argv[2]]
noisy = tifffile.imread(root / "noisy.tif")
for kind in ("pixel", "structured"):
    with tempfile.TemporaryDirectory() as d:
        den = Denoiser(export(root / kind / "last.safetensors", Path(d) / "p"), threads=1)
        for spec in sys.argv[3:]:
            t, o = map(int, spec.split("/"))
            m = den.denoise(noisy, n_samples=20, seed=0, tile=t, overlap=o).mmse
            print(kind, spec, scores(m, clean), "bias", round(float((m - clean).mean()), 3), flush=True)
