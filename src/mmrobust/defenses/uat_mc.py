"""UAT-MC: UAT with multimodal coordination (Band Together §4.2–4.3, METHODS.md §7).

The noise step maximises L_BPR + β · L_align, L_align = mean over the batch's items of the
cosine between the modalities' gradients ∂L_BPR/∂δ_m mapped into the item-representation
space (:mod:`mmrobust.attacks.alignment`), so the alignment acts through second-order
gradients for every backbone — including MMGCN, where the public code's alignment has no
effect.  Modalities are keyed by name (no visual/text swap), and the noise step only
differentiates w.r.t. δ (no parameter-gradient leak).  Search space (paper): β ∈ {1, …, 10}.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from pydantic import Field
from torch import Tensor

from mmrobust.attacks.alignment import alignment
from mmrobust.defenses.adversarial import batch_bpr
from mmrobust.defenses.uat import UAT, UATConfig
from mmrobust.models import Batch, Needs, Recommender


class UATMCConfig(UATConfig):
    beta: float = Field(
        1.0, ge=0, description="β of the alignment term (paper search space 1, …, 10)"
    )


class UATMC(UAT):
    name = "uat-mc"
    needs = Needs("UAT-MC", routes=("direct",))
    Config = UATMCConfig

    def noise_objective(self, model: Recommender, features: Mapping[str, Tensor], batch: Batch):
        def objective(pert) -> Tensor:
            value = batch_bpr(model, features, batch, pert)
            if self.config.beta == 0:
                return value
            names = list(pert.deltas)
            grads = torch.autograd.grad(value, [pert.deltas[m] for m in names], create_graph=True)
            align = alignment(model, features, pert, dict(zip(names, grads, strict=True))).mean()
            self.record("alignment", align.detach())
            return value + self.config.beta * align

        return objective
