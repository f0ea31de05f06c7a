"""Diagnosis (2026-11-30): MMSE PSNR of a checkpoint on the demo sample in TxT tiles with 32 px
of reflected context, PyTorch.

Usage: python benchmarks/diag_tiles.py CHECKPOINT T
"""
import sys, numpy as np, torch, tifffile
torch.set_num_threads(1)
from hdn_deploy.training.checkpoint import load_checkpoint
from hdn_deploy.metrics import psnr
ck = load_checkpoint(sys.argv[1]); m = ck.build_model()
noisy = tifffile.imread('hdn_deploy/sample_data/nuclei_noisy.tif').astype(np.float32)
clean = tifffile.imread('hdn_deploy/sample_data/nuclei_clean.tif').astype(np.float32)
print('clean range', clean.min(), clean.max(), 'mean', clean.mean())
n = ck.normalization; print('norm', n.mean, n.std)
T = int(sys.argv[2]); pad = 32
xp = np.pad((noisy - n.mean) / n.std, pad, mode='reflect')
g = torch.Generator().manual_seed(0)
S = 10
out = np.zeros_like(noisy)
with torch.no_grad():
    for y in range(0, 256, T):
        for x0 in range(0, 256, T):
            tile = torch.from_numpy(xp[y:y + T + 2 * pad, x0:x0 + T + 2 * pad].copy())[None, None]
            s = m.sample_posterior(tile, S, g)[:, 0].mean(0).numpy()
            out[y:y + T, x0:x0 + T] = s[pad:pad + T, pad:pad + T] * n.std + n.mean
print('tile', T, 'ctx', pad, 'MMSE10 PSNR', round(psnr(out, clean), 2))
