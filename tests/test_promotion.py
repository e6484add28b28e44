"""Promotion attacks: target and user selection, hit rates against brute force, thresholds,
the alignment term's second-order path, and that promotion raises hit rates."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import train_synthetic
from mmrobust.attacks import (
    FGSM,
    PGD,
    Budget,
    PromotionAttack,
    PromotionConfig,
    select_targets,
    split_users,
)
from mmrobust.attacks.perturbation import Perturbation
from mmrobust.attacks.promotion import PromotionObjective, per_target_threshold
from mmrobust.evaluation.promotion import promotion_report, target_hits
from mmrobust.models import VBPR


@pytest.fixture(scope="module")
def setup():
    ds, model = train_synthetic(n_users=150, n_items=200, per_user=15, seed=4)
    pop = ds.item_popularity()
    n = int(np.bincount(pop)[1:].argmax()) + 1  # the most common non-zero popularity
    targets, _ = select_targets(ds, n_interactions=n, count=12)
    attack_users, held_out = split_users(ds, 0.4, seed=0)
    return ds, model, ds.feature_tensors(), targets, attack_users, held_out


def brute_force_hits(model, ds, features, targets, users, k, pert=None):
    """HR@k by ranking every item for every user, applying one target's δ at a time."""
    out = []
    for col, t in enumerate(targets):
        if pert is None:
            emb = model.embed(features)
        else:
            single = Perturbation(pert.point, {m: d[col:col + 1] for m, d in pert.deltas.items()},
                                  {m: r[col:col + 1] for m, r in pert.radius.items()}, pert.budget,
                                  pert.items[col:col + 1])
            emb = model.embed(*single.inputs(model, features))
        hits, eligible = 0, 0
        for u in users:
            if ds.train[u, t]:
                continue
            eligible += 1
            scores = emb.full_scores(torch.tensor([u]))[0].clone()
            scores[torch.from_numpy(ds.train[u].indices.astype(np.int64))] = -torch.inf
            others = torch.cat([scores[:t], scores[t + 1:]])
            hits += int((others >= scores[t]).sum() < k)
        out.append(hits / max(eligible, 1))
    return np.array(out)


def test_target_and_user_selection(setup):
    ds, *_ = setup
    targets, note = select_targets(ds, n_interactions=3, count=5, seed=1)
    assert (ds.item_popularity()[targets] == 3).all() and len(targets) == 5 and "exactly 3" in note
    again, _ = select_targets(ds, n_interactions=3, count=5, seed=1)
    assert np.array_equal(targets, again)
    few, note = select_targets(ds, n_interactions=3, count=10**6)
    assert f"only {len(few)} exist" in note
    with pytest.raises(ValueError, match="no items with exactly 9999 training interactions"):
        select_targets(ds, n_interactions=9999)
    popular, _ = select_targets(ds, count=3, selection="popular")
    assert set(popular) == set(np.argsort(-ds.item_popularity(), kind="stable")[:3])
    a, h = split_users(ds, 0.4, seed=0)
    assert not set(a) & set(h) and len(a) + len(h) == ds.n_users
    assert 0.3 < len(a) / ds.n_users < 0.5


@pytest.mark.parametrize("perturbed", [False, True])
@pytest.mark.parametrize("item_local", [True, False])
def test_hit_rates_match_brute_force(setup, perturbed, item_local, monkeypatch):
    ds, model, feats, targets, attack_users, _ = setup
    pert = (PromotionAttack(FGSM(0.5)).perturb(model, ds, targets, attack_users, feats)
            if perturbed else None)
    monkeypatch.setattr(VBPR, "item_local", item_local)
    fast = target_hits(model, ds, targets, attack_users, pert, feats, ks=(5, 20))
    for k in (5, 20):
        expected = brute_force_hits(model, ds, feats, targets, attack_users, k, pert)
        np.testing.assert_allclose(fast[k], expected)


def test_per_target_threshold_by_hand():
    others = torch.tensor([[9.0, 7.0, 5.0]])           # top-3 scores among non-target items
    clean = torch.tensor([[8.0, 6.0]])                 # clean scores of the two targets
    excluded = torch.tensor([[False, False]])
    tau = per_target_threshold(others, clean, excluded, k=3)
    # target 0 competes with {9, 7, 5} and target 1's 6 -> 3rd highest 6; target 1 with {9, 7, 5, 8}
    # -> 7
    assert tau.tolist() == [[6.0, 7.0]]
    tau = per_target_threshold(others, clean, torch.tensor([[False, True]]), k=3)
    assert tau.tolist() == [[5.0, 7.0]]  # the user trained on target 1: it cannot compete


@pytest.mark.parametrize("make", [lambda b: FGSM(b), lambda b: PGD(b, step_scale=1.25)])
def test_promotion_raises_hit_rates(setup, make):
    ds, model, feats, targets, attack_users, held_out = setup
    before = target_hits(model, ds, targets, attack_users, None, feats, ks=(20,))
    pert = PromotionAttack(make(Budget(eps=0.3))).perturb(model, ds, targets, attack_users, feats)
    after = target_hits(model, ds, targets, attack_users, pert, feats, ks=(20,))
    report = promotion_report(before, after)[20]
    assert report["hr_after"] > report["hr_before"] and report["ri_percent"] > 0
    assert set(pert.deltas) == {"image", "text"}
    assert torch.equal(pert.items, torch.as_tensor(targets))


def test_batched_targets_equal_one_at_a_time(setup):
    ds, model, feats, targets, attack_users, _ = setup
    batched = PromotionAttack(PGD(0.2, steps=3), PromotionConfig(target_batch=5)).perturb(
        model, ds, targets, attack_users, feats)
    single = PromotionAttack(PGD(0.2, steps=3), PromotionConfig(target_batch=1)).perturb(
        model, ds, targets, attack_users, feats)
    for m in batched.deltas:
        torch.testing.assert_close(batched.deltas[m], single.deltas[m], rtol=1e-4, atol=1e-6)


def test_alignment_term_acts_through_second_order_gradients(setup):
    ds, model, feats, targets, attack_users, _ = setup
    t = torch.as_tensor(targets[:4])
    users = torch.as_tensor(attack_users)
    config = PromotionConfig(beta=1.0)
    objective = PromotionObjective(model, ds, feats, t, users, config, 1.0, "raw",
                                   fixed_threshold=True)
    pert = Perturbation.zeros(model, feats, Budget(eps=0.2), "raw", None, t)
    for m in pert.deltas:
        pert.deltas[m] = 0.01 * torch.randn_like(pert.deltas[m])
    pert.requires_grad_()
    value = objective.utility(pert)
    align = objective.alignment(value, pert)
    grads = torch.autograd.grad(align, list(pert.deltas.values()))
    # the cosine moves with δ: second-order path active
    assert all(g.abs().sum() > 0 for g in grads)
    plain = PromotionAttack(FGSM(0.2)).perturb(model, ds, targets, attack_users, feats)
    aligned = PromotionAttack(FGSM(0.2), config).perturb(model, ds, targets, attack_users, feats)
    assert any(not torch.allclose(plain.deltas[m], aligned.deltas[m]) for m in plain.deltas)


def test_alignment_needs_two_modalities(setup):
    ds, model, feats, targets, attack_users, _ = setup
    attack = PromotionAttack(FGSM(0.2, modalities=["image"]), PromotionConfig(beta=1.0))
    with pytest.raises(ValueError, match="at least two perturbed modalities"):
        attack.perturb(model, ds, targets, attack_users, feats)
