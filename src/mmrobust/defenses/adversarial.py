"""Adversarial training with an FGSM step in the loop: the machinery AMR, UAT and UAT-MC share.

Every batch: δ for the batch's items (positives and negatives) is one budget-sized step
along ∇_δ L_BPR(batch) (METHODS.md §6–7), treated as a constant, and the plug-in adds
λ · L_BPR(batch | x + δ) to the model's own loss.  The noise step differentiates with
``torch.autograd.grad`` w.r.t. δ only, so no parameter gradient leaks from it into the
training step (a defect of the UAT-MC public code).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from mmrobust.attacks import Budget, Perturbation, fgsm_from_gradient, objective_gradient, row_norm
from mmrobust.attacks.perturbation import clean_rows
from mmrobust.models import Batch, LossPlugin, Needs, Recommender, bpr_loss


class AdversarialConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    eps: float = Field(0.05, ge=0, description="budget: r (relative) or ε (absolute)")
    budget: Literal["relative", "absolute", "absolute_maxnorm"] = Field(
        "relative",
        description="relative: ε_i = r‖x_i‖; absolute: ε; absolute_maxnorm: ε·max|x_m| (AMR code)",
    )
    lam: float = Field(1.0, ge=0, description="weight λ of the adversarial BPR term")
    point: Literal["raw", "embedding"] = Field("raw", description="perturbation point")
    modalities: list[str] | None = Field(
        None, description="modalities to perturb (default: all the model reads)"
    )


def batch_bpr(
    model: Recommender, features: Mapping[str, Tensor], batch: Batch, pert: Perturbation | None
) -> Tensor:
    """L_BPR of the batch with the perturbation applied (clean when ``pert`` is None)."""
    feats, emb_delta = pert.inputs(model, features) if pert is not None else (features, None)
    pos, neg = model.bpr_scores(feats, batch, emb_delta)
    return bpr_loss(pos, neg)


class AdversarialTraining(LossPlugin):
    """λ · L_BPR(x + δ) with δ an FGSM-L2 step on the batch's items, recomputed every batch."""

    name: ClassVar[str] = "adversarial"
    needs: ClassVar[Needs] = Needs("adversarial training", routes=("direct",))
    Config: ClassVar[type[AdversarialConfig]] = AdversarialConfig

    def __init__(self, config: AdversarialConfig | None = None, **overrides: object):
        super().__init__()
        values = (config or self.Config()).model_dump()
        values.update(overrides)
        self.config = self.Config(**values)
        self._scale: dict[str, float] = {}

    def on_fit_start(self, model: Recommender, dataset: object) -> None:
        self.needs.check(model)
        if self.config.budget == "absolute_maxnorm":
            feats = dataset.feature_tensors("cpu", model.modalities)
            self._scale = {m: float(x.abs().max()) for m, x in feats.items()}

    def budget(self, model: Recommender) -> Budget:
        eps = self.config.eps
        if self.config.budget == "relative":
            return Budget(eps=eps)
        if self.config.budget == "absolute":
            return Budget(eps=eps, relative=False)
        return Budget(
            eps={m: eps * self._scale.get(m, 1.0) for m in model.modalities}, relative=False
        )

    def noise_objective(self, model: Recommender, features: Mapping[str, Tensor], batch: Batch):
        return lambda pert: batch_bpr(model, features, batch, pert)

    def craft(
        self, model: Recommender, features: Mapping[str, Tensor], batch: Batch
    ) -> Perturbation:
        items = torch.unique(torch.cat([batch.pos, batch.neg]))
        pert = Perturbation.zeros(
            model, features, self.budget(model), self.config.point, self.config.modalities, items
        )
        _, grads = objective_gradient(self.noise_objective(model, features, batch), pert)
        return fgsm_from_gradient(pert, grads).detached()

    def extra_loss(
        self, model: Recommender, batch: Batch, features: Mapping[str, Tensor]
    ) -> Tensor | None:
        if self.config.lam == 0:
            return None
        pert = self.craft(model, features, batch)
        term = batch_bpr(model, features, batch, pert)
        self.record("adv_bpr", term.detach())
        for m, delta in pert.deltas.items():
            clean = clean_rows(model, features, m, pert.point, pert.items)
            self.record(f"delta_norm/{m}", row_norm(delta, "l2").mean())
            self.record(
                f"delta_ratio/{m}",
                (row_norm(delta, "l2") / row_norm(clean, "l2").clamp_min(1e-12)).mean(),
            )
        return self.config.lam * term
