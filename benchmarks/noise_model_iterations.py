"""GMM noise-model fit quality against the true Poisson-Gaussian variance (4 s + 25) of the
default-model calibration stack, for 300 vs 2000 iterations (2026-11-30).

Usage: python benchmarks/noise_model_iterations.py
"""
import sys, time, numpy as np, torch
torch.set_num_threads(1)
sys.argv=['x']
from hdn_deploy.training import default_model as dm
from hdn_deploy.training.noise_models import GMMNoiseModel
rng=np.random.default_rng(dm.SEED)
stack=dm.calibration_stack(rng)
sig=np.broadcast_to(stack.mean(0),stack.shape)
s=np.linspace(5,250,8)
true=dm.GAIN*s+dm.READ_NOISE**2
for its,bs in [(300,50000),(2000,250000)]:
    t=time.time()
    m=GMMNoiseModel.fit(sig,stack,iterations=its,batch_size=bs,seed=0)
    v=m.variance(s)
    print(its,bs,round(time.time()-t,1),'s rel err',np.round(v/true-1,3))
