"""Unimodal baselines (modality-balancing paper §5.1.2): the same model trained on one
modality only — a configuration of the model, not a loss plug-in."""

from __future__ import annotations

from typing import Any


def unimodal_params(model_params: dict[str, Any], modality: str) -> dict[str, Any]:
    """The model settings of the unimodal variant reading only ``modality``."""
    return {**model_params, "modalities": [modality]}
