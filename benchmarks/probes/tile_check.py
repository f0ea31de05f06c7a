"""Training's end-of-run tile check (training/tile_check.py) on an existing checkpoint and
its training image, printed as JSON (the same record a finished run stores).

    python benchmarks/probes/tile_check.py CHECKPOINT IMAGE.tif
"""
import json
import sys

import numpy as np
import tifffile
import torch

from hdn_deploy.training.checkpoint import load_checkpoint
from hdn_deploy.training.tile_check import tile_check

torch.set_num_threads(1)
ckpt = load_checkpoint(sys.argv[1])
image = tifffile.imread(sys.argv[2]).astype(np.float32)
frames = [ckpt.normalization.apply(f) for f in (image if image.ndim == 3 else image[None])][:4]
print(sys.argv[1], json.dumps(tile_check(ckpt.build_model(), frames)), flush=True)
