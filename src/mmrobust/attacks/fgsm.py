"""FGSM (Goodfellow et al.; modality-balancing paper Eq. 3).

One step from δ = 0: δ_{m,i} = ε_{m,i} · Γ_{m,i} / ‖Γ_{m,i}‖₂ for an L2 budget (FGSM-L2,
the default), δ_{m,i} = ε_{m,i} · sign(Γ_{m,i}) for an L∞ budget (FGSM-sign), with
Γ = ∂objective/∂δ at δ = 0, row by row.
"""

from __future__ import annotations

from mmrobust.attacks.base import Attack, Objective, objective_gradient
from mmrobust.attacks.budget import steepest_direction
from mmrobust.attacks.perturbation import Perturbation


def fgsm_from_gradient(pert: Perturbation, grads: dict) -> Perturbation:
    """Set δ to the budget-sized steepest-ascent step along ``grads`` (rows with Γ = 0 stay 0)."""
    for m in pert.deltas:
        direction = steepest_direction(grads[m].detach(), pert.budget.norm)
        pert.deltas[m] = pert.radius[m].unsqueeze(1) * direction
    return pert.project()


class FGSM(Attack):
    name = "fgsm"

    def run(self, objective: Objective, pert: Perturbation) -> Perturbation:
        value, grads = objective_gradient(objective, pert)
        pert.info["objective_clean"] = float(value)
        return fgsm_from_gradient(pert, grads)
