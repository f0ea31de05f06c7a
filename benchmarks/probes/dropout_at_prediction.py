"""MMSE of a checkpoint with Dropout2d (and/or BatchNorm) left in training mode at prediction,
128-px tiles without overlap, torch, posterior log-variance clamped at 4 as in export.

    python benchmarks/probes/dropout_at_prediction.py CKPT eval|dropout|bn|both
"""
import sys, numpy as np, torch
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2]))
from benchmarks.quality import clean_images, add_noise, scores
from training.checkpoint import load_checkpoint
ck = load_checkpoint(sys.argv[1]); model = ck.build_model(); nrm = ck.normalization
mode = sys.argv[2]
for lv in model.top_down_levels: lv.stochastic.posterior_logvar_max = 4.0
for m in model.modules():
    if mode in ("dropout", "both") and isinstance(m, torch.nn.Dropout2d): m.train()
    if mode in ("bn", "both") and isinstance(m, torch.nn.BatchNorm2d): m.train()
clean = clean_images()["nuclei"]; noisy = add_noise(clean, "gaussian25", 0)
P = 128; est = np.zeros_like(noisy); g = torch.Generator().manual_seed(0)
torch.manual_seed(0)
with torch.no_grad():
    for i in range(0, 512, P):
        for j in range(0, 512, P):
            x = torch.from_numpy(nrm.apply(noisy[i:i+P, j:j+P]))[None, None]
            s = model.sample_posterior(x, 20, g).mean(0)[0].numpy()
            est[i:i+P, j:j+P] = s * nrm.std + nrm.mean
print(mode, scores(est, clean), "bias", (est-clean).mean(), "x-est", (noisy-est).mean())
