"""SLMRec: branch propagation against a dense LightGCN, decomposition of the fused score, the
losses (InfoNCE + FAC / FD / FM), perturbation points, determinism, training and attacks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import image_perturbation_effect, pairs, params_without_gradient
from mmrobust.data import make_synthetic
from mmrobust.models import Batch
from mmrobust.models.slmrec import SLMRec, SLMRecConfig
from mmrobust.training import TrainConfig, fit
from mmrobust.utils import seed_everything

SMALL = {"embedding_size": 12}


def randomise_biases(model):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.1)


def dense_branches(model: SLMRec, ds, feats, delta=None):
    """MMRec's compute_graph per branch with a dense
    Â: mean of layers 0..L of Â [e_u ; item input]."""
    r = ds.train.toarray().astype(np.float64)
    a = np.block([[np.zeros((ds.n_users, ds.n_users)), r],
                  [r.T, np.zeros((ds.n_items, ds.n_items))]])
    deg = a.sum(1)
    inv = np.where(deg > 0, deg, 1.0) ** -0.5 * (deg > 0)
    adj = torch.tensor(inv[:, None] * a * inv[None, :])
    inputs = {"id": model.item_emb.double()}
    for m in model.modalities:
        layer = model.dense[m]
        inputs[m] = (F.normalize(feats[m].double(), dim=1) @ layer.weight.double().T
                     + layer.bias.double())
        if delta is not None and m in delta:
            inputs[m] = inputs[m] + delta[m].double()
    out = {}
    for k, item_input in inputs.items():
        x = torch.cat([model.user_emb.double(), item_input])
        total = x
        for _ in range(model.config.n_layers):
            x = adj @ x
            total = total + x
        z = total / (model.config.n_layers + 1)
        out[k] = (z[: ds.n_users], z[ds.n_users:])
    return out


@pytest.mark.parametrize("n_layers", [0, 1, 2, 3])
def test_propagation_matches_dense_reference_and_decomposition_is_exact(ds, feats, n_layers):
    torch.manual_seed(0)
    model = SLMRec(ds, SLMRecConfig(**SMALL, n_layers=n_layers))
    randomise_biases(model)
    d = model.config.embedding_size
    with torch.no_grad():
        emb = model.embed(feats)
        z = dense_branches(model, ds, feats)
    z_user = torch.cat([z[k][0] for k in z], 1).float()
    z_item = torch.cat([z[k][1] for k in z], 1).float()
    torch.testing.assert_close(emb.user, model.fuse_user(z_user).detach(), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(emb.item, model.fuse_item(z_item).detach(), rtol=1e-4, atol=1e-5)
    users, items = pairs(ds)
    parts = emb.modality_scores(users, items)
    own = {}
    for k, name in enumerate(z):   # F^k z^k: branch k's block of the fusion layers
        wu = model.fuse_user.weight[:, k * d:(k + 1) * d]
        wi = model.fuse_item.weight[:, k * d:(k + 1) * d]
        own[name] = (z[name][0].float()[users] @ wu.T, z[name][1].float()[items] @ wi.T)
    with torch.no_grad():
        for m in model.modalities:
            torch.testing.assert_close(parts[m], (own[m][0] * own[m][1]).sum(1), rtol=1e-4,
                                       atol=1e-5)
        # rest: the ID term, every cross term and the bias terms
        user_sum = sum(u for u, _ in own.values()) + model.fuse_user.bias
        item_sum = sum(i for _, i in own.values()) + model.fuse_item.bias
        rest = ((user_sum * item_sum).sum(1)
                - sum((own[m][0] * own[m][1]).sum(1) for m in model.modalities))
        torch.testing.assert_close(parts["rest"], rest, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(sum(parts.values()), emb.pair_scores(users, items), rtol=1e-5,
                               atol=1e-5)
    pos, neg = model.bpr_scores(feats, Batch(users, items, items.flip(0)))
    torch.testing.assert_close(pos, emb.pair_scores(users, items), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(neg, emb.pair_scores(users, items.flip(0)), rtol=1e-5, atol=1e-5)


def test_dropout_propagation_path_matches_the_shared_path(ds, feats):
    """The FD views propagate every branch separately;
    with a negligible rate they equal the main path."""
    torch.manual_seed(0)
    model = SLMRec(ds, SLMRecConfig(**SMALL))
    with torch.no_grad():
        items = model.branch_inputs(feats)
        a, b = model.propagate(items), model.propagate(items, dropout=1e-12)
    torch.testing.assert_close(a[0], b[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(a[1], b[1], rtol=1e-5, atol=1e-6)


def test_fac_loss_written_out(ds, feats):
    torch.manual_seed(0)
    model = SLMRec(ds, SLMRecConfig(**SMALL, ssl_alpha=0.5, reg_weight=1e-3))
    randomise_biases(model)
    d = model.config.embedding_size
    users, pos = pairs(ds, 16)
    batch = Batch(users, pos, pos.flip(0))
    # last of ≥ 2 stages: d/2
    assert [layer.out_features for layer in model.fac_chain] == [d, d // 2]
    with torch.no_grad():
        loss = model.loss(batch, feats)
        z = dense_branches(model, ds, feats)
        z_user = torch.cat([z[k][0] for k in z], 1).float()
        z_item = torch.cat([z[k][1] for k in z], 1).float()
        u = F.normalize(model.fuse_user(z_user[users]), dim=1)
        p = F.normalize(model.fuse_item(z_item[pos]), dim=1)
        labels = torch.arange(16)
        main = F.cross_entropy(u @ p.T / 0.2, labels)
        h = z["id"][1].float()[pos]
        ssl = 0.0
        for m, chain in zip(model.modalities, model.fac_chain, strict=True):
            h = chain(h)
            ssl = ssl + F.cross_entropy(h @ model.fac_head[m](z[m][1].float()[pos]).T / 0.2, labels)
        reg = sum((q ** 2).sum() for q in model.parameters())
    torch.testing.assert_close(loss, main + 0.5 * ssl + 0.5e-3 * reg, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("task", ["FAC", "FD", "FM", "FD+FM"])
def test_every_task_gives_a_finite_loss_and_a_gradient_to_every_parameter(ds, feats, task):
    torch.manual_seed(0)
    model = SLMRec(ds, SLMRecConfig(**SMALL, ssl_task=task))
    users, pos = pairs(ds, 32)
    loss = model.loss(Batch(users, pos, pos.flip(0)), feats)
    loss.backward()
    assert torch.isfinite(loss) and loss > 0
    assert not params_without_gradient(model)
    assert hasattr(model, "fac_chain") == (task == "FAC")


def test_feature_perturbation_reaches_its_own_part_and_the_cross_terms(ds, feats):
    torch.manual_seed(0)
    model = SLMRec(ds, SLMRecConfig(**SMALL))
    assert model.feature_route == "direct" and not model.item_local
    clean, moved = image_perturbation_effect(model, ds, feats)
    assert not torch.allclose(clean["image"], moved["image"])
    torch.testing.assert_close(clean["text"], moved["text"])
    assert not torch.allclose(clean["rest"], moved["rest"])


@pytest.mark.parametrize("modality", ["image", "text"])
def test_embedding_point_is_the_projection_output(ds, feats, modality):
    torch.manual_seed(0)
    model = SLMRec(ds, SLMRecConfig(**SMALL))
    d = 0.3 * torch.randn_like(feats[modality])
    raw = {**feats, modality: feats[modality] + d}
    with torch.no_grad():
        delta = (model.encode_modality(modality, raw[modality])
                 - model.encode_modality(modality, feats[modality]))
        a, b = model.embed(raw), model.embed(feats, {modality: delta})
        z = dense_branches(model, ds, feats, {modality: delta})
    torch.testing.assert_close(a.user, b.user, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(a.item, b.item, rtol=1e-5, atol=1e-6)
    k = 1 + model.modalities.index(modality)
    wi = model.fuse_item.weight[:, k * 12:(k + 1) * 12]
    torch.testing.assert_close(b.parts[modality][1], (z[modality][1].float() @ wi.T).detach(),
                               rtol=1e-4, atol=1e-5)
    assert model.perturbation_shape("embedding", modality) == (ds.n_items, 12)
    torch.testing.assert_close(model.encode_modality(modality, feats[modality][3:5]),
                               model.encode_modality(modality, feats[modality])[3:5])


@pytest.fixture(scope="module")
def learn_ds():
    return make_synthetic(n_users=150, n_items=120, per_user=15, seed=5)


def train(ds, epochs, seed=0, **config):
    seed_everything(seed)
    model = SLMRec(ds, SLMRecConfig(**SMALL, **config))
    result = fit(model, ds,
                 TrainConfig(epochs=epochs, lr=0.01, batch_size=256, progress=False, device="cpu"),
                 evaluate_test=False)
    return model, result


def test_same_seed_gives_identical_losses_with_random_views(learn_ds):
    runs = [train(learn_ds, 3, ssl_task="FD+FM")[1] for _ in range(2)]
    assert [h["loss"] for h in runs[0].history] == [h["loss"] for h in runs[1].history]
