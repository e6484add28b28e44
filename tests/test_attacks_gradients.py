"""FGSM follows the normalised autograd gradient; PGD ascends monotonically on a linear model."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conftest import train_synthetic
from mmrobust.attacks import (
    FGSM,
    PGD,
    BPRObjective,
    Budget,
    Perturbation,
    RandomNoise,
    split_triples,
)


@pytest.fixture(scope="module")
def trained():
    ds, model = train_synthetic(epochs=10, embedding_size=8, batch_size=128, n_users=80,
                                n_items=100, per_user=12, seed=2)
    return ds, model, ds.feature_tensors()


def autograd_feature_gradient(model, feats, triples):
    x = {m: t.clone().requires_grad_(True) for m, t in feats.items()}
    emb = model.embed(x)
    margin = (emb.pair_scores(triples.users, triples.pos)
              - emb.pair_scores(triples.users, triples.neg))
    loss = -F.logsigmoid(margin).mean()
    loss.backward()
    return {m: t.grad for m, t in x.items()}


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_fgsm_direction_is_the_normalised_gradient(trained, norm):
    ds, model, feats = trained
    triples = split_triples(ds, "test", seed=3)
    grads = autograd_feature_gradient(model, feats, triples)
    pert = FGSM(Budget(eps=0.07, norm=norm)).perturb(model, ds, feats,
                                                     objective=BPRObjective(model, feats, triples))
    for m, g in grads.items():
        radius = 0.07 * feats[m].norm(dim=1, keepdim=True)
        expected = g / g.norm(dim=1, keepdim=True).clamp_min(1e-30) if norm == "l2" else g.sign()
        torch.testing.assert_close(pert.deltas[m], radius * expected, rtol=1e-4, atol=1e-7)


def test_pgd_objective_never_decreases_on_a_linear_model(trained):
    """VBPR's score is linear in the features and BPR is convex in the score, so projected
    steepest-ascent steps never lower the objective."""
    ds, model, feats = trained
    objective = BPRObjective(model, feats, split_triples(ds, "test", seed=0))
    for norm in ("l2", "linf"):
        pgd = PGD(Budget(eps=0.2, norm=norm), steps=12)
        pert = pgd.perturb(model, ds, feats, objective=objective)
        history = pert.info["objective_history"][0]
        assert all(b >= a - 1e-6 for a, b in zip(history, history[1:], strict=False)), history
        assert history[-1] > history[0]


def test_pgd_restarts_keep_the_best(trained):
    ds, model, feats = trained
    objective = BPRObjective(model, feats, split_triples(ds, "test", seed=0))
    pgd = PGD(Budget(eps=0.1), steps=3, restarts=3, seed=1)
    pert = pgd.perturb(model, ds, feats, objective=objective)
    finals = [h[-1] for h in pert.info["objective_history"]]
    assert pert.info["objective_final"] == pytest.approx(max(finals))
    assert len(finals) == 3


def test_attack_strength_order_on_synthetic_data(trained):
    ds, model, feats = trained
    objective = BPRObjective(model, feats, split_triples(ds, "test", seed=0))
    values = {}
    for attack in (RandomNoise(0.2), FGSM(0.2), PGD(0.2)):
        pert = attack.perturb(model, ds, feats, objective=objective)
        with torch.no_grad():
            values[attack.name] = float(objective(pert))
    with torch.no_grad():
        clean = float(objective(Perturbation.zeros(model, feats, Budget(eps=0.2))))
    assert values["pgd"] >= values["fgsm"] > values["random"]
    assert values["fgsm"] > clean


def test_embedding_point_is_the_encoder_image_of_the_raw_point(trained):
    ds, model, feats = trained
    raw = FGSM(0.05).perturb(model, ds, feats)
    as_embedding = Perturbation("embedding",
                                {m: model.encode_modality(m, d) for m, d in raw.deltas.items()},
                                raw.radius, raw.budget)
    users = torch.arange(ds.n_users).repeat(2)
    items = torch.randint(0, ds.n_items, (2 * ds.n_users,))
    a = model.embed(*raw.inputs(model, feats)).pair_scores(users, items)
    b = model.embed(*as_embedding.inputs(model, feats)).pair_scores(users, items)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_attacks_are_deterministic(trained):
    ds, model, feats = trained
    for make in (lambda: FGSM(0.1), lambda: PGD(0.1, random_start=True, seed=4),
                 lambda: RandomNoise(0.1, seed=4)):
        a, b = make().perturb(model, ds, feats), make().perturb(model, ds, feats)
        for m in a.deltas:
            assert torch.equal(a.deltas[m], b.deltas[m])
