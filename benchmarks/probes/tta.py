"""MMSE with the samples spread over the 8 flips/rotations of the input (D4 self-ensemble)
against the plain MMSE with the same number of samples, and the same for the mean pass.

    python benchmarks/probes/tta.py CHECKPOINT IMAGE NOISE N_SAMPLES
"""
import sys, tempfile, time
from pathlib import Path
import numpy as np
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import quality as q
from hdn_deploy import Denoiser
snap, image, noise, n = Path(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
clean = q.clean_images()[image]; noisy = q.add_noise(clean, noise, 0)
def fwd(a, k): return np.rot90(a[:, ::-1] if k >= 4 else a, k % 4)
def inv(a, k):
    a = np.rot90(a, -(k % 4))
    return a[:, ::-1] if k >= 4 else a
with tempfile.TemporaryDirectory() as tmp:
    pkg = q.export(snap, Path(tmp) / 'p')
    den = Denoiser(pkg, threads=1)
    t = time.time()
    plain = den.denoise(noisy, n_samples=n, seed=0).mmse
    print('plain', n, q.scores(plain, clean), round(time.time() - t, 1)); t = time.time()
    acc = np.zeros_like(noisy, dtype=np.float64)
    for k in range(8):
        acc += inv(den.denoise(np.ascontiguousarray(fwd(noisy, k)), n_samples=max(n // 8, 2), seed=k).mmse, k)
    print('d4', 8 * max(n // 8, 2), q.scores((acc / 8).astype(np.float32), clean), round(time.time() - t, 1))
    m = den.denoise(noisy, n_samples=1, seed=0, sampling='mean').mmse
    acc = np.zeros_like(noisy, dtype=np.float64)
    for k in range(8):
        acc += inv(den.denoise(np.ascontiguousarray(fwd(noisy, k)), n_samples=1, seed=k, sampling='mean').mmse, k)
    print('mean', q.scores(m, clean), 'mean d4', q.scores((acc / 8).astype(np.float32), clean))
