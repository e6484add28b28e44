"""GRCN: routing/refinement against a dense reference, decomposition, loss, edge-op gradients,
perturbation points, determinism, training and the shared attack machinery."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conftest import image_perturbation_effect, pairs, params_without_gradient
from mmrobust.data import make_synthetic
from mmrobust.models import Batch
from mmrobust.models.grcn import GRCN, GRCNConfig, normalize_rows

SMALL = {"embedding_size": 12, "content_size": 10}


def dense_reference(model: GRCN, ds, feats, delta=None):
    """GRCN written with dense users×items matrices: per modality routing (users aggregate their
    items' content with a softmax over their items), one attention layer in both directions,
    confidence-weighted refinement with pruning, two sum-aggregation layers of the ID graph."""
    r = torch.tensor(ds.train.toarray(), dtype=torch.float64) > 0
    n_users = ds.n_users

    def masked_softmax(s, dim):
        ex = torch.where(r, s.exp(), torch.zeros_like(s))
        return ex / ex.sum(dim, keepdim=True).clamp_min(1e-300)

    reps, to_user, to_item = {}, [], []
    for m in model.modalities:
        w, b = model.proj_weight[m].double(), model.proj_bias[m].double()
        content = F.leaky_relu(feats[m].double() @ w.T + b)
        if delta is not None and m in delta:
            content = content + delta[m].double()
        f = F.normalize(content, dim=1)
        p = F.normalize(model.preference[m].double(), dim=1)
        for _ in range(model.config.n_routing):
            p = F.normalize(p + masked_softmax(p @ f.T, 1) @ f, dim=1)
        s = p @ f.T
        a_user, a_item = masked_softmax(s, 1), masked_softmax(s, 0)   # [u, i]: α_{i→u}, α_{u→i}
        reps[m] = (p + a_user @ f, f + a_item.T @ p)
        to_user.append(a_user)
        to_item.append(a_item)
    mode = model.config.weight_mode
    if mode == "mean":
        w_user, w_item = sum(to_user) / len(to_user), sum(to_item) / len(to_item)
    else:
        if mode == "confid":
            conf = model.confidence.double()
            # source: item
            to_user = [a * conf[n_users:, k][None, :] for k, a in enumerate(to_user)]
            # source: user
            to_item = [a * conf[:n_users, k][:, None] for k, a in enumerate(to_item)]
        w_user, w_item = torch.stack(to_user).max(0).values, torch.stack(to_item).max(0).values
    if model.config.pruning:
        w_user, w_item = w_user.relu(), w_item.relu()
    w_user, w_item = w_user * r, w_item * r
    x = F.normalize(model.id_embedding.double(), dim=1)
    u0, i0 = x[:n_users], x[n_users:]
    u1, i1 = w_user @ i0, w_item.T @ u0
    u2, i2 = w_user @ i1, w_item.T @ u1
    return (u0 + u1 + u2, i0 + i1 + i2), reps


@pytest.mark.parametrize(("weight_mode", "n_routing"),
                         [("confid", 0), ("confid", 3), ("max", 2), ("mean", 0)])
def test_matches_dense_reference_and_decomposition_is_exact(ds, feats, weight_mode, n_routing):
    torch.manual_seed(0)
    model = GRCN(ds, GRCNConfig(**SMALL, weight_mode=weight_mode, n_routing=n_routing))
    with torch.no_grad():
        for b in model.proj_bias.values():
            b.normal_(0, 0.1)
        if model.confidence is not None:   # a mix of signs so that some edges are pruned
            model.confidence.normal_(0, 1)
        emb = model.embed(feats)
        (id_user, id_item), reps = dense_reference(model, ds, feats)
    assert (model.confidence is not None) == (weight_mode == "confid")
    user = torch.cat([id_user] + [u for u, _ in reps.values()], 1).float()
    item = torch.cat([id_item] + [i for _, i in reps.values()], 1).float()
    torch.testing.assert_close(emb.user, user, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(emb.item, item, rtol=1e-4, atol=1e-5)
    users, items = pairs(ds)
    parts = emb.modality_scores(users, items)
    for m, (u, i) in reps.items():   # s^m: the modality's blocks of the concatenation
        torch.testing.assert_close(parts[m], (u[users] * i[items]).sum(1).float(), rtol=1e-4,
                                   atol=1e-5)
    torch.testing.assert_close(parts["rest"], (id_user[users] * id_item[items]).sum(1).float(),
                               rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(sum(parts.values()), emb.pair_scores(users, items), rtol=1e-5,
                               atol=1e-6)
    pos, neg = model.bpr_scores(feats, Batch(users, items, items.flip(0)))
    torch.testing.assert_close(pos, emb.pair_scores(users, items), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(neg, emb.pair_scores(users, items.flip(0)), rtol=1e-5, atol=1e-5)


def test_default_is_mmrecs_effective_model_and_routing_moves_the_preferences(ds, feats):
    """MMRec routes messages from users to items, so its preference update is zero and its routing
    only normalises: the default n_routing = 0 reproduces it; the paper's routing changes the
    scores."""
    torch.manual_seed(0)
    config = GRCNConfig()
    assert config.n_routing == 0 and config.weight_mode == "confid" and config.pruning
    plain = GRCN(ds, GRCNConfig(**SMALL))
    routed = GRCN(ds, GRCNConfig(**SMALL, n_routing=3))
    routed.load_state_dict(plain.state_dict())
    users, items = pairs(ds)
    with torch.no_grad():
        a = routed.embed(feats).modality_scores(users, items)
        b = plain.embed(feats).modality_scores(users, items)
        _, reps = dense_reference(plain, ds, feats)
    assert not torch.allclose(a["image"], b["image"])
    u, i = reps["image"]
    torch.testing.assert_close(b["image"], (u[users] * i[items]).sum(1).float(), rtol=1e-4,
                               atol=1e-5)


def test_edge_operations_first_and_second_order_gradients():
    ds = make_synthetic(n_users=8, n_items=10, per_user=5, seed=1)
    model = GRCN(ds, GRCNConfig(**SMALL)).double()
    g = model.graph
    torch.manual_seed(0)
    a = torch.randn(ds.n_users, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(ds.n_items, 3, dtype=torch.float64, requires_grad=True)
    base_u = torch.randn(ds.n_users, 3, dtype=torch.float64, requires_grad=True)
    v = torch.rand(g.n_edges, dtype=torch.float64, requires_grad=True)
    dense_v = torch.zeros(ds.n_users, ds.n_items, dtype=torch.float64)
    dense_v = dense_v.index_put((g.edge_user, g.edge_item), v)
    torch.testing.assert_close(g.sddmm(a, b), (a @ b.T)[g.edge_user, g.edge_item])
    torch.testing.assert_close(g.spmm(v, b, base=base_u), base_u + dense_v @ b)
    torch.testing.assert_close(g.spmm(v, a, transpose=True), dense_v.T @ a)
    assert torch.autograd.gradcheck(lambda a, b: g.sddmm(a, b), (a, b))
    assert torch.autograd.gradcheck(lambda v, b, c: g.spmm(v, b, base=c), (v, b, base_u))
    assert torch.autograd.gradcheck(lambda v, a: g.spmm(v, a, transpose=True), (v, a))
    assert torch.autograd.gradgradcheck(lambda v, b: g.spmm(v, b), (v, b))
    assert torch.autograd.gradgradcheck(lambda a, b: g.sddmm(a, b), (a, b))
    x = torch.randn(7, 5, dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(normalize_rows(x), F.normalize(x, dim=1))
    assert torch.autograd.gradcheck(normalize_rows, (x,))
    assert torch.autograd.gradgradcheck(normalize_rows, (x,))


def test_loss_is_mmrec_bpr_plus_reg_and_every_parameter_gets_a_gradient(ds, feats):
    torch.manual_seed(0)
    model = GRCN(ds, GRCNConfig(**SMALL, reg_weight=0.1))
    users, pos = pairs(ds, 32)
    neg = torch.randint(0, ds.n_items, (32,), generator=torch.Generator().manual_seed(1))
    loss = model.loss(Batch(users, pos, neg), feats)
    loss.backward()
    assert torch.isfinite(loss)
    assert not params_without_gradient(model)
    names = {n for n, _ in model.named_parameters()}
    assert {"id_embedding", "confidence", "preference.image", "preference.text"} <= names
    with torch.no_grad():   # MMRec's calculate_loss, written out
        emb = model.embed(feats)
        user_t = users.repeat_interleave(2)
        item_t = torch.stack([pos, neg], 1).reshape(-1)
        score = (emb.user[user_t] * emb.item[item_t]).sum(1).view(-1, 2)
        bpr = -torch.log(torch.sigmoid(score @ torch.tensor([[1.0], [-1.0]]))).mean()
        ids = model.id_embedding
        reg = (ids[user_t] ** 2 + ids[item_t + ds.n_users] ** 2).mean()
        reg = reg + sum((p[user_t] ** 2).mean() for p in model.preference.values())
        torch.testing.assert_close(model.loss(Batch(users, pos, neg), feats), bpr + 0.1 * reg)


def test_feature_perturbation_reaches_the_modality_blocks_and_the_id_graph(ds, feats):
    torch.manual_seed(0)
    model = GRCN(ds, GRCNConfig(**SMALL))
    assert model.feature_route == "direct" and not model.item_local
    clean, moved = image_perturbation_effect(model, ds, feats)
    assert not torch.allclose(clean["image"], moved["image"])
    # the text blocks do not read image
    torch.testing.assert_close(clean["text"], moved["text"])
    assert not torch.allclose(clean["rest"], moved["rest"])       # refined ID-graph weights do


@pytest.mark.parametrize("modality", ["image", "text"])
def test_embedding_point_is_the_projection_output(ds, feats, modality):
    torch.manual_seed(0)
    model = GRCN(ds, GRCNConfig(**SMALL))
    d = 0.3 * torch.randn_like(feats[modality])
    raw = {**feats, modality: feats[modality] + d}
    with torch.no_grad():
        delta = (model.encode_modality(modality, raw[modality])
                 - model.encode_modality(modality, feats[modality]))
        a, b = model.embed(raw), model.embed(feats, {modality: delta})
        (_, _), reps = dense_reference(model, ds, feats, {modality: delta})
    torch.testing.assert_close(a.user, b.user, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(a.item, b.item, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(b.parts[modality][1], reps[modality][1].float(), rtol=1e-4,
                               atol=1e-5)
    assert model.perturbation_shape("embedding", modality) == (ds.n_items, 10)
    # g^m is row-wise
    torch.testing.assert_close(model.encode_modality(modality, feats[modality][3:5]),
                               model.encode_modality(modality, feats[modality])[3:5])
