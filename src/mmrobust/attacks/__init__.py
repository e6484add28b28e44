"""Attack layer: budgets, perturbations, untargeted feature attacks and promotion attacks."""

from mmrobust.attacks.base import Attack, as_budget, objective_gradient
from mmrobust.attacks.budget import Budget, project_rows, row_norm
from mmrobust.attacks.fgsm import FGSM, fgsm_from_gradient
from mmrobust.attacks.objectives import BPRObjective, Triples, split_triples, untargeted_objective
from mmrobust.attacks.perturbation import Perturbation, clean_rows
from mmrobust.attacks.pgd import PGD
from mmrobust.attacks.promotion import (
    PromotionAttack,
    PromotionConfig,
    PromotionObjective,
    select_targets,
    split_users,
)
from mmrobust.attacks.random_noise import RandomNoise
from mmrobust.errors import UserError

ATTACKS = {cls.name: cls for cls in (FGSM, PGD, RandomNoise)}


def make_attack(name: str, **kwargs) -> Attack:
    """An attack object by name (fgsm, pgd, random)."""
    if name not in ATTACKS:
        raise UserError(f"unknown attack '{name}'; available: {', '.join(ATTACKS)}")
    return ATTACKS[name](**kwargs)


__all__ = [
    "ATTACKS",
    "Attack",
    "BPRObjective",
    "Budget",
    "FGSM",
    "PGD",
    "Perturbation",
    "PromotionAttack",
    "PromotionConfig",
    "PromotionObjective",
    "RandomNoise",
    "Triples",
    "as_budget",
    "clean_rows",
    "fgsm_from_gradient",
    "make_attack",
    "objective_gradient",
    "project_rows",
    "row_norm",
    "select_targets",
    "split_triples",
    "split_users",
    "untargeted_objective",
]
