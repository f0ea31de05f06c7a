"""Diagnosis (2026-11-30): MMSE PSNR of a checkpoint on the demo sample, whole image, PyTorch.

Usage: python benchmarks/diag_whole_image.py CHECKPOINT N_SAMPLES
"""
import sys, numpy as np, torch, tifffile
torch.set_num_threads(1)
from hdn_deploy.training.checkpoint import load_checkpoint
from hdn_deploy.metrics import psnr
ck = load_checkpoint(sys.argv[1]); m = ck.build_model()
noisy = tifffile.imread('hdn_deploy/sample_data/nuclei_noisy.tif').astype(np.float32)
clean = tifffile.imread('hdn_deploy/sample_data/nuclei_clean.tif').astype(np.float32)
n = ck.normalization
x = torch.from_numpy((noisy - n.mean) / n.std)[None, None]
g = torch.Generator().manual_seed(0)
outs = []
with torch.no_grad():
    for i in range(int(sys.argv[2])):
        outs.append(m.sample_posterior(x, 1, g)[0, 0].numpy() * n.std + n.mean)
        if i in (0, 3, 9, 19, 49): print(i + 1, 'samples MMSE PSNR', round(psnr(np.mean(outs, 0), clean), 2), flush=True)
print('noisy', round(psnr(noisy, clean), 2))
