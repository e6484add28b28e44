"""Random-noise baseline: δ of the same norm as the budget, in a random direction
(uniform on the L2 sphere, or random signs for L∞)."""

from __future__ import annotations

import torch

from mmrobust.attacks.base import Attack, Objective
from mmrobust.attacks.budget import random_direction
from mmrobust.attacks.perturbation import Perturbation


class RandomNoise(Attack):
    name = "random"
    needs_objective = False

    def __init__(self, budget=None, point: str = "raw", modalities=None, seed: int = 0):
        super().__init__(budget, point, modalities)
        self.seed = seed

    def run(self, objective: Objective, pert: Perturbation) -> Perturbation:
        generator = torch.Generator().manual_seed(self.seed)
        for m, delta in pert.deltas.items():
            direction = random_direction(tuple(delta.shape), pert.budget.norm, generator,
                                         delta.device, delta.dtype)
            pert.deltas[m] = pert.radius[m].unsqueeze(1) * direction
        return pert.project()
