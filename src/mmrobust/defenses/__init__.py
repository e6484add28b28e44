"""Defense layer: training-time defenses as loss plug-ins of the trainer (they stack), and
the unimodal baselines."""

from __future__ import annotations

from typing import Any

from mmrobust.defenses.adversarial import AdversarialConfig, AdversarialTraining, batch_bpr
from mmrobust.defenses.amr import AMR, AMRConfig
from mmrobust.defenses.modality_balancing import (
    ModalityBalancing,
    ModalityBalancingConfig,
    choose_sensitive_modality,
)
from mmrobust.defenses.uat import UAT, UATConfig
from mmrobust.defenses.uat_mc import UATMC, UATMCConfig
from mmrobust.defenses.unimodal import unimodal_params
from mmrobust.errors import UserError
from mmrobust.models import LossPlugin

DEFENSES: dict[str, type] = {cls.name: cls for cls in (AMR, ModalityBalancing, UAT, UATMC)}
ALIASES = {
    "adv": "amr",
    "adv-training": "amr",
    "mb": "modality-balancing",
    "uatmc": "uat-mc",
    "modality_balancing": "modality-balancing",
    "uat_mc": "uat-mc",
}


def defense_class(name: str) -> type:
    key = ALIASES.get(name.lower(), name.lower())
    if key not in DEFENSES:
        raise UserError(
            f"unknown defense '{name}'; available: {', '.join(DEFENSES)} (and unimodal via model "
            "settings)"
        )
    return DEFENSES[key]


def make_defense(name: str, **params: Any) -> LossPlugin:
    """A defense plug-in by name with its typed settings (unknown settings are named in the
    error)."""
    cls = defense_class(name)
    return cls(cls.Config(**params))


__all__ = [
    "AMR",
    "ALIASES",
    "AMRConfig",
    "AdversarialConfig",
    "AdversarialTraining",
    "DEFENSES",
    "ModalityBalancing",
    "ModalityBalancingConfig",
    "UAT",
    "UATConfig",
    "UATMC",
    "UATMCConfig",
    "batch_bpr",
    "choose_sensitive_modality",
    "defense_class",
    "make_defense",
    "unimodal_params",
]
