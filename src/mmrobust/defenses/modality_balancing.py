"""Modality balancing (Shang et al., ACM MM'23, §4; METHODS.md §5).

Loss plug-in: L = L_model + λ · L_balance.  Per batch, N of the batch's triples (u, i, j):

* embedding distillation (Eq. 4): z starts at x_{s,i} and takes T signed-gradient steps
  (size 2.5ε/T) that minimise ‖g^s(z) − g^s(x_{s,j})‖² (target detached), projected onto
  ‖z − x_{s,i}‖_∞ ≤ ε; ε = 1 in raw feature units (the paper) or relative to the row's
  largest |x| (``eps_kind: relative``);
* e^s_{i,adv} is the *scoring-path* embedding of i with x_{s,i} replaced by z* (one forward
  pass of the model with the N rows replaced, gradients flowing into the model), so the
  loss acts on what the score reads — not on side heads;
* margins (Eq. 5): margin_r = ⟨e^r_u, e^r_i⟩ − ⟨e^r_u, e^r_j⟩ for each robust modality r,
  margin_s = ⟨e^s_u, e^s_i⟩ − ⟨e^s_u, e^s_{i,adv}⟩, with e^m the model's per-modality score
  parts (:class:`~mmrobust.models.Embeddings` ``parts``); L_balance = mean ReLU(margin_s −
  Σ_r margin_r).  With more than two modalities the robust modalities compensate together
  (the sum of their margins); ``combine: each`` balances every robust modality separately
  (mean of ReLU(margin_s − margin_r)).

The sensitive modality s is configured or chosen automatically before training: the one
whose mean score margin drops most under FGSM-L2 (r = 5 %) on the *validation* triples of
the model being fine-tuned (the choice and the drops are kept in the run's notes).
Search spaces (paper): λ ∈ {0.001, 0.01, 0.1, 1, 10}, N ∈ {10, 20, 30, 50, 100}.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from mmrobust.attacks import FGSM, Budget, split_triples
from mmrobust.data import Dataset
from mmrobust.errors import UserError
from mmrobust.models import Batch, LossPlugin, Needs, Recommender
from mmrobust.models.base import dot, rows


class ModalityBalancingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lam: float = Field(0.1, ge=0, description="λ (paper search space 0.001, 0.01, 0.1, 1, 10)")
    n_samples: int = Field(
        20, ge=1, description="N triples per batch (paper search space 10, 20, 30, 50, 100)"
    )
    eps: float = Field(1.0, ge=0, description="distillation budget ε (paper: 1, raw feature units)")
    eps_kind: Literal["absolute", "relative"] = Field(
        "absolute", description="absolute ε, or ε·max|x_{s,i}| per row"
    )
    steps: int = Field(10, ge=1, description="PGD steps T of the distillation (paper 10)")
    sensitive: str = Field(
        "auto", description="sensitive modality, or 'auto' (largest margin drop under FGSM)"
    )
    combine: Literal["sum", "each"] = Field(
        "sum", description="robust modalities compensate together or each"
    )
    select_budget: float = Field(
        0.05, gt=0, description="FGSM r used to choose the sensitive modality"
    )


def choose_sensitive_modality(
    model: Recommender, dataset: Dataset, budget: float = 0.05, seed: int = 0
) -> tuple[str, dict[str, float]]:
    """The modality whose mean validation margin s^m_ui − s^m_uj drops most under FGSM-L2."""
    features = dataset.feature_tensors(model.device, model.modalities)
    triples = split_triples(dataset, "valid", seed, device=model.device)
    was_training = model.training
    model.eval()
    try:
        pert = FGSM(Budget(eps=budget)).perturb(model, dataset, features, split="valid", seed=seed)
        with torch.no_grad():
            drops = {}
            for phase, emb in (
                ("clean", model.embed(features)),
                ("attacked", model.embed(*pert.inputs(model, features))),
            ):
                pos = emb.modality_scores(triples.users, triples.pos)
                neg = emb.modality_scores(triples.users, triples.neg)
                for m in model.modalities:
                    margin = float((pos[m] - neg[m]).mean())
                    drops[m] = drops.get(m, 0.0) + (margin if phase == "clean" else -margin)
    finally:
        model.train(was_training)
    return max(drops, key=drops.get), drops


class ModalityBalancing(LossPlugin):
    name: ClassVar[str] = "modality-balancing"
    needs: ClassVar[Needs] = Needs(
        "modality balancing", routes=("direct",), min_modalities=2, parts=True
    )
    Config: ClassVar[type[ModalityBalancingConfig]] = ModalityBalancingConfig

    def __init__(self, config: ModalityBalancingConfig | None = None, **overrides: object):
        super().__init__()
        values = (config or self.Config()).model_dump()
        values.update(overrides)
        self.config = self.Config(**values)
        self.sensitive: str | None = (
            None if self.config.sensitive == "auto" else self.config.sensitive
        )

    def on_fit_start(self, model: Recommender, dataset: Dataset) -> None:
        self.needs.check(model)
        with torch.no_grad():
            parts = model.embed(dataset.feature_tensors(model.device, model.modalities)).parts
        if set(parts) != set(model.modalities):
            raise UserError(
                f"modality balancing needs per-modality score parts; {model.name} has "
                f"{', '.join(parts) or 'none'} ({model.route_note})"
            )
        if self.sensitive is None:
            self.sensitive, drops = choose_sensitive_modality(
                model, dataset, self.config.select_budget
            )
            self.notes["margin_drops_valid"] = drops
        elif self.sensitive not in model.modalities:
            raise UserError(
                f"sensitive modality '{self.sensitive}' is not one {model.name} reads "
                f"({', '.join(model.modalities)})"
            )
        self.notes["sensitive"] = self.sensitive
        self.notes["robust"] = [m for m in model.modalities if m != self.sensitive]

    def distill(self, model: Recommender, x_i: Tensor, target: Tensor) -> Tensor:
        """Eq. 4: z* = argmin ‖g^s(z) − target‖² s.t. ‖z − x_i‖_∞ ≤ ε, by T signed steps."""
        s, cfg = self.sensitive, self.config
        eps = cfg.eps * (
            x_i.abs().amax(1, keepdim=True)
            if cfg.eps_kind == "relative"
            else torch.ones_like(x_i[:, :1])
        )
        step = 2.5 * eps / cfg.steps
        z = x_i.detach().clone()
        with torch.enable_grad():
            for _ in range(cfg.steps):
                z.requires_grad_(True)
                distance = (model.encode_modality(s, z) - target).pow(2).sum()
                (grad,) = torch.autograd.grad(distance, z)
                z = torch.maximum(
                    torch.minimum(z.detach() - step * grad.sign(), x_i + eps), x_i - eps
                )
        return z.detach()

    def extra_loss(
        self, model: Recommender, batch: Batch, features: Mapping[str, Tensor]
    ) -> Tensor | None:
        if self.config.lam == 0:
            return None
        s = self.sensitive
        pick = torch.randperm(len(batch), device=batch.users.device)[: self.config.n_samples]
        u, i, j = batch.users[pick], batch.pos[pick], batch.neg[pick]
        emb = model.embed(features)
        target = model.encode_modality(s, rows(features[s], j)).detach()
        z = self.distill(model, rows(features[s], i), target)
        adv = model.embed({**features, s: features[s].index_copy(0, i, z)})
        e_u = rows(emb.parts[s][0], u)
        margin_s = dot(e_u, rows(emb.parts[s][1], i)) - dot(e_u, rows(adv.parts[s][1], i))
        robust = {
            r: dot(rows(emb.parts[r][0], u), rows(emb.parts[r][1], i) - rows(emb.parts[r][1], j))
            for r in self.notes["robust"]
        }
        if self.config.combine == "sum":
            balance = F.relu(margin_s - sum(robust.values())).mean()
        else:
            balance = torch.stack([F.relu(margin_s - m) for m in robust.values()]).mean()
        self.record("balance", balance.detach())
        self.record("margin_sensitive", margin_s.detach().mean())
        self.record("margin_robust", sum(robust.values()).detach().mean())
        self.record("distill_shift_linf", (z - rows(features[s], i)).abs().amax(1).mean())
        return self.config.lam * balance
