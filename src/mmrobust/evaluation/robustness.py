"""Untargeted robustness: clean vs attacked full-ranking metrics (METHODS.md §3).

``untargeted_sweep`` runs every attack at every budget on the chosen modality sets and
returns one tidy row per (attack, budget, modalities, metric@K) with the clean value, the
attacked value and the relative drop.  FGSM's gradient at δ = 0 does not depend on the
budget, so it is computed once per modality set and rescaled for every budget.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

import pandas as pd
import torch
from torch import Tensor

from mmrobust.attacks import (
    PGD,
    Budget,
    Perturbation,
    RandomNoise,
    fgsm_from_gradient,
    objective_gradient,
    untargeted_objective,
)
from mmrobust.data import Dataset
from mmrobust.errors import UserError
from mmrobust.evaluation.metrics import DEFAULT_KS
from mmrobust.evaluation.ranking import evaluate
from mmrobust.models import Recommender

UNTARGETED_ATTACKS = ("random", "fgsm", "pgd")


def evaluate_perturbed(model: Recommender, dataset: Dataset, pert: Perturbation | None,
                       split: str = "test",
                       features: Mapping[str, Tensor] | None = None,
                       ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """Full-ranking metrics with the perturbation applied (clean when ``pert`` is None)."""
    if features is None:
        features = dataset.feature_tensors(model.device, model.modalities)
    if pert is None:
        return evaluate(model, dataset, split, features, ks)
    with torch.no_grad():
        feats, emb_delta = pert.inputs(model, features)
    return evaluate(model, dataset, split, feats, ks, embedding_delta=emb_delta)


def untargeted_sweep(model: Recommender, dataset: Dataset,
                     attacks: Sequence[str] = UNTARGETED_ATTACKS,
                     budgets: Sequence[float] = (0.025, 0.05, 0.075, 0.1),
                     modality_sets: Sequence[Sequence[str]] | None = None, norm: str = "l2",
                     relative: bool = True,
                     point: str = "raw", pgd_steps: int = 10, pgd_restarts: int = 1, seed: int = 0,
                     ks: Sequence[int] = (10, 20), sample: int | None = None, negatives: int = 1,
                     resample: bool = True) -> pd.DataFrame:
    """Clean vs attacked metrics for every attack ×
    budget × modality set (default: all modalities)."""
    unknown = [a for a in attacks if a not in UNTARGETED_ATTACKS]
    if unknown:
        raise UserError(f"unknown untargeted attack {', '.join(unknown)}; "
                         f"use {', '.join(UNTARGETED_ATTACKS)}")
    features = dataset.feature_tensors(model.device, model.modalities)
    clean = evaluate(model, dataset, "test", features, ks)
    sets = [tuple(s) for s in modality_sets] if modality_sets else [model.modalities]
    def objective():
        return untargeted_objective(model, dataset, features, "test", seed, negatives, resample,
                                    sample)

    model.eval()
    rows = []
    for mods in sets:
        base = Perturbation.zeros(model, features, Budget(eps=1.0, norm=norm, relative=relative),
                                  point, mods)
        tick = time.perf_counter()
        _, grad = objective_gradient(objective(), base)
        grad_seconds = time.perf_counter() - tick
        for eps in budgets:
            budget = Budget(eps=eps, norm=norm, relative=relative)
            for name in attacks:
                tick = time.perf_counter()
                pert = _craft(name, model, features, objective(), budget, point, mods, grad,
                              pgd_steps, pgd_restarts, seed)
                attack_seconds = (time.perf_counter() - tick
                                  + (grad_seconds if name == "fgsm" else 0.0))
                attacked = evaluate_perturbed(model, dataset, pert, "test", features, ks)
                norms = pert.norms()
                for key, value in attacked.items():
                    metric, _, k = key.partition("@")
                    rows.append({"attack": name, "budget": eps, "norm": norm, "point": point,
                                 "modalities": "+".join(mods), "metric": metric, "k": int(k),
                                 "clean": clean[key], "attacked": value,
                                 "drop": ((clean[key] - value) / clean[key] if clean[key]
                                          else float("nan")),
                                 "attack_seconds": attack_seconds,
                                 "max_ratio_to_radius": max(n["max_ratio_to_radius"]
                                                            for n in norms.values())})
    return pd.DataFrame(rows)


def _craft(name, model, features, objective, budget, point, mods, grad, pgd_steps, pgd_restarts,
           seed) -> Perturbation:
    pert = Perturbation.zeros(model, features, budget, point, mods)
    if name == "fgsm":
        pert = fgsm_from_gradient(pert, grad)
        pert.info["attack"] = "fgsm"
        return pert.detached()
    if name == "random":
        return RandomNoise(budget, point, mods, seed=seed).run(objective, pert).detached()
    pgd = PGD(budget, point, mods, steps=pgd_steps, restarts=pgd_restarts, seed=seed)
    return pgd.run(objective, pert).detached()


def masking_check(sweep: pd.DataFrame, factor: float = 2.0) -> pd.DataFrame:
    """Adaptive check against gradient masking (Athalye et al., ICML'18; Carlini et al. 2019):
    for every budget, modality set and metric@K of a sweep holding FGSM and PGD rows, the
    two relative drops and ``flagged`` = PGD drop > ``factor`` × FGSM drop.  A defense whose
    single-step attack is much weaker than the iterated one hides its gradient rather than
    being robust, so its FGSM numbers overstate the robustness."""
    keys = ["budget", "modalities", "metric", "k"]
    missing = {"fgsm", "pgd"} - set(sweep["attack"])
    if missing:
        raise ValueError("the masking check needs FGSM and PGD rows; "
                         f"missing {', '.join(sorted(missing))}")
    wide = sweep.pivot_table(index=keys, columns="attack", values="drop").reset_index()
    clean = sweep.groupby(keys)["clean"].first().reset_index()
    out = wide[keys + ["fgsm", "pgd"]].rename(columns={"fgsm": "fgsm_drop",
                                                       "pgd": "pgd_drop"}).merge(clean, on=keys)
    out["flagged"] = out["pgd_drop"] > factor * out["fgsm_drop"].clip(lower=0)
    return out
