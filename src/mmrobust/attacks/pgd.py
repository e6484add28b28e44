"""PGD (Madry et al.): T steps δ ← Π_B(δ + α · ε · dir(∇δ)), dir = ∇/‖∇‖₂ (L2) or sign (L∞),
α = ``step_scale`` / T (2.5/T by default, METHODS.md §3; 1.25/T for promotion, §7), Π_B the
row-wise projection onto the budget.  Optional random start inside the ball and restarts
(the best final objective wins)."""

from __future__ import annotations

import torch

from mmrobust.attacks.base import Attack, Objective, objective_gradient
from mmrobust.attacks.budget import random_direction, steepest_direction
from mmrobust.attacks.perturbation import Perturbation


class PGD(Attack):
    name = "pgd"

    def __init__(self, budget=None, point: str = "raw", modalities=None, steps: int = 10,
                 step_scale: float = 2.5,
                 random_start: bool = False, restarts: int = 1, seed: int = 0):
        super().__init__(budget, point, modalities)
        if steps < 1 or restarts < 1:
            raise ValueError("PGD needs steps ≥ 1 and restarts ≥ 1 "
                             f"(got steps={steps}, restarts={restarts})")
        self.steps, self.step_scale = steps, step_scale
        self.random_start, self.restarts, self.seed = random_start or restarts > 1, restarts, seed

    def _start(self, pert: Perturbation, generator: torch.Generator) -> None:
        for m, delta in pert.deltas.items():
            if not self.random_start:
                pert.deltas[m] = torch.zeros_like(delta)
                continue
            direction = random_direction(tuple(delta.shape), pert.budget.norm, generator,
                                         delta.device, delta.dtype)
            u = torch.rand(delta.shape[0], 1, generator=generator).to(delta.device, delta.dtype)
            if pert.budget.norm == "linf":
                u = torch.rand(delta.shape, generator=generator).to(delta.device, delta.dtype)
            pert.deltas[m] = pert.radius[m].unsqueeze(1) * direction * u
        pert.project()

    def run(self, objective: Objective, pert: Perturbation) -> Perturbation:
        generator = torch.Generator().manual_seed(self.seed)
        alpha = self.step_scale / self.steps
        best, best_value, histories = None, -float("inf"), []
        for _ in range(self.restarts):
            self._start(pert, generator)
            history = []
            for _ in range(self.steps):
                value, grads = objective_gradient(objective, pert)
                history.append(float(value))
                for m, delta in pert.deltas.items():
                    direction = steepest_direction(grads[m], pert.budget.norm)
                    step = alpha * pert.radius[m].unsqueeze(1) * direction
                    pert.deltas[m] = delta.detach() + step
                pert.project()
            final = float(objective_gradient(objective, pert)[0])
            history.append(final)
            histories.append(history)
            if final > best_value:
                best, best_value = pert.detached(), final
        best.info.update({"objective_history": histories, "objective_final": best_value})
        return best
