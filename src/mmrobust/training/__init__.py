"""Training layer: the trainer and its typed configuration."""

from mmrobust.training.config import TrainConfig
from mmrobust.training.trainer import BEST, CHECKPOINT, FitResult, fit, load_weights

__all__ = ["BEST", "CHECKPOINT", "FitResult", "TrainConfig", "fit", "load_weights"]
