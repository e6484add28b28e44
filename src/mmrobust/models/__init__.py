"""Model layer: the model contract (:mod:`mmrobust.models.base`) and the zoo."""

from __future__ import annotations

from mmrobust.models.base import (
    FEATURE_ROUTES,
    PERTURBATION_POINTS,
    Batch,
    Embeddings,
    ModelConfig,
    MultimodalConfig,
    Recommender,
    bpr_loss,
)
from mmrobust.models.bm3 import BM3
from mmrobust.models.duif import DUIF
from mmrobust.models.freedom import FREEDOM
from mmrobust.models.grcn import GRCN
from mmrobust.models.lattice import LATTICE
from mmrobust.models.lightgcn import LightGCN
from mmrobust.models.mf import MF
from mmrobust.models.mmgcl import MMGCL
from mmrobust.models.mmgcn import MMGCN
from mmrobust.models.needs import ModelProfile, Needs, NotApplicable, profile_of, why_not
from mmrobust.models.plugins import LossPlugin
from mmrobust.models.popularity import Popularity
from mmrobust.models.registry import ALIASES, MODELS, build_model, make_config, model_class
from mmrobust.models.slmrec import SLMRec
from mmrobust.models.vbpr import VBPR

__all__ = [
    "ALIASES",
    "BM3",
    "DUIF",
    "FREEDOM",
    "GRCN",
    "LATTICE",
    "MMGCL",
    "MMGCN",
    "SLMRec",
    "FEATURE_ROUTES",
    "MODELS",
    "PERTURBATION_POINTS",
    "Batch",
    "Embeddings",
    "LightGCN",
    "LossPlugin",
    "MF",
    "ModelConfig",
    "ModelProfile",
    "Needs",
    "NotApplicable",
    "MultimodalConfig",
    "Popularity",
    "Recommender",
    "VBPR",
    "bpr_loss",
    "build_model",
    "make_config",
    "model_class",
    "profile_of",
    "why_not",
]
