"""Every model of the zoo under the one contract: scores, decomposition, attacks and analyses
run unchanged on each (CI-size synthetic data)."""

from __future__ import annotations

import pytest
import torch

from mmrobust.attacks import FGSM
from mmrobust.data import make_synthetic
from mmrobust.defenses import make_defense
from mmrobust.evaluation import evaluate
from mmrobust.evaluation.modality import modality_analysis
from mmrobust.evaluation.robustness import evaluate_perturbed
from mmrobust.models import FEATURE_ROUTES, MODELS, build_model
from mmrobust.training import TrainConfig, fit
from mmrobust.utils import seed_everything

MULTIMODAL = sorted(name for name, cls in MODELS.items() if cls.feature_route != "none")


@pytest.fixture(scope="module")
def dataset():
    return make_synthetic(n_users=90, n_items=110, per_user=12, seed=21)


@pytest.fixture(scope="module")
def trained(dataset):
    out = {}
    for name in sorted(MODELS):
        seed_everything(0)
        model = build_model(name, dataset)
        fit(model, dataset,
            TrainConfig(epochs=3, lr=0.01, batch_size=256, progress=False, device="cpu"),
            evaluate_test=False)
        out[name] = model.eval()
    return out


@pytest.mark.parametrize("name", sorted(MODELS))
def test_contract(dataset, trained, name):
    model = trained[name]
    cls = MODELS[name]
    assert cls.feature_route in FEATURE_ROUTES and cls.route_note
    feats = dataset.feature_tensors(modalities=model.modalities)
    users = torch.arange(dataset.n_users).repeat(3)
    items = torch.randint(0, dataset.n_items, (3 * dataset.n_users,))
    with torch.no_grad():
        emb = model.embed(feats)
        parts = emb.modality_scores(users, items)
        torch.testing.assert_close(sum(parts.values()), emb.pair_scores(users, items), rtol=1e-4,
                                   atol=1e-5)
        torch.testing.assert_close(model.score(feats, users, items), emb.pair_scores(users, items),
                                   rtol=1e-4, atol=1e-5)
        assert set(parts) - {"rest"} <= set(model.modalities)
        for m in model.modalities:
            shape = (5, model.modality_embedding_dims()[m])
            assert model.encode_modality(m, feats[m][:5]).shape == shape
    assert 0 <= evaluate(model, dataset, "test", ks=(20,))["recall@20"] <= 1


@pytest.mark.parametrize("name", MULTIMODAL)
def test_fgsm_and_modality_analysis_run_on_every_multimodal_model(dataset, trained, name):
    model = trained[name]
    pert = FGSM(0.1).perturb(model, dataset)
    assert max(n["max_ratio_to_radius"] for n in pert.norms().values()) <= 1 + 1e-5
    attacked = evaluate_perturbed(model, dataset, pert, ks=(20,))["recall@20"]
    clean = evaluate(model, dataset, "test", ks=(20,))["recall@20"]
    if MODELS[name].route_of(model.config) == "training-only":
        assert attacked == clean  # inference ignores the features
    result = modality_analysis(model, dataset, budget=0.1)
    assert result.sensitive in (*model.modalities, "none")


TRAINABLE = sorted(name for name, cls in MODELS.items() if cls.trainable)
LEARN_LR = {"lattice": 0.02, "freedom": 0.02, "bm3": 0.02, "mmgcl": 0.02}


@pytest.fixture(scope="module")
def learn_dataset():
    return make_synthetic(n_users=150, n_items=160, per_user=15, seed=5)


def _fit(name, ds, epochs, lr=0.01, seed=0):
    seed_everything(seed)
    model = build_model(name, ds)
    result = fit(model, ds,
                 TrainConfig(epochs=epochs, lr=lr, batch_size=256, progress=False, device="cpu"),
                 evaluate_test=False)
    return model, result


@pytest.mark.parametrize("name", TRAINABLE)
def test_same_seed_gives_identical_losses(dataset, name):
    runs = [_fit(name, dataset, 2)[1] for _ in range(2)]
    assert [h["loss"] for h in runs[0].history] == [h["loss"] for h in runs[1].history]


@pytest.mark.parametrize("name", TRAINABLE)
def test_every_model_learns(learn_dataset, name):
    seed_everything(0)
    untrained = build_model(name, learn_dataset)
    before = evaluate(untrained, learn_dataset, "test", ks=(20,))["recall@20"]
    model, _ = _fit(name, learn_dataset, 15, LEARN_LR.get(name, 0.01))
    after = evaluate(model, learn_dataset, "test", ks=(20,))["recall@20"]
    assert after > before + 0.05, (before, after)


@pytest.mark.parametrize("name",
                         sorted(n for n in MULTIMODAL if MODELS[n].feature_route == "direct"))
def test_fgsm_lowers_the_fused_margin_of_every_direct_model(dataset, trained, name):
    model = trained[name]
    pert = FGSM(0.1).perturb(model, dataset)
    assert all(float(d.abs().sum()) > 0 for d in pert.deltas.values())
    margins = modality_analysis(model, dataset, pert).margins.set_index("part")
    assert float(margins.loc["fused", "drop"]) > 0


def _read_only(ds):
    """The dataset as a Ray worker sees it: every array a read-only view of shared memory."""
    def frozen(a):
        view = a.view()
        view.flags.writeable = False
        return view

    def matrix(m):
        return type(m)((frozen(m.data), frozen(m.indices), frozen(m.indptr)), shape=m.shape)

    return type(ds)(ds.name, ds.n_users, ds.n_items, matrix(ds.train), matrix(ds.valid),
                    matrix(ds.test), {m: frozen(x) for m, x in ds.features.items()})


@pytest.mark.filterwarnings("ignore:The given NumPy array is not writable")
@pytest.mark.parametrize("name", TRAINABLE)
def test_models_never_write_into_the_dataset(dataset, name):
    ds = _read_only(dataset)
    model, _ = _fit(name, ds, 1)
    assert 0 <= evaluate(model, ds, "test", ks=(20,))["recall@20"] <= 1
    if MODELS[name].route_of(model.config) in ("direct", "graph"):
        pert = FGSM(0.05).perturb(model, ds)
        assert evaluate_perturbed(model, ds, pert, ks=(20,))["recall@20"] >= 0
    if MODELS[name].feature_route == "direct":
        plugins = [make_defense("modality-balancing", lam=1.0), make_defense("uat-mc")]
        fit(model, ds, TrainConfig(epochs=1, batch_size=256, progress=False, device="cpu"), plugins,
            evaluate_test=False)
