"""FREEDOM: the frozen kNN item graph vs a dense MMRec-style construction, degree-sensitive
edge pruning, full graph at inference, the (absent) inference route of features and the
optional rebuild, the loss, training."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from conftest import pairs
from mmrobust.models import Batch
from mmrobust.models.freedom import FREEDOM, FREEDOMConfig, mix_weights
from mmrobust.models.graph import bipartite_adjacency


def build(ds, seed=0, **cfg):
    torch.manual_seed(seed)
    return FREEDOM(ds, FREEDOMConfig(**cfg)).eval()


def dense_binary_knn_norm(x, k):
    """MMRec FREEDOM.get_knn_adj_mat: 0/1 kNN edges, D^{-1/2} A D^{-1/2} with row sums."""
    z = x / x.norm(dim=1, keepdim=True)
    ind = torch.topk(z @ z.T, k, dim=-1).indices
    a = torch.zeros(len(x), len(x)).scatter_(-1, ind, 1.0)
    d = a.sum(-1).pow(-0.5)
    return d[:, None] * a * d[None, :]


def dense_sym_norm(a):
    d = a.sum(1)
    inv = torch.where(d > 0, d.clamp_min(1e-12).pow(-0.5), torch.zeros_like(d))
    return inv[:, None] * a * inv[None, :]


def dense_forward(model, adj, graph):
    e = torch.cat([model.user_emb, model.item_emb]).detach()
    layers = [e]
    for _ in range(model.config.n_ui_layers):
        layers.append(adj @ layers[-1])
    out = sum(layers) / len(layers)
    h = model.item_emb.detach()
    for _ in range(model.config.n_mm_layers):
        h = graph @ h
    return out[: model.n_users], out[model.n_users:] + h


def test_item_graph_matches_dense_brute_force(ds, feats):
    model = build(ds)
    expected = (0.1 * dense_binary_knn_norm(feats["image"], 10)
                + 0.9 * dense_binary_knn_norm(feats["text"], 10))
    torch.testing.assert_close(model.item_graph.to_dense(ds.n_items), expected)
    assert mix_weights(("image", "audio"), 0.1) == {"image": 0.1, "audio": 0.9}
    assert mix_weights(("text",), 0.1) == {"text": 1.0}


def test_inference_uses_full_graph_and_decomposition(ds, feats):
    model = build(ds, n_mm_layers=2)
    full = dense_sym_norm(torch.tensor(bipartite_adjacency(ds.train).toarray()))
    graph = (0.1 * dense_binary_knn_norm(feats["image"], 10)
             + 0.9 * dense_binary_knn_norm(feats["text"], 10))
    with torch.no_grad():
        emb = model.embed(feats)
    user, item = dense_forward(model, full, graph)
    torch.testing.assert_close(emb.user, user, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(emb.item, item, rtol=1e-4, atol=1e-5)
    users, items = pairs(ds)
    assert emb.parts == {}
    scores = emb.modality_scores(users, items)
    assert set(scores) == {"rest"}
    torch.testing.assert_close(scores["rest"], (user[users] * item[items]).sum(-1), rtol=1e-4,
                               atol=1e-5)


def test_degree_sensitive_pruning(ds, feats):
    model = build(ds).train()
    n_edges = ds.train.nnz
    torch.manual_seed(5)
    model.on_epoch_start(0)
    adj = model.masked_adj.to_dense()
    # MMRec's arithmetic (63 of 320 here, as 1 − 0.8 < 0.2 in floats)
    n_keep = int(n_edges * (1.0 - 0.8))
    assert int((adj != 0).sum()) == 2 * n_keep
    torch.testing.assert_close(adj, adj.T)
    kept = adj[: ds.n_users, ds.n_users:] != 0
    assert not (kept & torch.tensor(ds.train.toarray() == 0)).any()  # a subset of the interactions
    binary = torch.zeros_like(adj)
    binary[adj != 0] = 1
    # re-normalised on the kept graph
    torch.testing.assert_close(adj, dense_sym_norm(binary), rtol=1e-5, atol=1e-6)
    # training mode propagates on the pruned graph, eval mode on the full one
    with torch.no_grad():
        user, item = dense_forward(model, adj, model.item_graph.to_dense(ds.n_items))
        emb = model.embed(feats)
    torch.testing.assert_close(emb.item, item, rtol=1e-4, atol=1e-5)
    torch.manual_seed(5)
    model.on_epoch_start(1)
    torch.testing.assert_close(model.masked_adj.to_dense(), adj)  # same seed, same graph
    model.on_epoch_start(2)
    assert not torch.equal(model.masked_adj.to_dense(), adj)  # resampled each epoch
    # edges are kept with a probability increasing with 1/√(d_u d_i)
    torch.manual_seed(0)
    counts = torch.zeros(n_edges)
    for _ in range(300):
        kept = model.prune_edges().to_dense()[: ds.n_users, ds.n_users:] != 0
        counts += kept[model.edge_users, model.edge_items].float()
    w = model.edge_weight
    assert counts[w > w.median()].mean() > 1.2 * counts[w < w.median()].mean()


def test_loss_matches_mmrec_formula_and_reaches_every_parameter(ds, feats):
    model = build(ds, reg_weight=0.5).train()
    batch = Batch(*pairs(ds, 32), torch.randint(0, ds.n_items, (32,)))
    model.on_epoch_start(0)
    loss = model.loss(batch, feats)
    loss.backward()
    assert torch.isfinite(loss) and loss > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    with torch.no_grad():
        user, item = dense_forward(model, model.masked_adj.to_dense(),
                                   model.item_graph.to_dense(ds.n_items))
        u, i, j = user[batch.users], item[batch.pos], item[batch.neg]
        expected = -F.logsigmoid((u * i).sum(-1) - (u * j).sum(-1)).mean()
        for m in model.modalities:
            z = feats[m] @ model.trs[m].weight.T + model.trs[m].bias
            margin = (u * z[batch.pos]).sum(-1) - (u * z[batch.neg]).sum(-1)
            expected = expected + 0.5 * -F.logsigmoid(margin).mean()
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-5, atol=1e-6)


def test_features_do_not_reach_the_score_by_default(ds, feats):
    model = build(ds)
    users, items = pairs(ds)
    torch.manual_seed(1)
    perturbed = {m: x + torch.randn_like(x) for m, x in feats.items()}
    x = {m: v.clone().requires_grad_(True) for m, v in feats.items()}
    model.score(x, users, items).sum().backward()
    assert all(x[m].grad is None for m in x)
    with torch.no_grad():
        assert torch.equal(model.score(perturbed, users, items), model.score(feats, users, items))
        # the projections feed only the loss
        delta = {m: torch.randn(ds.n_items, 64) for m in feats}
        assert torch.equal(model.score(feats, users, items, delta),
                           model.score(feats, users, items))


def test_rebuild_at_inference_lets_features_reach_the_score(ds, feats):
    model = build(ds, rebuild_graph_at_inference=True)
    frozen = build(ds)
    users, items = pairs(ds)
    with torch.no_grad():  # clean features rebuild the same graph
        torch.testing.assert_close(model.score(feats, users, items),
                                   frozen.score(feats, users, items))
    torch.manual_seed(1)
    for m in model.modalities:
        perturbed = {**feats, m: feats[m] + torch.randn_like(feats[m])}
        with torch.no_grad():
            assert not torch.allclose(model.score(perturbed, users, items),
                                      model.score(feats, users, items))
        x = {k: v.clone().requires_grad_(k == m) for k, v in feats.items()}
        model.score(x, users, items).sum().backward()
        assert x[m].grad.abs().sum() > 0  # straight-through gradient of the 0/1 edge values
    model.train()  # training keeps the frozen graph
    with torch.no_grad():
        torch.testing.assert_close(model.embed(perturbed).item, model.embed(feats).item)


def test_embedding_point_is_the_projection_of_the_loss(ds, feats):
    model = build(ds)
    batch = Batch(*pairs(ds, 32), torch.randint(0, ds.n_items, (32,)))
    torch.manual_seed(2)
    perturbed = {m: x + 0.3 * torch.randn_like(x) for m, x in feats.items()}
    user = torch.randn(32, 64)
    with torch.no_grad():
        delta = {m: model.encode_modality(m, perturbed[m]) - model.encode_modality(m, feats[m])
                 for m in feats}
        torch.testing.assert_close(model.feature_bpr(user, batch, feats, delta),
                                   model.feature_bpr(user, batch, perturbed))
    assert model.modality_embedding_dims() == {"image": 64, "text": 64}
