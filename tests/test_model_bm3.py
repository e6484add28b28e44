"""BM3: ID-only score (features shape only the training loss), the bootstrapped loss term by
term, no use of negatives, the perturbation points, determinism, learning, shared machinery."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import assert_xavier_bounded, pairs, params_without_gradient
from mmrobust.data import make_synthetic
from mmrobust.models.base import Batch
from mmrobust.models.bm3 import BM3, BM3Config
from mmrobust.training import TrainConfig, fit
from mmrobust.utils import seed_everything


def build(ds, **kw) -> BM3:
    torch.manual_seed(0)
    return BM3(ds, BM3Config(embedding_size=8, **kw))


def batch_of(ds, n=32, seed=0):
    users, pos = pairs(ds, n, seed)
    return Batch(users, pos,
                 torch.randint(0, ds.n_items, (n,),
                               generator=torch.Generator().manual_seed(seed + 1)))


def dense_online(model: BM3, ds):
    r = ds.train.toarray().astype(np.float64)
    n_u, n_i = r.shape
    a = np.zeros((n_u + n_i, n_u + n_i))
    a[:n_u, n_u:], a[n_u:, :n_u] = r, r.T
    deg = a.sum(1)
    inv = np.zeros_like(deg)
    inv[deg > 0] = deg[deg > 0] ** -0.5
    adj = torch.tensor(inv[:, None] * a * inv[None, :], dtype=torch.float32)
    layer = torch.cat([model.user_emb, model.item_emb]).detach()
    total = layer
    for _ in range(model.config.n_layers):
        layer = adj @ layer
        total = total + layer
    out = total / (model.config.n_layers + 1)
    return out[:n_u], out[n_u:] + model.item_emb.detach()


def predictor(model: BM3, z):
    return z @ model.predictor_weight.detach().T + model.predictor_bias.detach()


def test_score_is_the_predicted_id_representations_and_has_no_parts(ds, feats):
    model = build(ds, n_layers=2)
    torch.nn.init.normal_(model.predictor_bias)
    users, items = pairs(ds)
    emb = model.embed(feats)
    h_u, h_i = dense_online(model, ds)
    torch.testing.assert_close(emb.user, predictor(model, h_u), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(emb.item, predictor(model, h_i), rtol=1e-5, atol=1e-6)
    assert emb.parts == {}
    parts = emb.modality_scores(users, items)
    assert set(parts) == {"rest"}
    torch.testing.assert_close(parts["rest"], emb.pair_scores(users, items))
    assert model.feature_route == "training-only" and "no effect" in model.route_note


def test_loss_matches_the_bootstrap_formula_term_by_term(ds, feats):
    model = build(ds, n_layers=1, dropout=0.5, cl_weight=2.0, reg_weight=0.1)
    torch.nn.init.normal_(model.predictor_bias)
    batch = batch_of(ds)
    torch.manual_seed(3)
    loss = model.loss(batch, feats)
    torch.manual_seed(3)  # same dropout draws, same order: t(h_u), t(h_i), then t(f^m) per modality
    h_u_all, h_i_all = dense_online(model, ds)
    h_u, h_i = h_u_all[batch.users], h_i_all[batch.pos]
    t_u, t_i = F.dropout(h_u, 0.5), F.dropout(h_i, 0.5)

    def c(a, b):
        return 1 - F.cosine_similarity(a, b, dim=-1).mean()

    expected = c(predictor(model, h_u), t_i) + c(predictor(model, h_i), t_u)
    expected = expected + 0.1 * (h_u_all.norm() + h_i_all.norm()) / ds.n_items
    for m in model.modalities:
        f = feats[m][batch.pos] @ model.proj_weight[m].detach().T + model.proj_bias[m].detach()
        t_f = F.dropout(f, 0.5)
        expected = expected + 2.0 * (c(predictor(model, f), t_i) + c(predictor(model, f), t_f))
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)


def test_loss_is_finite_every_parameter_gets_a_gradient_and_negatives_are_unused(ds, feats):
    model = build(ds)
    batch = batch_of(ds)
    torch.manual_seed(1)
    loss = model.loss(batch, feats)
    loss.backward()
    assert torch.isfinite(loss) and loss > 0
    assert not params_without_gradient(model)
    assert_xavier_bounded(model)
    other = Batch(batch.users, batch.pos, torch.randint(0, ds.n_items, (len(batch),)))
    torch.manual_seed(1)
    assert torch.equal(model.loss(other, feats).detach(), loss.detach())


def test_features_do_not_reach_the_score_but_do_reach_the_loss(ds, feats):
    model = build(ds)
    users = torch.arange(ds.n_users)
    noisy = {m: x + 5.0 * torch.randn_like(x) for m, x in feats.items()}
    assert torch.equal(model.embed(feats).full_scores(users), model.embed(noisy).full_scores(users))
    x = {m: t.clone().requires_grad_(True) for m, t in feats.items()}
    grads = torch.autograd.grad(model.embed(x).full_scores(users).sum(), list(x.values()),
                                allow_unused=True)
    assert all(g is None for g in grads)  # the score's graph holds no feature
    batch = batch_of(ds)
    torch.manual_seed(2)
    clean_loss = model.loss(batch, feats)
    torch.manual_seed(2)
    noisy_loss = model.loss(batch, noisy)
    assert not torch.allclose(clean_loss, noisy_loss)
    model.loss(batch, x).backward()
    assert all(x[m].grad.abs().sum() > 0 for m in x)


def test_embedding_point_has_no_effect_and_encoder_is_the_projection(ds, feats):
    model = build(ds)
    users, items = pairs(ds)
    delta = {m: torch.randn(ds.n_items, 8) for m in model.modalities}
    torch.testing.assert_close(model.embed(feats, delta).pair_scores(users, items),
                               model.embed(feats).pair_scores(users, items))
    x = feats["image"][:5]
    torch.testing.assert_close(model.encode_modality("image", x),
                               x @ model.proj_weight["image"].T + model.proj_bias["image"])
    assert model.modality_embedding_dims() == {"image": 8, "text": 8}
    assert model.perturbation_shape("embedding", "text") == (ds.n_items, 8)
    with pytest.raises(ValueError, match="embedding perturbation for 'text' has shape"):
        model.embed(feats, {"text": torch.zeros(ds.n_items, 3)})


def _fit(ds, epochs=3, lr=0.01):
    seed_everything(0)
    model = BM3(ds, BM3Config(embedding_size=16))
    result = fit(model, ds,
                 TrainConfig(epochs=epochs, lr=lr, batch_size=256, progress=False, device="cpu"))
    return model, result


def test_same_seed_same_losses():
    ds = make_synthetic(n_users=60, n_items=80, per_user=10, seed=1)
    _, a = _fit(ds)
    _, b = _fit(ds)
    assert [h["loss"] for h in a.history] == [h["loss"] for h in b.history]


def test_learns_and_shared_machinery_runs():
    from mmrobust.attacks import FGSM
    from mmrobust.evaluation import evaluate
    from mmrobust.evaluation.modality import modality_analysis
    from mmrobust.evaluation.robustness import evaluate_perturbed

    ds = make_synthetic(n_users=200, n_items=150, per_user=15, seed=0)
    seed_everything(0)
    base = evaluate(BM3(ds, BM3Config(embedding_size=16)), ds, "test")["recall@20"]
    model, result = _fit(ds, epochs=15, lr=0.02)
    assert result.test["recall@20"] > base + 0.1, (base, result.test["recall@20"])
    pert = FGSM(0.05).perturb(model, ds)
    # zero gradient: no feature route
    assert all(float(d.abs().max()) == 0.0 for d in pert.deltas.values())
    attacked = evaluate_perturbed(model, ds, pert)
    assert attacked == evaluate(model, ds, "test")
    analysis = modality_analysis(model, ds, pert)
    assert "fused, image attacked alone" in set(analysis.margins.part)
    assert np.allclose(analysis.margins["drop"], 0.0)
