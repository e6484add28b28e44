"""AMR: adversarial multimedia recommendation (Tang et al., TKDE 2019; METHODS.md §6) — the
"Adv training" baseline of the modality-balancing paper.

From a clean checkpoint, train on L_model + λ · L_BPR(x + Δ), Δ_i = ε Γ_i / ‖Γ_i‖₂ per item
row, Γ = ∂L_BPR/∂x for the batch's items, recomputed every batch and held constant.  ε is
relative to ‖x_i‖ by default (so that budgets mean the same for every defense here); the
paper's absolute ε in max-normalised feature units is ``budget: absolute_maxnorm`` (its
code divides the features by their global max |x|; defaults there ε ∈ {0.1, 1}, λ = 1).
Every modality the model reads is perturbed (the paper had images only).
"""

from __future__ import annotations

from pydantic import Field

from mmrobust.defenses.adversarial import AdversarialConfig, AdversarialTraining
from mmrobust.models import Needs


class AMRConfig(AdversarialConfig):
    eps: float = Field(
        0.05,
        ge=0,
        description="r = 5 % of ‖x_i‖ (matches the attack budget; paper: absolute 0.1/1)",
    )
    lam: float = Field(1.0, ge=0, description="λ = 1 (paper)")


class AMR(AdversarialTraining):
    name = "amr"
    needs = Needs("AMR adversarial training", routes=("direct",))
    Config = AMRConfig
