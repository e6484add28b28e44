"""Defenses as loss plug-ins: they act on the scoring path, vanish at weight 0, respect their
budgets, do not leak gradients from the noise step, stack, and UAT-MC's alignment is live."""

from __future__ import annotations

import copy

import pytest
import torch

from conftest import train_synthetic
from mmrobust.attacks import row_norm
from mmrobust.defenses import AMR, UAT, UATMC, ModalityBalancing, make_defense
from mmrobust.models import MODELS, Batch, build_model
from mmrobust.training import TrainConfig, fit
from mmrobust.utils import seed_everything

PLUGINS = {"amr": lambda **k: AMR(**k), "uat": lambda **k: UAT(**k),
           "uat-mc": lambda **k: UATMC(**k),
           "modality-balancing": lambda **k: ModalityBalancing(sensitive="image", **k)}


@pytest.fixture(scope="module")
def trained():
    """(synthetic dataset, VBPR trained on it), shared by the module's tests."""
    return train_synthetic(n_users=100, n_items=120, per_user=12, seed=5)


@pytest.fixture(scope="module")
def dataset(trained):
    return trained[0]


@pytest.fixture(scope="module")
def vbpr(trained):
    return trained[1]


@pytest.fixture(scope="module")
def features(dataset):
    return dataset.feature_tensors()


@pytest.fixture(scope="module")
def batch(dataset):
    g = torch.Generator().manual_seed(0)
    return Batch(torch.randint(0, dataset.n_users, (64,), generator=g),
                 torch.randint(0, dataset.n_items, (64,), generator=g),
                 torch.randint(0, dataset.n_items, (64,), generator=g))


@pytest.fixture
def ready(dataset, vbpr):
    """``ready(name, **params)``: the plug-in, started on a fresh copy of the trained VBPR."""
    def make(name, **params):
        plugin = PLUGINS[name](**params)
        model = copy.deepcopy(vbpr)
        plugin.on_fit_start(model, dataset)
        return plugin, model

    return make


@pytest.mark.parametrize("name", sorted(PLUGINS))
def test_plugin_loss_reaches_the_scoring_path_and_vanishes_at_weight_zero(ready, features, batch,
                                                                          name):
    plugin, model = ready(name, lam=1.0)
    torch.manual_seed(0)
    term = plugin.extra_loss(model, batch, features)
    assert all(p.grad is None for p in model.parameters()), \
        "the noise step leaked parameter gradients"
    grads = torch.autograd.grad(term, [model.user_emb, model.W], allow_unused=True)
    assert all(g is not None and g.abs().sum() > 0 for g in grads)
    off, model = ready(name, lam=0.0)
    assert off.extra_loss(model, batch, features) is None


@pytest.mark.parametrize("name", ["amr", "uat", "uat-mc"])
def test_adversarial_noise_respects_its_budget(ready, features, batch, name):
    plugin, model = ready(name, eps=0.07)
    pert = plugin.craft(model, features, batch)
    assert torch.equal(pert.items, torch.unique(torch.cat([batch.pos, batch.neg])))
    for m, delta in pert.deltas.items():
        clean = features[m].index_select(0, pert.items)
        torch.testing.assert_close(row_norm(delta, "l2"), 0.07 * row_norm(clean, "l2"), rtol=1e-5,
                                   atol=1e-7)


def test_uat_mc_alignment_changes_the_noise_through_second_order_gradients(ready, features, batch):
    uat, model = ready("uat")
    mc, _ = ready("uat-mc", beta=5.0)
    a, b = uat.craft(model, features, batch), mc.craft(model, features, batch)
    cos = torch.nn.functional.cosine_similarity(a.deltas["image"], b.deltas["image"], dim=1)
    assert cos.min() < 0.999, "the alignment term did not move the noise"
    same, _ = ready("uat-mc", beta=0.0)
    torch.testing.assert_close(same.craft(model, features, batch).deltas["image"],
                               a.deltas["image"])


def test_distillation_stays_within_its_linf_ball(ready, features):
    plugin, model = ready("modality-balancing", eps=0.3)
    x = features["image"][:10]
    target = model.encode_modality("image", features["image"][10:20]).detach()
    z = plugin.distill(model, x, target)
    assert (z - x).abs().max() <= 0.3 + 1e-6
    before = (model.encode_modality("image", x) - target).pow(2).sum()
    after = (model.encode_modality("image", z) - target).pow(2).sum()
    assert after < before


def test_sensitive_modality_is_chosen_on_validation(dataset, vbpr, monkeypatch):
    import mmrobust.defenses.modality_balancing as mb

    splits = []
    real = mb.split_triples
    monkeypatch.setattr(mb, "split_triples",
                        lambda ds, split, *a, **k: splits.append(split) or real(ds, split, *a, **k))
    plugin = ModalityBalancing()
    plugin.on_fit_start(copy.deepcopy(vbpr), dataset)
    assert splits == ["valid"] and plugin.notes["sensitive"] in ("image", "text")
    assert set(plugin.notes["margin_drops_valid"]) == {"image", "text"}


def test_no_defense_and_zero_weight_leave_training_unchanged(dataset, vbpr):
    config = TrainConfig(epochs=2, lr=0.01, batch_size=256, progress=False, device="cpu")
    runs = []
    for plugins in ([], [AMR(lam=0.0), ModalityBalancing(lam=0.0, sensitive="text")]):
        model = copy.deepcopy(vbpr)
        fit(model, dataset, config, plugins=plugins)
        runs.append(model)
    for a, b in zip(runs[0].parameters(), runs[1].parameters(), strict=True):
        torch.testing.assert_close(a, b)


def test_defenses_stack_and_log_per_epoch(dataset, vbpr):
    model = copy.deepcopy(vbpr)
    result = fit(model, dataset,
                 TrainConfig(epochs=2, lr=0.01, batch_size=256, progress=False, device="cpu"),
                 plugins=[make_defense("mb", lam=1.0), make_defense("adv-training")])
    logged = result.history[-1]
    assert {"modality-balancing/balance", "amr/adv_bpr", "amr/delta_ratio/image"} <= set(logged)
    assert logged["amr/delta_ratio/image"] == pytest.approx(0.05, rel=1e-4)
    assert result.notes["modality-balancing"]["sensitive"] in ("image", "text")


def test_defenses_refuse_models_they_cannot_act_on(dataset):
    with pytest.raises(ValueError, match="reads no features|feature route 'none'"):
        AMR().on_fit_start(build_model("mf", dataset), dataset)
    with pytest.raises(ValueError, match="two or more modalities"):
        ModalityBalancing().on_fit_start(build_model("vbpr", dataset, modalities=["image"]),
                                         dataset)
    with pytest.raises(ValueError, match="unknown defense 'foo'"):
        make_defense("foo")
    with pytest.raises(ValueError, match="lamda"):
        make_defense("amr", lamda=1)


DIRECT = sorted(name for name, cls in MODELS.items() if cls.feature_route == "direct")


@pytest.fixture(scope="module")
def direct_models(dataset):
    out = {}
    for name in DIRECT:
        seed_everything(0)
        model = build_model(name, dataset)
        fit(model, dataset,
            TrainConfig(epochs=2, lr=0.01, batch_size=256, progress=False, device="cpu"))
        out[name] = model
    return out


@pytest.mark.parametrize("model_name", DIRECT)
@pytest.mark.parametrize("name", sorted(PLUGINS))
def test_every_plugin_acts_on_every_feature_reading_model(dataset, features, batch, direct_models,
                                                          model_name, name):
    """No per-model branches: each plug-in's term has
    non-zero gradients on the model's parameters."""
    model = copy.deepcopy(direct_models[model_name])
    plugin = PLUGINS[name](lam=1.0)
    plugin.on_fit_start(model, dataset)
    torch.manual_seed(0)
    term = plugin.extra_loss(model, batch, features)
    assert all(p.grad is None for p in model.parameters()), \
        "the noise step leaked parameter gradients"
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(term, params, allow_unused=True)
    assert sum(float(g.abs().sum()) for g in grads if g is not None) > 0


@pytest.mark.parametrize("model_name", ["vbpr", "mmgcn"])
def test_uat_mc_alignment_is_live_for_vbpr_and_mmgcn(dataset, features, batch, direct_models,
                                                     model_name):
    model = direct_models[model_name]
    uat, mc = UAT(), UATMC(beta=5.0)
    for plugin in (uat, mc):
        plugin.on_fit_start(model, dataset)
    a, b = uat.craft(model, features, batch), mc.craft(model, features, batch)
    for m in model.modalities:
        cos = torch.nn.functional.cosine_similarity(a.deltas[m], b.deltas[m], dim=1)
        assert cos.min() < 0.999, f"the alignment term did not move the {m} noise of {model_name}"
        torch.testing.assert_close(row_norm(b.deltas[m], "l2"),
                                   0.1 * row_norm(features[m].index_select(0, b.items), "l2"),
                                   rtol=1e-4, atol=1e-6)
