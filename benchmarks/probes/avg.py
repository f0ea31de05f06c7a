"""Average the weights of several checkpoints (float tensors; the rest from the last).

    python benchmarks/probes/avg.py A.safetensors B.safetensors OUT.safetensors
"""
import sys, dataclasses, torch
from hdn_deploy.training.checkpoint import load_checkpoint, save_checkpoint
paths, out = sys.argv[1:-1], sys.argv[-1]
cks = [load_checkpoint(p) for p in paths]
state = {}
for k, v in cks[0].model_state.items():
    if v.is_floating_point():
        state[k] = sum(c.model_state[k] for c in cks) / len(cks)
    else:
        state[k] = cks[-1].model_state[k]
save_checkpoint(out, dataclasses.replace(cks[-1], model_state=state, training_state=None, training_tensors={}))
print('saved', out)
