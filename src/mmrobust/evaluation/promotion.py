"""Promotion metrics (METHODS.md §7): per-target hit rates before/after, RI, share improved.

HR@K of a target t over a user set = share of those users (excluding users with t among
their training items, who can never be shown it) whose top-K list, training items
masked, contains t.  t is in u's top-K iff fewer than K other eligible items score at
least as high.  RI = (mean HR_after / mean HR_before − 1) × 100 %.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from mmrobust.attacks import Perturbation
from mmrobust.data import Dataset
from mmrobust.models import Recommender

PROMOTION_KS = (10, 20, 50, 100)


def _rank_counts(scores: Tensor, train_mask: Tensor, targets: Tensor,
                 target_scores: Tensor) -> Tensor:
    """#{eligible j ≠ t : score_uj ≥ s_ut} for every (user row, target), [B, T]."""
    masked = scores.masked_fill(train_mask, -torch.inf)
    ordered = torch.sort(masked, dim=1).values
    n_eligible = (~train_mask).sum(1, keepdim=True)
    below = torch.searchsorted(ordered, target_scores.contiguous(), right=False)
    at_least = ordered.shape[1] - below
    at_least = torch.minimum(at_least, n_eligible)
    own = masked.gather(1, targets.expand(scores.shape[0], -1))
    return at_least - (own >= target_scores).long()


def target_hits(model: Recommender, dataset: Dataset, targets: Sequence[int], users: Sequence[int],
                pert: Perturbation | None = None, features: Mapping[str, Tensor] | None = None,
                ks: Sequence[int] = PROMOTION_KS, chunk: int = 1024) -> dict[int, np.ndarray]:
    """{K: hit-rate per target [T]} over ``users``;
    with ``pert``, each target carries only its own δ."""
    device = model.device
    if features is None:
        features = dataset.feature_tensors(device, model.modalities)
    targets_t = torch.as_tensor(np.asarray(targets), dtype=torch.long, device=device)
    users = np.asarray(users)
    trained = dataset.train[users][:, np.asarray(targets)].toarray() > 0  # [U, T]
    counts = np.zeros((len(users), len(targets_t)), dtype=np.int64)
    model.eval()
    with torch.no_grad():
        if pert is None or model.item_local:
            _fill_counts(model, dataset, features, pert, users, targets_t, slice(None), counts,
                         chunk)
        else:
            for col in range(len(targets_t)):
                single = _single_target(pert, col)
                _fill_counts(model, dataset, features, single, users, targets_t[col:col + 1],
                             slice(col, col + 1), counts, chunk)
    eligible = ~trained
    out = {}
    for k in ks:
        hit = (counts < k) & eligible
        out[k] = hit.sum(0) / np.maximum(eligible.sum(0), 1)
    return out


def _single_target(pert: Perturbation, col: int) -> Perturbation:
    return Perturbation(pert.point, {m: d[col:col + 1] for m, d in pert.deltas.items()},
                        {m: r[col:col + 1] for m, r in pert.radius.items()}, pert.budget,
                        pert.items[col:col + 1])


def _fill_counts(model, dataset, features, pert, users, targets_t, cols, counts, chunk) -> None:
    """Rank counts of ``targets_t`` for all users.  Item-local models keep every other item at its
    clean score and give each target its own perturbed score, so one pass serves all targets;
    other models are called with one target's perturbation and rank against the perturbed scores."""
    clean = model.embed(features)
    perturbed = clean if pert is None else model.embed(*pert.inputs(model, features))
    reference = clean if model.item_local else perturbed
    target_items = perturbed.item.index_select(0, targets_t)
    for start in range(0, len(users), chunk):
        rows = users[start:start + chunk]
        rows_t = torch.from_numpy(rows).to(model.device)
        scores = reference.full_scores(rows_t)
        target_scores = perturbed.user.index_select(0, rows_t) @ target_items.T
        sub = dataset.train[rows].tocoo()
        mask = torch.zeros_like(scores, dtype=torch.bool)
        mask[torch.from_numpy(sub.row).to(mask.device),
             torch.from_numpy(sub.col).to(mask.device)] = True
        found = _rank_counts(scores, mask, targets_t.unsqueeze(0), target_scores)
        counts[start:start + len(rows), cols] = found.cpu().numpy()


def promotion_report(before: dict[int, np.ndarray],
                     after: dict[int, np.ndarray]) -> dict[int, dict[str, float]]:
    """Per K: mean HR before/after, RI (%) and the share of targets whose HR rose."""
    out = {}
    for k in before:
        b, a = float(before[k].mean()), float(after[k].mean())
        ri = (a / b - 1.0) * 100.0 if b > 0 else (float("inf") if a > 0 else 0.0)
        out[k] = {"hr_before": b, "hr_after": a, "ri_percent": ri,
                  "improved_share": float((after[k] > before[k]).mean())}
    return out


def promotion_table(targets: Sequence[int],
                    hits: Mapping[str, dict[int, np.ndarray]]) -> pd.DataFrame:
    """Per-target hit rates as a tidy table: one row per (target, population/phase, K)."""
    rows = []
    for name, by_k in hits.items():
        for k, values in by_k.items():
            rows += [{"target": int(t), "series": name, "k": k, "hr": float(v)}
                     for t, v in zip(targets, values, strict=True)]
    return pd.DataFrame(rows)
