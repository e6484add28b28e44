"""The model registry: every model of the zoo by name, its typed config, building it."""

from __future__ import annotations

from typing import Any

from mmrobust.data import Dataset
from mmrobust.errors import UserError
from mmrobust.models.base import ModelConfig, Recommender
from mmrobust.models.bm3 import BM3
from mmrobust.models.duif import DUIF
from mmrobust.models.freedom import FREEDOM
from mmrobust.models.grcn import GRCN
from mmrobust.models.lattice import LATTICE
from mmrobust.models.lightgcn import LightGCN
from mmrobust.models.mf import MF
from mmrobust.models.mmgcl import MMGCL
from mmrobust.models.mmgcn import MMGCN
from mmrobust.models.popularity import Popularity
from mmrobust.models.slmrec import SLMRec
from mmrobust.models.vbpr import VBPR

MODELS: dict[str, type[Recommender]] = {
    cls.name: cls
    for cls in (
        Popularity,
        MF,
        LightGCN,
        VBPR,
        DUIF,
        MMGCN,
        GRCN,
        SLMRec,
        MMGCL,
        LATTICE,
        FREEDOM,
        BM3,
    )
}
ALIASES = {"popularity": "pop", "mf-bpr": "mf", "bpr": "mf", "mfbpr": "mf"}


def model_class(name: str) -> type[Recommender]:
    key = ALIASES.get(name.lower(), name.lower())
    if key not in MODELS:
        raise UserError(f"unknown model '{name}'; available: {', '.join(MODELS)}")
    return MODELS[key]


def make_config(
    name: str, config: ModelConfig | dict[str, Any] | None = None, **overrides: Any
) -> ModelConfig:
    """The typed config of model ``name`` from a config object or dict plus keyword overrides."""
    cls = model_class(name)
    values = config.model_dump() if isinstance(config, ModelConfig) else dict(config or {})
    values.update(overrides)
    return cls.Config(**values)


def build_model(
    name: str,
    dataset: Dataset,
    config: ModelConfig | dict[str, Any] | None = None,
    **overrides: Any,
) -> Recommender:
    """Build model ``name`` for ``dataset``; unknown config keys raise a validation error naming
    them."""
    return model_class(name)(dataset, make_config(name, config, **overrides))
