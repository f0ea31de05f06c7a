"""PSNR and global bias of one checkpoint's (or package's) MMSE at several tile/overlap
settings, on one benchmark image (quality.py's images and noise, seed 0; 20 samples).

    python benchmarks/probes/tiles.py CHECKPOINT_OR_PACKAGE IMAGE NOISE TILE/OVERLAP...
    e.g. ... runs/x/step_1000.safetensors nuclei gaussian25 128/64 512/64
"""
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.quality import add_noise, clean_images, export, scores  # noqa: E402
from hdn_deploy import Denoiser  # noqa: E402

source, image, noise = sys.argv[1], sys.argv[2], sys.argv[3]
clean = clean_images()[image]
noisy = add_noise(clean, noise, 0)
with tempfile.TemporaryDirectory() as tmp:
    pkg = export(Path(source), Path(tmp) / "p") if source.endswith(".safetensors") else Path(source)
    denoiser = Denoiser(pkg, threads=1)
    for spec in sys.argv[4:]:
        tile, overlap = (int(v) for v in spec.split("/"))
        mmse = denoiser.denoise(noisy, n_samples=20, seed=0, tile=tile, overlap=overlap).mmse
        print(spec, scores(mmse, clean), "bias", round(float((mmse - clean).mean()), 3), flush=True)
