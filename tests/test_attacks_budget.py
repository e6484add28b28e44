"""Property tests: every attack's output respects its budget exactly, for both norms, both
budget kinds, both perturbation points and every modality subset."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmrobust.attacks import FGSM, PGD, Budget, Perturbation, RandomNoise, project_rows, row_norm
from mmrobust.attacks.perturbation import clean_rows
from mmrobust.data import make_synthetic
from mmrobust.models import build_model
from mmrobust.training import TrainConfig, fit
from mmrobust.utils import seed_everything

ATTACKS = {"fgsm": FGSM, "pgd": lambda *a, **k: PGD(*a, steps=3, random_start=True, **k),
           "random": RandomNoise}

settings.register_profile("ci", max_examples=60, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci")


@pytest.fixture(scope="module")
def dataset():
    return make_synthetic(n_users=60, n_items=80, per_user=10, seed=11,
                          modalities={"image": (12, 3.0), "text": (6, 0.5), "audio": (4, 1.0)})


@pytest.fixture(scope="module")
def model(dataset):
    seed_everything(0)
    net = build_model("vbpr", dataset, embedding_size=8)
    fit(net, dataset, TrainConfig(epochs=3, lr=0.02, batch_size=128, progress=False, device="cpu"))
    return net


@pytest.fixture(scope="module")
def features(dataset):
    return dataset.feature_tensors()


@given(attack=st.sampled_from(sorted(ATTACKS)), norm=st.sampled_from(["l2", "linf"]),
       relative=st.booleans(), point=st.sampled_from(["raw", "embedding"]), eps=st.floats(0.0, 2.0),
       modalities=st.lists(st.sampled_from(["image", "text", "audio"]), min_size=1, max_size=3,
                           unique=True), subset=st.booleans())
def test_every_attack_respects_its_budget(dataset, model, features, attack, norm, relative, point,
                                          eps, modalities, subset):
    budget = Budget(eps=eps, norm=norm, relative=relative)
    items = torch.arange(0, dataset.n_items, 3) if subset else None
    crafter = ATTACKS[attack](budget, point=point, modalities=modalities)
    pert = crafter.perturb(model, dataset, features, items=items)
    assert set(pert.deltas) == set(modalities)
    for m, delta in pert.deltas.items():
        clean = clean_rows(model, features, m, point, items)
        expected = eps * row_norm(clean, "l2") if relative else torch.full((clean.shape[0],), eps)
        torch.testing.assert_close(pert.radius[m], expected)
        assert delta.shape == clean.shape
        norms = row_norm(delta, norm)
        assert torch.all(norms <= expected * (1 + 1e-5) + 1e-7), (m, (norms - expected).max())
        # full-size steps: every row with a direction sits on the boundary
        if attack in ("fgsm", "random"):
            active = norms > 0
            torch.testing.assert_close(norms[active], expected[active], rtol=1e-5, atol=1e-6)
    assert max(n["max_ratio_to_radius"] for n in pert.norms().values()) <= 1 + 1e-5


@given(norm=st.sampled_from(["l2", "linf"]), scale=st.floats(0.0, 10.0))
def test_projection_is_onto_the_ball_and_idempotent(norm, scale):
    g = torch.Generator().manual_seed(0)
    delta = scale * torch.randn(20, 7, generator=g)
    radius = torch.rand(20, generator=g)
    projected = project_rows(delta, radius, norm)
    assert torch.all(row_norm(projected, norm) <= radius * (1 + 1e-6) + 1e-7)
    torch.testing.assert_close(project_rows(projected, radius, norm), projected)
    inside = row_norm(delta, norm) <= radius
    torch.testing.assert_close(projected[inside], delta[inside])


def test_linf_reference_norm_option(model, features):
    budget = Budget(eps=0.1, norm="linf", reference="linf")
    pert = Perturbation.zeros(model, features, budget, "raw", ["image"])
    torch.testing.assert_close(pert.radius["image"], 0.1 * features["image"].abs().amax(1))


def test_bad_budgets_are_named(dataset, model, features):
    with pytest.raises(ValueError, match="non-negative"):
        Budget(eps=-0.1)
    with pytest.raises(ValueError, match="but not for modality 'text'"):
        Perturbation.zeros(model, features, Budget(eps={"image": 0.1}), "raw", ["image", "text"])
    with pytest.raises(ValueError, match="does not read modality 'video'"):
        FGSM(0.1, modalities=["video"]).perturb(model, dataset, features)
    with pytest.raises(ValueError, match="unknown perturbation point 'pixel'"):
        FGSM(0.1, point="pixel").perturb(model, dataset, features)
    with pytest.raises(ValueError, match="reads no item features"):
        FGSM(0.1).perturb(build_model("mf", dataset), dataset)
