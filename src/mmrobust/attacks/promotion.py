"""Item-promotion attacks (Band Together paper §2.2, METHODS.md §7).

Evasion-time promotion: perturb the features of one target item t so that it enters many
users' top-K.  The utility (CLeaR style) over the attack users A is

    U_t(δ) = mean_{u ∈ A_t} h(ŷ_ut(δ) − τ_ut),

τ_ut the K-th highest score of u among the items u has no training interaction with
(other than t), A_t the attack users without t among their training items, and h the
surrogate: ``logsigmoid`` (default) or the public code's ``relu``: ReLU(z + m), m = 1 for
PGD and 10 for FGSM.  Gradient alignment adds β · cos(J_v ∇_{δ_v} U_t, J_t ∇_{δ_t} U_t),
the gradients compared in the item-representation space (J_m the Jacobian of the
target's representation w.r.t. δ_m, see :mod:`mmrobust.attacks.alignment`; the mean over
modality pairs with more than two modalities); it needs second-order gradients.

For models whose item representation reads only the item's own features
(``model.item_local``), many targets are attacked in one batch exactly (each target's
δ only moves its own score, and τ uses the other targets' clean scores); τ does not move
between steps for them.  Other models attack one target at a time and recompute τ from
the perturbed model at every step.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from mmrobust.attacks.alignment import alignment
from mmrobust.attacks.base import Attack
from mmrobust.attacks.perturbation import Perturbation
from mmrobust.data import Dataset
from mmrobust.errors import UserError
from mmrobust.models import Recommender


class PromotionConfig(BaseModel):
    """Promotion-attack settings (Band Together defaults)."""

    model_config = ConfigDict(extra="forbid")

    n_interactions: int = Field(5, ge=0, description="targets have exactly this "
                                                     "many training interactions")
    n_targets: int = Field(100, ge=1, description="how many targets")
    selection: Literal["unpopular", "uniform", "popular"] = Field(
        "unpopular", description="unpopular: exactly n_interactions; uniform: "
                                 "any item; popular: the most popular")
    attack_share: float = Field(0.4, gt=0, lt=1, description="share of users in the "
                                                             "attack set A (rest held out)")
    k: int = Field(50, ge=1, description="K of the top-K threshold τ in the utility")
    surrogate: Literal["logsigmoid", "relu"] = Field("logsigmoid", description="h in the utility")
    margin: float | None = Field(None, description="m of the relu surrogate "
                                                   "(default 1 for PGD, 10 for FGSM)")
    beta: float = Field(0.0, ge=0, description="weight of the gradient-alignment term")
    target_batch: int = Field(25, ge=1, description="targets attacked together "
                                                    "when the model is item-local")
    seed: int = Field(0, description="seed of target and attack-user selection")


def select_targets(dataset: Dataset, n_interactions: int = 5, count: int = 100,
                   selection: str = "unpopular", seed: int = 0) -> tuple[np.ndarray, str]:
    """Target item ids and a note saying what was
    used (fewer than ``count`` when too few qualify)."""
    pop = dataset.item_popularity()
    rng = np.random.default_rng([seed, 104729])
    if selection == "popular":
        chosen = np.argsort(-pop, kind="stable")[:count]
        return np.sort(chosen), f"the {len(chosen)} most popular items"
    if selection == "uniform":
        pool = np.arange(dataset.n_items)
        note = "items drawn uniformly"
    elif selection == "unpopular":
        pool = np.flatnonzero(pop == n_interactions)
        note = f"items with exactly {n_interactions} training interactions"
    else:
        raise UserError(f"unknown target selection '{selection}'; "
                         "use unpopular, uniform or popular")
    if len(pool) == 0:
        raise UserError(f"dataset '{dataset.name}' has no {note}; choose another n_interactions")
    chosen = np.sort(rng.choice(pool, size=min(count, len(pool)), replace=False))
    if len(chosen) < count:
        note += f" (only {len(chosen)} exist, all used)"
    return chosen, f"{len(chosen)} {note}"


def split_users(dataset: Dataset, share: float = 0.4,
                seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(attack users A, held-out users): a random
    ``share`` of the users with training data, by seed."""
    users = np.flatnonzero(dataset.train.getnnz(axis=1) > 0)
    rng = np.random.default_rng([seed, 15485863])
    chosen = rng.random(len(users)) < share
    return users[chosen], users[~chosen]


def topk_excluding(scores: Tensor, excluded: Tensor, k: int) -> Tensor:
    """Top-``k`` values per row of ``scores`` with ``excluded`` (bool, same shape) set to −∞."""
    return torch.topk(scores.masked_fill(excluded, -torch.inf), k, dim=1).values


def per_target_threshold(others_topk: Tensor, target_clean: Tensor, target_excluded: Tensor,
                         k: int) -> Tensor:
    """τ[u, t] = K-th highest among the non-target top-K values and the *other* targets' clean
    scores (targets the user trained on excluded): [U, T]."""
    n_users, n_targets = target_clean.shape
    others = target_clean.masked_fill(target_excluded, -torch.inf)
    cand = others.unsqueeze(1).expand(n_users, n_targets, n_targets).clone()
    # a target is not its own competitor
    cand[:, torch.arange(n_targets), torch.arange(n_targets)] = -torch.inf
    others = others_topk.unsqueeze(1).expand(n_users, n_targets, others_topk.shape[1])
    pool = torch.cat([others, cand], 2)
    return torch.topk(pool, k, dim=2).values[:, :, -1]


def surrogate(z: Tensor, kind: str, margin: float) -> Tensor:
    return F.logsigmoid(z) if kind == "logsigmoid" else F.relu(z + margin)


class PromotionObjective:
    """Σ_t U_t(δ_t) (+ β Σ_t alignment_t) for a batch of targets; callable on a Perturbation."""

    chunk = 2048  # users scored at once when computing τ

    def __init__(self, model: Recommender, dataset: Dataset, features: Mapping[str, Tensor],
                 targets: Tensor,
                 users: Tensor, config: PromotionConfig, margin: float, point: str,
                 fixed_threshold: bool):
        self.model, self.features, self.targets, self.users = model, features, targets, users
        self.config, self.margin, self.point = config, margin, point
        train = dataset.train[users.cpu().numpy()]
        self.train_rows = train
        target_cols = train[:, targets.cpu().numpy()].toarray() > 0
        self.excluded = torch.from_numpy(target_cols).to(users.device)  # [U, T]: u trained on t
        weights = (~self.excluded).float()
        self.weights = weights / weights.sum(0).clamp_min(1.0)  # mean over A_t
        self.tau = self._threshold(None) if fixed_threshold else None

    def _threshold(self, pert: Perturbation | None) -> Tensor:
        """τ from the current model (the perturbed one when ``pert`` is given)."""
        with torch.no_grad():
            feats, emb_delta = (pert.detached().inputs(self.model, self.features)
                                if pert is not None else (self.features, None))
            emb = self.model.embed(feats, emb_delta)
            taus = []
            for start in range(0, len(self.users), self.chunk):
                rows = slice(start, start + self.chunk)
                scores = emb.full_scores(self.users[rows])
                mask = torch.zeros_like(scores, dtype=torch.bool)
                coo = self.train_rows[rows].tocoo()
                mask[torch.from_numpy(coo.row).to(mask.device),
                     torch.from_numpy(coo.col).to(mask.device)] = True
                mask[:, self.targets] = True
                others = topk_excluding(scores, mask, self.config.k)
                taus.append(per_target_threshold(others, scores[:, self.targets],
                                                 self.excluded[rows], self.config.k))
            return torch.cat(taus)

    def target_scores(self, pert: Perturbation) -> Tensor:
        feats, emb_delta = pert.inputs(self.model, self.features)
        emb = self.model.embed(feats, emb_delta)
        return emb.user.index_select(0, self.users) @ emb.item.index_select(0, self.targets).T

    def utility(self, pert: Perturbation) -> Tensor:
        tau = self.tau if self.tau is not None else self._threshold(pert)
        z = self.target_scores(pert) - tau
        return (surrogate(z, self.config.surrogate, self.margin) * self.weights).sum()

    def alignment(self, value: Tensor, pert: Perturbation) -> Tensor:
        """Σ_t alignment_t: the gradients of the utility w.r.t. each modality's δ, mapped into the
        item-representation space, compared by cosine (differentiable in δ)."""
        names = list(pert.deltas)
        if len(names) < 2:
            raise UserError("gradient alignment needs at least two perturbed modalities")
        grads = torch.autograd.grad(value, [pert.deltas[m] for m in names], create_graph=True)
        return alignment(self.model, self.features, pert,
                         dict(zip(names, grads, strict=True))).sum()

    def __call__(self, pert: Perturbation) -> Tensor:
        value = self.utility(pert)
        if self.config.beta > 0:
            value = value + self.config.beta * self.alignment(value, pert)
        return value


class PromotionAttack:
    """Promote targets with an FGSM or PGD attack object under a promotion utility."""

    def __init__(self, attack: Attack, config: PromotionConfig | None = None):
        self.attack = attack
        self.config = config or PromotionConfig()

    @property
    def margin(self) -> float:
        if self.config.margin is not None:
            return self.config.margin
        return 10.0 if self.attack.name == "fgsm" else 1.0

    def perturb(self, model: Recommender, dataset: Dataset, targets: Sequence[int] | np.ndarray,
                users: Sequence[int] | np.ndarray,
                features: Mapping[str, Tensor] | None = None) -> Perturbation:
        """One perturbation holding a δ row per target (``items`` = targets)."""
        device = model.device
        if features is None:
            features = dataset.feature_tensors(device, model.modalities)
        targets_t = torch.as_tensor(np.asarray(targets), dtype=torch.long, device=device)
        users_t = torch.as_tensor(np.asarray(users), dtype=torch.long, device=device)
        batch = self.config.target_batch if model.item_local else 1
        parts = []
        for start in range(0, len(targets_t), batch):
            chunk = targets_t[start:start + batch]
            objective = PromotionObjective(model, dataset, features, chunk, users_t, self.config,
                                           self.margin,
                                           self.attack.point, fixed_threshold=model.item_local)
            parts.append(self.attack.perturb(model, dataset, features, objective=objective,
                                             items=chunk))
        first = parts[0]
        merged = Perturbation(first.point,
                              {m: torch.cat([p.deltas[m] for p in parts]) for m in first.deltas},
                              {m: torch.cat([p.radius[m] for p in parts]) for m in first.radius},
                              first.budget, targets_t)
        merged.info.update({"attack": self.attack.name, "beta": self.config.beta,
                            "targets": len(targets_t), "batched": batch > 1})
        return merged
