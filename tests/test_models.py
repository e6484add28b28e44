"""The model contract: score decomposition, encoders, perturbation points, graph helpers."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from pydantic import ValidationError

from mmrobust.data import make_synthetic
from mmrobust.models import MODELS, Batch, build_model
from mmrobust.models.graph import bipartite_adjacency, sym_normalize, sym_spmm, to_torch_csr


@pytest.fixture(scope="module")
def ds():
    return make_synthetic(n_users=40, n_items=60, per_user=10, seed=3)


@pytest.fixture
def feats(ds):
    return ds.feature_tensors()


def pairs(ds, n=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, ds.n_users, (n,), generator=g),
            torch.randint(0, ds.n_items, (n,), generator=g))


@pytest.mark.parametrize("item_bias", [True, False])
def test_vbpr_decomposition_is_exact_and_per_block(ds, feats, item_bias):
    torch.manual_seed(0)
    model = build_model("vbpr", ds, item_bias=item_bias)
    if item_bias:
        torch.nn.init.normal_(model.item_bias)
    users, items = pairs(ds)
    emb = model.embed(feats)
    parts = emb.modality_scores(users, items)
    d = model.config.embedding_size
    theta, gamma_u = model.user_emb[users, d:], model.user_emb[users, :d]
    start = 0
    for m in model.modalities:
        dm = ds.feature_dims()[m]
        by_hand = (theta * (feats[m][items] @ model.W[:, start:start + dm].T)).sum(-1)
        torch.testing.assert_close(parts[m], by_hand)
        start += dm
    id_part = (gamma_u * model.item_emb[items]).sum(-1)
    if item_bias:
        id_part = id_part + model.item_bias[items]
    torch.testing.assert_close(parts["rest"], id_part)
    total = sum(v for k, v in parts.items())
    torch.testing.assert_close(total, emb.pair_scores(users, items))
    assert model.user_emb.shape[1] == 2 * d


@pytest.mark.parametrize("item_bias", [True, False])
def test_vbpr_fast_score_matches_embed(ds, feats, item_bias):
    model = build_model("vbpr", ds, item_bias=item_bias)
    if item_bias:
        torch.nn.init.normal_(model.item_bias)
    users, items = pairs(ds)
    delta = {m: torch.randn(ds.n_items, model.config.embedding_size) for m in model.modalities}
    torch.testing.assert_close(model.score(feats, users, items),
                               model.embed(feats).pair_scores(users, items))
    torch.testing.assert_close(model.score(feats, users, items, delta),
                               model.embed(feats, delta).pair_scores(users, items))


def test_embedding_point_matches_raw_point_through_encoder(ds, feats):
    """Adding g^m(δ) at the embedding point equals adding
    δ to the raw features (g^m is linear in VBPR)."""
    model = build_model("vbpr", ds)
    raw_delta = {m: 0.1 * torch.randn_like(x) for m, x in feats.items()}
    perturbed = {m: feats[m] + raw_delta[m] for m in feats}
    emb_delta = {m: model.encode_modality(m, raw_delta[m]) for m in feats}
    users, items = pairs(ds)
    torch.testing.assert_close(model.embed(perturbed).pair_scores(users, items),
                               model.embed(feats, emb_delta).pair_scores(users, items), rtol=1e-5,
                               atol=1e-5)
    assert model.perturbation_shape("raw", "image") == (ds.n_items, ds.feature_dims()["image"])
    shape = (ds.n_items, model.config.embedding_size)
    assert model.perturbation_shape("embedding", "image") == shape


def test_feature_gradient_reaches_the_score(ds, feats):
    model = build_model("vbpr", ds)
    x = {m: t.clone().requires_grad_(True) for m, t in feats.items()}
    users, items = pairs(ds)
    model.score(x, users, items).sum().backward()
    assert all(x[m].grad.abs().sum() > 0 for m in x)


def test_unimodal_variant_reads_one_modality(ds, feats):
    model = build_model("vbpr", ds, modalities=["image"])
    assert model.modalities == ("image",)
    assert model.W.shape[1] == ds.feature_dims()["image"]
    assert set(model.embed(feats).parts) == {"image"}


def test_popularity_scores_are_training_counts(ds, feats):
    model = build_model("pop", ds)
    scores = model.embed(feats).full_scores(torch.arange(3))
    expected = torch.as_tensor(ds.item_popularity(), dtype=torch.float32)
    assert torch.equal(scores, expected.expand(3, -1))


@pytest.mark.parametrize("name", ["mf", "lightgcn", "vbpr"])
def test_loss_is_differentiable_and_score_consistent(ds, feats, name):
    torch.manual_seed(0)
    model = build_model(name, ds)
    batch = Batch(*pairs(ds, 32), torch.randint(0, ds.n_items, (32,)))
    loss = model.loss(batch, feats)
    loss.backward()
    assert torch.isfinite(loss) and loss > 0
    assert all(p.grad is not None for p in model.parameters())
    users, items = pairs(ds)
    torch.testing.assert_close(model.score(feats, users, items),
                               model.embed(feats).pair_scores(users, items))


@pytest.mark.parametrize("name", ["mf", "lightgcn", "vbpr"])
def test_xavier_initialisation(ds, name):
    torch.manual_seed(0)
    model = build_model(name, ds)
    for pname, p in model.named_parameters():
        if p.dim() == 2:
            bound = (6 / (p.shape[0] + p.shape[1])) ** 0.5
            assert p.abs().max() <= bound + 1e-6, pname
            assert p.abs().max() > 0.5 * bound, pname


def test_lightgcn_matches_dense_propagation(ds, feats):
    model = build_model("lightgcn", ds, n_layers=2)
    a = bipartite_adjacency(ds.train).toarray()
    deg = a.sum(1)
    inv = np.zeros_like(deg)
    inv[deg > 0] = deg[deg > 0] ** -0.5
    norm = torch.tensor(inv[:, None] * a * inv[None, :], dtype=torch.float32)
    e0 = torch.cat([model.user_emb, model.item_emb]).detach()
    e1 = norm @ e0
    e2 = norm @ e1
    final = (e0 + e1 + e2) / 3
    emb = model.embed(feats)
    torch.testing.assert_close(emb.user, final[: ds.n_users], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(emb.item, final[ds.n_users:], rtol=1e-5, atol=1e-6)


def test_sym_spmm_gradients_first_and_second_order():
    rng = np.random.default_rng(0)
    r = sp.random(5, 4, density=0.5, random_state=1, format="csr")
    r.data[:] = 1
    adj = sym_normalize(bipartite_adjacency(r))
    assert abs(adj - adj.T).max() < 1e-7
    a_sparse, a_dense = to_torch_csr(adj).double(), torch.tensor(adj.toarray(), dtype=torch.float64)
    x = torch.tensor(rng.standard_normal((9, 3)), requires_grad=True)
    w = torch.tensor(rng.standard_normal((9, 3)))
    g1, = torch.autograd.grad((sym_spmm(a_sparse, x) ** 2 * w).sum(), x, create_graph=True)
    g2, = torch.autograd.grad(((a_dense @ x) ** 2 * w).sum(), x, create_graph=True)
    torch.testing.assert_close(g1, g2)
    h1, = torch.autograd.grad(g1.pow(2).sum(), x)
    h2, = torch.autograd.grad(g2.pow(2).sum(), x)
    torch.testing.assert_close(h1, h2)


def test_bad_inputs_are_named(ds, feats):
    model = build_model("vbpr", ds)
    with pytest.raises(ValueError, match="needs feature matrix 'text'"):
        model.embed({"image": feats["image"]})
    with pytest.raises(ValueError, match=r"feature matrix 'image' has shape \(60, 3\)"):
        model.embed({**feats, "image": feats["image"][:, :3]})
    with pytest.raises(ValueError, match="unknown model 'nope'; available: "
                                         "pop, mf, lightgcn, vbpr"):
        build_model("nope", ds)
    with pytest.raises(ValidationError, match="embeding_size"):
        build_model("vbpr", ds, embeding_size=8)
    with pytest.raises(ValueError, match="asked for modality audio"):
        build_model("vbpr", ds, modalities=["audio"])
    with pytest.raises(ValueError, match="unknown perturbation point 'pixel'"):
        model.perturbation_shape("pixel", "image")


def test_registry_lists_the_foundation_models():
    assert {"pop", "mf", "lightgcn", "vbpr"} <= set(MODELS)
