"""LATTICE: kNN graphs vs a dense MMRec-style construction, the learned-graph route of a
feature perturbation, the embedding point, the per-epoch graph schedule, training."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from conftest import pairs
from mmrobust.models import Batch
from mmrobust.models.graph import bipartite_adjacency
from mmrobust.models.lattice import LATTICE, LATTICEConfig


def build(ds, seed=0, **cfg):
    torch.manual_seed(seed)
    model = LATTICE(ds, LATTICEConfig(**cfg))
    with torch.no_grad():  # unequal modality weights, so the mix is really tested
        model.modal_weight.copy_(torch.tensor([0.3, -0.2]))
    return model.eval()


# --- dense brute force, as MMRec's build_sim / build_knn_neighbourhood /
# compute_normalized_laplacian
def dense_knn(x, k):
    z = x / x.norm(dim=1, keepdim=True)
    sim = z @ z.T
    val, ind = torch.topk(sim, k, dim=-1)
    return torch.zeros_like(sim).scatter_(-1, ind, val)


def dense_norm(a):
    d = a.sum(-1).pow(-0.5)
    d[torch.isinf(d)] = 0
    return d[:, None] * a * d[None, :]


def dense_item_graph(model, feats):
    w = torch.softmax(model.modal_weight, 0)
    cfg = model.config
    learned = sum(w[k] * dense_knn(model.trs[m](feats[m]), cfg.knn_k)
                  for k, m in enumerate(model.modalities))
    original = sum(w[k] * dense_norm(dense_knn(feats[m], cfg.knn_k))
                   for k, m in enumerate(model.modalities))
    return (1 - cfg.lambda_coeff) * dense_norm(learned) + cfg.lambda_coeff * original


def dense_embeddings(model, ds, feats):
    a = torch.tensor(bipartite_adjacency(ds.train).toarray()) + torch.eye(ds.n_users + ds.n_items)
    p = a / a.sum(1, keepdim=True)  # MMRec LATTICE: D^{-1}(A + I)
    e = torch.cat([model.user_emb, model.item_emb]).detach()
    layers = [e]
    for _ in range(model.config.n_ui_layers):
        layers.append(p @ layers[-1])
    out = sum(layers) / len(layers)
    h = model.item_emb.detach()
    graph = dense_item_graph(model, feats)
    for _ in range(model.config.n_layers):
        h = graph @ h
    return out[: ds.n_users], out[ds.n_users:] + F.normalize(h, dim=1)


def test_knn_graphs_match_dense_brute_force(ds, feats):
    model = build(ds)
    for m in model.modalities:
        torch.testing.assert_close(model.original_graph(m).to_dense(ds.n_items),
                                   dense_norm(dense_knn(feats[m], 10)))
        assert model.original_graph(m).indices.shape == (ds.n_items, 10)
    with torch.no_grad():
        torch.testing.assert_close(model.item_graph(feats).to_dense(ds.n_items),
                                   dense_item_graph(model, feats))


def test_embeddings_match_dense_computation_and_decomposition(ds, feats):
    model = build(ds, n_layers=2)
    with torch.no_grad():
        emb = model.embed(feats)
        user, item = dense_embeddings(model, ds, feats)
    torch.testing.assert_close(emb.user, user, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(emb.item, item, rtol=1e-4, atol=1e-5)
    users, items = pairs(ds)
    assert emb.parts == {}  # features only shape the item graph: ŷ = rest
    scores = emb.modality_scores(users, items)
    assert set(scores) == {"rest"}
    torch.testing.assert_close(scores["rest"], (user[users] * item[items]).sum(-1), rtol=1e-4,
                               atol=1e-5)
    torch.testing.assert_close(model.score(feats, users, items), emb.pair_scores(users, items))


def test_mf_backbone(ds, feats):
    model = build(ds, cf_model="mf")
    with torch.no_grad():
        emb = model.embed(feats)
        h = dense_item_graph(model, feats) @ model.item_emb
    torch.testing.assert_close(emb.user, model.user_emb.detach())
    torch.testing.assert_close(emb.item, model.item_emb.detach() + F.normalize(h, dim=1), rtol=1e-4,
                               atol=1e-5)


def test_loss_gradients_follow_mmrec_epoch_schedule(ds, feats):
    model = build(ds).train()
    batch = Batch(*pairs(ds, 32), torch.randint(0, ds.n_items, (32,)))
    model.on_epoch_start(0)
    loss = model.loss(batch, feats)
    loss.backward()
    assert torch.isfinite(loss) and loss > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    # later batches of the epoch reuse the detached graph: no gradient to projections / modality
    # weights
    model.zero_grad(set_to_none=True)
    model.loss(batch, {m: x + 1.0 for m, x in feats.items()}).backward()
    assert model.modal_weight.grad is None and all(p.grad is None for p in model.trs.parameters())
    assert model.user_emb.grad is not None and model.item_emb.grad is not None
    model.on_epoch_start(1)  # the next epoch rebuilds it with gradients
    model.zero_grad(set_to_none=True)
    model.loss(batch, feats).backward()
    assert model.modal_weight.grad is not None
    assert all(p.grad is not None for p in model.trs.parameters())


def test_loss_equals_bpr_plus_l2_on_embed(ds, feats):
    model = build(ds, reg_weight=0.1).train()
    batch = Batch(*pairs(ds, 32), torch.randint(0, ds.n_items, (32,)))
    model.on_epoch_start(0)
    with torch.no_grad():
        loss = model.loss(batch, feats)  # rebuilds the learned graph
        again = model.loss(batch, feats)  # the epoch's constant graph, as CSR
        emb = model.embed(feats)
    torch.testing.assert_close(again, loss)
    u, i, j = emb.user[batch.users], emb.item[batch.pos], emb.item[batch.neg]
    expected = (-F.logsigmoid((u * i).sum(-1) - (u * j).sum(-1)).mean()
                + 0.1 * (u.pow(2).sum() + i.pow(2).sum() + j.pow(2).sum()) / 64)
    torch.testing.assert_close(loss, expected)


def test_inference_feature_perturbation_reaches_scores_and_gradient(ds, feats):
    model = build(ds)
    users, items = pairs(ds)
    frozen = {m: model.original_graph(m).values.clone() for m in model.modalities}
    torch.manual_seed(1)
    for m in model.modalities:
        x = {k: v.clone().requires_grad_(k == m) for k, v in feats.items()}
        model.score(x, users, items).sum().backward()
        assert x[m].grad.abs().sum() > 0, m  # through the rebuilt learned graph's edge values
        perturbed = {**feats, m: feats[m] + 0.5 * torch.randn_like(feats[m])}
        with torch.no_grad():
            assert not torch.allclose(model.score(perturbed, users, items),
                                      model.score(feats, users, items))
    for m in model.modalities:  # the original graphs stay those of the training features
        assert torch.equal(model.original_graph(m).values, frozen[m])


def test_embedding_point_is_the_projection(ds, feats):
    model = build(ds)
    users, items = pairs(ds)
    torch.manual_seed(2)
    raw = {m: 0.2 * torch.randn_like(x) for m, x in feats.items()}
    perturbed = {m: feats[m] + raw[m] for m in feats}
    with torch.no_grad():
        delta = {m: model.encode_modality(m, perturbed[m]) - model.encode_modality(m, feats[m])
                 for m in feats}
        torch.testing.assert_close(model.score(perturbed, users, items),
                                   model.score(feats, users, items, delta), rtol=1e-4, atol=1e-5)
        zero = {m: torch.zeros(ds.n_items, 64) for m in feats}
        torch.testing.assert_close(model.score(feats, users, items, zero),
                                   model.score(feats, users, items))
    assert model.modality_embedding_dims() == {"image": 64, "text": 64}
    assert model.perturbation_shape("embedding", "text") == (ds.n_items, 64)
    d = {m: torch.zeros(ds.n_items, 64, requires_grad=True) for m in feats}
    model.score(feats, users, items, d).sum().backward()
    assert all(d[m].grad.abs().sum() > 0 for m in d)


def test_unimodal_variant(ds, feats):
    torch.manual_seed(0)
    model = LATTICE(ds, LATTICEConfig(modalities=["text"])).eval()
    assert model.modalities == ("text",) and set(model.trs) == {"text"}
    with torch.no_grad():
        graph = model.item_graph(feats).to_dense(ds.n_items)
    expected = 0.1 * dense_norm(dense_knn(model.trs["text"](feats["text"]), 10)) + 0.9 * dense_norm(
        dense_knn(feats["text"], 10))
    torch.testing.assert_close(graph.detach(), expected.detach())
