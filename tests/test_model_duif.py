"""DUIF: item vector = E concat_m(x_m), decomposition
per block of E, perturbation points, training."""

from __future__ import annotations

import torch

from conftest import pairs
from mmrobust.models import Batch
from mmrobust.models.duif import DUIF, DUIFConfig


def test_decomposition_is_per_block_of_E_and_exact(ds, feats):
    torch.manual_seed(0)
    model = DUIF(ds)
    users, items = pairs(ds)
    emb = model.embed(feats)
    parts = emb.modality_scores(users, items)
    concat = torch.cat([feats[m] for m in model.modalities], 1)
    p = model.user_emb[users]
    torch.testing.assert_close(emb.pair_scores(users, items),
                               (p * (concat[items] @ model.W.T)).sum(1))
    start = 0
    for m in model.modalities:
        dm = ds.feature_dims()[m]
        by_hand = (p * (feats[m][items] @ model.W[:, start:start + dm].T)).sum(1)
        torch.testing.assert_close(parts[m], by_hand)
        start += dm
    assert parts["rest"].abs().max() < 1e-5   # no ID part, no cross terms
    torch.testing.assert_close(sum(parts.values()), emb.pair_scores(users, items))
    assert not any("item" in name for name, _ in model.named_parameters())   # no item ID embedding


def test_loss_and_gradients(ds, feats):
    torch.manual_seed(0)
    model = DUIF(ds, DUIFConfig(reg_weight=0.1))
    users, pos = pairs(ds, 32)
    neg = torch.randint(0, ds.n_items, (32,), generator=torch.Generator().manual_seed(1))
    loss = model.loss(Batch(users, pos, neg), feats)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    with torch.no_grad():
        emb = model.embed(feats)
        u, i, j = emb.user[users], emb.item[pos], emb.item[neg]
        expected = -torch.nn.functional.logsigmoid((u * i).sum(1) - (u * j).sum(1)).mean() \
            + 0.1 * (u.pow(2).sum() + i.pow(2).sum() + j.pow(2).sum()) / (2 * 32)
        torch.testing.assert_close(model.loss(Batch(users, pos, neg), feats), expected)
        torch.testing.assert_close(model.score(feats, users, pos), emb.pair_scores(users, pos))


def test_feature_perturbation_reaches_only_that_items_score(ds, feats):
    model = DUIF(ds)
    assert model.feature_route == "direct" and model.item_local
    x = {m: t.clone().requires_grad_(True) for m, t in feats.items()}
    users, items = pairs(ds)
    model.score(x, users, items).sum().backward()
    assert all(x[m].grad.abs().sum() > 0 for m in x)
    perturbed = {**feats, "text": feats["text"].clone()}
    perturbed["text"][7] += 1.0
    with torch.no_grad():
        moved = (model.embed(feats).item - model.embed(perturbed).item).abs().sum(1) > 0
    assert moved.nonzero().flatten().tolist() == [7]


def test_embedding_point_equals_raw_point_through_linear_encoder(ds, feats):
    model = DUIF(ds)
    d = {m: 0.1 * torch.randn_like(x) for m, x in feats.items()}
    raw = {m: feats[m] + d[m] for m in feats}
    delta = {m: model.encode_modality(m, d[m]) for m in feats}   # E_m is linear
    users, items = pairs(ds)
    with torch.no_grad():
        torch.testing.assert_close(model.embed(raw).pair_scores(users, items),
                                   model.embed(feats, delta).pair_scores(users, items), rtol=1e-5,
                                   atol=1e-5)
        torch.testing.assert_close(model.score(feats, users, items, delta),
                                   model.embed(feats, delta).pair_scores(users, items))
    shape = (ds.n_items, model.config.embedding_size)
    assert model.perturbation_shape("embedding", "image") == shape
