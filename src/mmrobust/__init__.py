"""mmrobust: adversarial robustness of multimodal recommender systems.

The package is layered (each layer imports only the ones before it):
``data`` → ``models`` → ``attacks`` → ``defenses`` → ``evaluation`` → ``training``
→ ``experiments`` → ``cli``.  The names below are the short Python API.
"""

from __future__ import annotations

from mmrobust.data import Dataset, load_dataset, make_synthetic
from mmrobust.evaluation import evaluate
from mmrobust.models import build_model
from mmrobust.training import TrainConfig, fit

__version__ = "0.1.0"

__all__ = [
    "Dataset",
    "TrainConfig",
    "__version__",
    "build_model",
    "evaluate",
    "fit",
    "load_dataset",
    "make_synthetic",
]
