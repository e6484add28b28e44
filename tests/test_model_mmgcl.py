"""MMGCL: concatenated per-modality LightGCN channels, the two augmentations, the InfoNCE loss
with challenging negatives, the perturbation points, determinism, learning, shared machinery."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from conftest import assert_xavier_bounded, pairs, params_without_gradient
from mmrobust.models.base import Batch
from mmrobust.models.mmgcl import MMGCL, MMGCLConfig


def build(ds, **kw) -> MMGCL:
    torch.manual_seed(0)
    return MMGCL(ds, MMGCLConfig(embedding_size=8, **kw))


def dense_norm_adj(train: sp.csr_matrix) -> torch.Tensor:
    r = train.toarray().astype(np.float64)
    n_u, n_i = r.shape
    a = np.zeros((n_u + n_i, n_u + n_i))
    a[:n_u, n_u:], a[n_u:, :n_u] = r, r.T
    deg = a.sum(1)
    inv = np.zeros_like(deg)
    inv[deg > 0] = deg[deg > 0] ** -0.5
    return torch.tensor(inv[:, None] * a * inv[None, :], dtype=torch.float32)


def dense_channel(adj: torch.Tensor, user: torch.Tensor, item: torch.Tensor, n_layers: int,
                  n_users: int):
    layer = torch.cat([user, item]).detach()
    total = layer
    for _ in range(n_layers):
        layer = adj @ layer
        total = total + layer
    out = total / (n_layers + 1)
    return out[:n_users], out[n_users:]


def test_decomposition_matches_dense_per_modality_channels(ds, feats):
    model = build(ds, n_layers=2)
    emb = model.embed(feats)
    users, items = pairs(ds)
    parts = emb.modality_scores(users, items)
    adj = dense_norm_adj(ds.train)
    for m in model.modalities:
        x = F.normalize(feats[m], dim=1)
        g = x @ model.proj_weight[m].detach().T + model.proj_bias[m].detach()
        eu, ei = dense_channel(adj, model.user_modal[m], g, 2, ds.n_users)
        torch.testing.assert_close(parts[m], (eu[users] * ei[items]).sum(-1), rtol=1e-5, atol=1e-6)
    eu, ei = dense_channel(adj, model.user_id, model.item_id, 2, ds.n_users)
    torch.testing.assert_close(parts["rest"], (eu[users] * ei[items]).sum(-1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(sum(parts.values()), emb.pair_scores(users, items), rtol=1e-5,
                               atol=1e-6)
    assert emb.user.shape == (ds.n_users, 8 * 3) and emb.item.shape == (ds.n_items, 8 * 3)
    torch.testing.assert_close(model.score(feats, users, items), emb.pair_scores(users, items))


def test_loss_is_finite_and_every_parameter_gets_a_gradient(ds, feats):
    model = build(ds)
    batch = Batch(*pairs(ds, 32), torch.randint(0, ds.n_items, (32,)))
    loss = model.loss(batch, feats)
    loss.backward()
    assert torch.isfinite(loss) and loss > 0
    assert not params_without_gradient(model)
    assert_xavier_bounded(model)


def test_ssl_weight_zero_is_bpr_plus_reg(ds, feats):
    batch = Batch(*pairs(ds, 32), torch.randint(0, ds.n_items, (32,)))
    plain, full = build(ds, ssl_weight=0.0), build(ds)
    torch.manual_seed(1)
    with_ssl = full.loss(batch, feats)
    torch.manual_seed(1)
    clean = full.channels(full.item_inputs(feats))
    ssl = full.ssl_loss(batch, clean, full.item_inputs(feats))
    torch.testing.assert_close(with_ssl, plain.loss(batch, feats) + full.config.ssl_weight * ssl)


def test_edge_dropout_graph_is_the_normalised_kept_subgraph(ds):
    model = build(ds, edge_dropout=0.3)
    n_edges = model.edge_user.shape[0]
    assert n_edges == ds.train.nnz
    torch.testing.assert_close(model.dropped_adjacency(torch.ones(n_edges)).to_dense(),
                               model.adj.to_dense())
    torch.manual_seed(5)
    keep = torch.rand(n_edges) >= 0.3
    kept = sp.csr_matrix((np.ones(int(keep.sum())),
                          (model.edge_user[keep].numpy(), model.edge_item[keep].numpy())),
                         shape=ds.train.shape)
    torch.testing.assert_close(model.dropped_adjacency(keep).to_dense(), dense_norm_adj(kept))
    torch.manual_seed(5)
    torch.testing.assert_close(model.dropped_adjacency().to_dense(),
                               dense_norm_adj(kept))  # default draw = same keep


def test_masking_view_replaces_exactly_one_modality_channel(ds, feats):
    model = build(ds, mask_probs={"image": 0.0, "text": 1.0})
    inputs = model.item_inputs(feats)
    clean = model.channels(inputs)
    view, k = model.masking_view(clean, inputs)
    assert k == 1 + model.modalities.index("text")
    for c, (chan, ref) in enumerate(zip(view, clean, strict=True)):
        same = torch.equal(chan[0], ref[0]) and torch.equal(chan[1], ref[1])
        assert same == (c != k)
    with pytest.raises(ValueError, match="mask_probs names modality audio"):
        build(ds, mask_probs={"audio": 1.0})


def test_challenging_negative_differs_from_the_positive_in_one_modality_block(ds):
    model = build(ds)
    torch.manual_seed(0)
    pos = torch.randn(12, 3, 4)
    neg = model.challenging_negatives(pos)
    for i in range(12):
        differs = [c for c in range(3) if not torch.equal(neg[i, c], pos[i, c])]
        assert len(differs) == 1 and differs[0] >= 1  # never the ID block
        c = differs[0]
        donors = [j for j in range(12) if j != i and torch.equal(neg[i, c], pos[j, c])]
        assert donors


def test_info_nce_equals_the_explicit_formula(ds):
    model = build(ds, ssl_temp=0.5)
    torch.manual_seed(0)
    anchor, pos = torch.randn(6, 3, 4), torch.randn(6, 3, 4)
    torch.manual_seed(7)
    loss = model.info_nce(anchor, pos)
    torch.manual_seed(7)
    hard = model.challenging_negatives(pos)
    cos = lambda a, b: F.cosine_similarity(a.flatten(-2), b.flatten(-2), dim=-1)  # noqa: E731
    expected = []
    for i in range(6):
        pos_term = torch.exp(cos(anchor[i], pos[i]) / 0.5)
        denom = (sum(torch.exp(cos(anchor[i], pos[j]) / 0.5) for j in range(6))
                 + torch.exp(cos(anchor[i], hard[i]) / 0.5))
        expected.append(-torch.log(pos_term / denom))
    torch.testing.assert_close(loss, torch.stack(expected).mean())
    plain = build(ds, ssl_temp=0.5, challenging_negatives=False)
    logits = torch.stack([torch.stack([cos(anchor[i], pos[j]) for j in range(6)])
                          for i in range(6)]) / 0.5
    torch.testing.assert_close(plain.info_nce(anchor, pos),
                               F.cross_entropy(logits, torch.arange(6)))


def test_feature_perturbation_reaches_other_items_through_the_graph(ds, feats):
    model = build(ds)
    x = {m: t.clone().requires_grad_(True) for m, t in feats.items()}
    users, items = pairs(ds)
    model.score(x, users, items).sum().backward()
    assert all(x[m].grad.abs().sum() > 0 for m in x)
    # perturbing item k's image changes the scores of items other than k (via users' embeddings)
    k = int(ds.train[0].indices[0])
    moved = dict(feats)
    moved["image"] = feats["image"].clone()
    moved["image"][k] += 3.0
    before, after = model.embed(feats), model.embed(moved)
    u = torch.tensor([0])
    diff = (after.parts["image"][0][0] - before.parts["image"][0][0]).abs().sum()
    assert diff > 0  # user 0's image block moved
    others = torch.tensor([i for i in range(ds.n_items) if i != k])
    assert not torch.allclose(before.full_scores(u)[0, others], after.full_scores(u)[0, others])
    assert torch.equal(before.parts["text"][1], after.parts["text"][1])


def test_embedding_point(ds, feats):
    model = build(ds)
    users, items = pairs(ds)
    d = {m: 0.2 * torch.randn_like(x) for m, x in feats.items()}
    perturbed = {m: feats[m] + d[m] for m in feats}
    emb_delta = {m: (model.encode_modality(m, perturbed[m])
                     - model.encode_modality(m, feats[m])).detach()
                 for m in feats}
    torch.testing.assert_close(model.embed(perturbed).pair_scores(users, items),
                               model.embed(feats, emb_delta).pair_scores(users, items), rtol=1e-5,
                               atol=1e-5)
    # δ is added to g^m(x_m) right before the graph
    delta = {"text": torch.randn(ds.n_items, 8)}
    emb = model.embed(feats, delta)
    g = model.encode_modality("text", feats["text"]).detach() + delta["text"]
    eu, ei = dense_channel(dense_norm_adj(ds.train), model.user_modal["text"], g,
                           model.config.n_layers, ds.n_users)
    torch.testing.assert_close(emb.parts["text"][1], ei, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(emb.parts["image"][1], model.embed(feats).parts["image"][1])
    assert model.perturbation_shape("embedding", "text") == (ds.n_items, 8)
    assert model.perturbation_shape("raw", "text") == (ds.n_items, ds.feature_dims()["text"])
