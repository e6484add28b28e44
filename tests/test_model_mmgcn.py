"""MMGCN: propagation against a dense reference,
decomposition, loss, perturbation points, training."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import pairs, params_without_gradient
from mmrobust.models import Batch
from mmrobust.models.graph import normalize_rows
from mmrobust.models.mmgcn import MMGCN, MMGCNConfig

# image (32-d) gets an MLP to 24-d, text (16-d) enters raw
SMALL = {"embedding_size": 16, "dim_latent": 24, "latent_above": 20}


def dense_reference(model: MMGCN, ds, modality: str, item_input: torch.Tensor) -> torch.Tensor:
    """MMRec's GCN.forward written densely: x = normalize([P; item_input]); per layer
    h = lrelu(mean_aggr(x W_c)), x̂ = lrelu(W_l x + b) + id, x = lrelu(W_g [h; x̂] + b) (or the
    add branch)."""
    gcn = model.gcns[modality]
    a = ds.train.toarray().astype(np.float32)
    adj = np.block([[np.zeros((ds.n_users, ds.n_users)), a],
                    [a.T, np.zeros((ds.n_items, ds.n_items))]])
    deg = adj.sum(1, keepdims=True)
    mean = torch.tensor(np.divide(adj, deg, out=np.zeros_like(adj), where=deg > 0),
                        dtype=torch.float32)
    slope = model.config.negative_slope
    x = F.normalize(torch.cat([gcn.preference, item_input]))
    for conv, linear, combine in zip(gcn.conv, gcn.linear, gcn.combine, strict=True):
        h = F.leaky_relu(mean @ (x @ conv), slope)
        x_hat = F.leaky_relu(x @ linear.weight.T + linear.bias, slope) + model.id_embedding
        if model.config.combine == "concat":
            x = F.leaky_relu(torch.cat([h, x_hat], 1) @ combine.weight.T + combine.bias, slope)
        else:
            x = F.leaky_relu(h @ combine.weight.T + combine.bias + x_hat, slope)
    return x


def randomise_biases(model):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.1)


@pytest.mark.parametrize("combine", ["concat", "add"])
def test_propagation_matches_dense_reference_and_decomposition_is_exact(ds, feats, combine):
    torch.manual_seed(0)
    model = MMGCN(ds, MMGCNConfig(**SMALL, combine=combine))
    randomise_biases(model)
    assert model.gcns["image"].mlp is not None and model.gcns["text"].mlp is None
    assert model.modality_embedding_dims() == {"image": 24, "text": 16}
    users, items = pairs(ds)
    emb = model.embed(feats)
    outs = {}
    for m in model.modalities:
        ref = dense_reference(model, ds, m,
                              model.gcns[m].encode(feats[m]) if m == "image" else feats[m]).detach()
        outs[m] = ref[: ds.n_users], ref[ds.n_users:]
    n_mod = len(model.modalities)
    user = sum(u for u, _ in outs.values()) / n_mod
    item = sum(i for _, i in outs.values()) / n_mod
    torch.testing.assert_close(emb.user, user, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(emb.item, item, rtol=1e-4, atol=1e-5)
    parts = emb.modality_scores(users, items)
    for m, (u, i) in outs.items():   # s^m = ⟨x^L_{m,u}, x^L_{m,i}⟩ / M²
        torch.testing.assert_close(parts[m], (u[users] * i[items]).sum(1) / n_mod ** 2, rtol=1e-4,
                                   atol=1e-5)
    cross = sum((outs[a][0][users] * outs[b][1][items]).sum(1)
                for a in outs for b in outs if a != b) / n_mod ** 2
    torch.testing.assert_close(parts["rest"], cross, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(sum(parts.values()), emb.pair_scores(users, items), rtol=1e-5,
                               atol=1e-6)


def test_loss_is_mmrec_bpr_plus_reg_and_every_parameter_gets_a_gradient(ds, feats):
    torch.manual_seed(0)
    model = MMGCN(ds, MMGCNConfig(**SMALL, reg_weight=0.1))
    users, pos = pairs(ds, 32)
    neg = torch.randint(0, ds.n_items, (32,), generator=torch.Generator().manual_seed(1))
    loss = model.loss(Batch(users, pos, neg), feats)
    loss.backward()
    assert torch.isfinite(loss)
    assert not params_without_gradient(model)
    # every trainable tensor is registered (MMRec forgot id_embedding and the preferences)
    names = {n for n, _ in model.named_parameters()}
    assert {"id_embedding", "gcns.image.preference", "gcns.text.preference"} <= names
    with torch.no_grad():
        emb = model.embed(feats)
        score = torch.stack([(emb.user[users] * emb.item[pos]).sum(1),
                             (emb.user[users] * emb.item[neg]).sum(1)], 1)
        bpr = -torch.log(torch.sigmoid(score @ torch.tensor([[1.0], [-1.0]]))).mean()
        ids = model.id_embedding
        user_t = users.repeat_interleave(2)
        item_t = torch.stack([pos, neg], 1).reshape(-1) + ds.n_users
        reg = (ids[user_t] ** 2 + ids[item_t] ** 2).mean()
        reg = reg + sum((g.preference ** 2).mean() for g in model.gcns.values())
        torch.testing.assert_close(model.loss(Batch(users, pos, neg), feats), bpr + 0.1 * reg)


def test_feature_perturbation_reaches_every_user_through_the_graph(ds, feats):
    torch.manual_seed(0)
    model = MMGCN(ds, MMGCNConfig(**SMALL))
    assert model.feature_route == "direct" and not model.item_local
    x = {m: t.clone().requires_grad_(True) for m, t in feats.items()}
    users, items = pairs(ds)
    model.score(x, users, items).sum().backward()
    assert all(x[m].grad.abs().sum() > 0 for m in x)
    # perturbing one item's features changes other items' and its users' representations
    item = 5
    perturbed = {**feats, "image": feats["image"].clone()}
    perturbed["image"][item] += 1.0
    with torch.no_grad():
        clean, moved = model.embed(feats), model.embed(perturbed)
    changed_items = (clean.item - moved.item).abs().sum(1) > 1e-7
    assert changed_items[item] and changed_items.sum() > 1
    neighbours = torch.as_tensor(ds.train[:, item].nonzero()[0])
    assert ((clean.user[neighbours] - moved.user[neighbours]).abs().sum(1) > 1e-7).all()


@pytest.mark.parametrize("modality", ["image", "text"])
def test_embedding_point_equals_raw_perturbation_through_the_encoder(ds, feats, modality):
    """g^m is affine (MLP) or the identity, so δ = g(x + d)
    − g(x) at the embedding point equals d at the raw point."""
    torch.manual_seed(0)
    model = MMGCN(ds, MMGCNConfig(**SMALL))
    d = 0.3 * torch.randn_like(feats[modality])
    raw = {**feats, modality: feats[modality] + d}
    with torch.no_grad():
        delta = (model.encode_modality(modality, raw[modality])
                 - model.encode_modality(modality, feats[modality]))
        a, b = model.embed(raw), model.embed(feats, {modality: delta})
    torch.testing.assert_close(a.user, b.user, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(a.item, b.item, rtol=1e-5, atol=1e-6)
    if modality == "text":   # identity encoder
        torch.testing.assert_close(delta, d)
    shape = (ds.n_items, model.modality_embedding_dims()[modality])
    assert model.perturbation_shape("embedding", modality) == shape


def test_row_normalisation_first_and_second_order_gradients():
    """The fused normalisation equals F.normalize in value, gradient and second-order gradient
    (UAT-MC's alignment differentiates through the attack gradient)."""
    torch.manual_seed(0)
    x = torch.randn(7, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(7, 5, dtype=torch.float64)
    torch.testing.assert_close(normalize_rows(x), F.normalize(x, dim=1))
    g1, = torch.autograd.grad((normalize_rows(x) ** 2 * w).sum(), x, create_graph=True)
    g2, = torch.autograd.grad((F.normalize(x, dim=1) ** 2 * w).sum(), x, create_graph=True)
    torch.testing.assert_close(g1, g2)
    h1, = torch.autograd.grad(g1.pow(3).sum(), x)
    h2, = torch.autograd.grad(g2.pow(3).sum(), x)
    torch.testing.assert_close(h1, h2)
    zero = torch.zeros(2, 5, requires_grad=True)   # a zero row stays zero, as in F.normalize
    assert normalize_rows(zero).abs().sum() == 0
    normalize_rows(zero).sum().backward()
    assert torch.isfinite(zero.grad).all()
