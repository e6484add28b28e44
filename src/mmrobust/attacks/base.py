"""Attack base class and the gradient machinery shared by FGSM, PGD and random noise.

One object per attack (as torchattacks): configure it with a budget, a perturbation point
and the modalities to perturb, then call :meth:`Attack.perturb`.  Without an explicit
objective the attack is untargeted: it maximises the BPR loss over all test (user,
positive) pairs with one sampled negative each (METHODS.md §3).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import ClassVar

import torch
from torch import Tensor

from mmrobust.attacks.budget import Budget
from mmrobust.attacks.objectives import untargeted_objective
from mmrobust.attacks.perturbation import Perturbation
from mmrobust.data import Dataset
from mmrobust.models import Recommender

Objective = Callable[[Perturbation], Tensor]


def as_budget(budget: Budget | float | dict | None) -> Budget:
    if isinstance(budget, Budget):
        return budget
    if budget is None:
        return Budget()
    if isinstance(budget, dict) and ("eps" in budget or "norm" in budget):
        return Budget(**budget)
    return Budget(eps=budget)


def objective_gradient(objective: Objective, pert: Perturbation, create_graph: bool = False
                       ) -> tuple[Tensor, dict[str, Tensor]]:
    """(objective value, {m: ∂objective/∂δ_m}) at the perturbation's current deltas."""
    with torch.enable_grad():
        pert.requires_grad_()
        value = objective(pert)
        grads = torch.autograd.grad(value, list(pert.deltas.values()), create_graph=create_graph,
                                    allow_unused=True)
    out = {m: (g if g is not None else torch.zeros_like(d))
           for (m, d), g in zip(pert.deltas.items(), grads, strict=True)}
    return value.detach(), out


class Attack:
    """Base class; subclasses implement :meth:`run`."""

    name: ClassVar[str] = "attack"
    #: whether :meth:`run` reads the objective (the random baseline does not)
    needs_objective: ClassVar[bool] = True

    def __init__(self, budget: Budget | float | dict | None = None, point: str = "raw",
                 modalities: Sequence[str] | None = None):
        self.budget = as_budget(budget)
        self.point = point
        self.modalities = tuple(modalities) if modalities else None

    def run(self, objective: Objective, pert: Perturbation) -> Perturbation:
        raise NotImplementedError

    def perturb(self, model: Recommender, dataset: Dataset | None = None,
                features: Mapping[str, Tensor] | None = None, objective: Objective | None = None,
                items: Tensor | None = None, split: str = "test", seed: int = 0) -> Perturbation:
        """Craft a perturbation of ``items`` (default: all items) against ``model``.

        ``objective`` (to maximise) defaults to the untargeted BPR objective on ``split``."""
        if features is None:
            if dataset is None:
                raise ValueError("perturb needs a dataset or an explicit feature dict")
            features = dataset.feature_tensors(model.device, model.modalities)
        was_training = model.training
        model.eval()
        try:
            if objective is None and self.needs_objective:
                if dataset is None:
                    raise ValueError("the untargeted objective needs the dataset (its test split)")
                objective = untargeted_objective(model, dataset, features, split, seed)
            pert = Perturbation.zeros(model, features, self.budget, self.point, self.modalities,
                                      items)
            pert = self.run(objective, pert).detached()
        finally:
            model.train(was_training)
        pert.info.setdefault("attack", self.name)
        return pert

    def describe(self) -> dict[str, object]:
        return {"attack": self.name, "point": self.point, "modalities": self.modalities,
                **self.budget.model_dump()}
