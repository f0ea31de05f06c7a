"""HDN training (PyTorch): the ladder VAE, noise models, data, trainer and checkpoints.

Installed as ``hdn_deploy.training``; needs the ``[train]`` extra (torch).
"""
from .config import ModelConfig, TrainConfig
from .model import LadderVAE

__all__ = ["ModelConfig", "TrainConfig", "LadderVAE"]
