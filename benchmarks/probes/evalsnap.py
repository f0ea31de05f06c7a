"""PSNR of the MMSE of one checkpoint on one benchmark image (quality.py's images and noise).

    python benchmarks/probes/evalsnap.py CHECKPOINT IMAGE NOISE [N_SAMPLES]
"""
import sys, tempfile, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import quality as q
snap, image, noise = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
n = int(sys.argv[4]) if len(sys.argv) > 4 else 20
clean = q.clean_images()[image]
noisy = q.add_noise(clean, noise, 0)
with tempfile.TemporaryDirectory() as tmp:
    pkg = q.export(snap, Path(tmp) / 'p')
    t = time.time()
    mmse = q.hdn_mmse(pkg, noisy, n, 0)
    print(snap.name, image, noise, q.scores(mmse, clean), 'noisy', q.scores(noisy, clean), round(time.time() - t, 1), 's')
