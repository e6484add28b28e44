"""Modality-imbalance and gradient-mismatch analyses."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import train_synthetic
from mmrobust.attacks import PromotionConfig, select_targets, split_triples, split_users
from mmrobust.evaluation.mismatch import (
    directional_contributions,
    gain_summary,
    jaccard,
    mismatch_analysis,
    per_user_gradients,
)
from mmrobust.evaluation.modality import margins, modality_analysis
from mmrobust.models import VBPR


@pytest.fixture(scope="module")
def trained():
    return train_synthetic(n_users=120, n_items=150, per_user=12, seed=9)


def test_margins_add_up_and_sensitive_modality(trained):
    ds, model = trained
    result = modality_analysis(model, ds, budget=0.2)
    table = result.margins.set_index("part")
    assert set(table.index) == {"image", "text", "rest", "fused"}
    for phase in ("clean", "attacked"):
        parts = table.loc[["image", "text", "rest"], phase].sum()
        assert parts == pytest.approx(table.loc["fused", phase], rel=1e-4)
    assert table.loc["fused", "attacked"] < table.loc["fused", "clean"]
    assert result.sensitive == table.loc[["image", "text"], "drop"].idxmax()
    # the ID part reads no features
    assert table.loc["rest", "drop"] == pytest.approx(0.0, abs=1e-6)
    case = result.case
    assert len(case) == 4 * 11 and (case[case.role == "positive"].item == result.case_item).all()
    negatives = case[(case.part == "fused") & (case.role != "positive")]
    train_items = set(ds.train[result.case_user].indices) | set(ds.test[result.case_user].indices)
    assert not set(negatives.item) & train_items


def test_margins_per_triple(trained):
    ds, model = trained
    triples = split_triples(ds, "test", 0)
    with torch.no_grad():
        m = margins(model.embed(ds.feature_tensors()), triples)
    torch.testing.assert_close(m["image"] + m["text"] + m["rest"], m["fused"], rtol=1e-4, atol=1e-5)


def test_per_user_gradients_fast_path_equals_generic(trained, monkeypatch):
    ds, model = trained
    feats = ds.feature_tensors()
    targets, _ = select_targets(ds, count=1, selection="uniform", seed=3)
    users, _ = split_users(ds)
    fast = per_user_gradients(model, ds, int(targets[0]), users, feats, PromotionConfig())
    monkeypatch.setattr(VBPR, "item_local", False)
    slow = per_user_gradients(model, ds, int(targets[0]), users, feats, PromotionConfig())
    for m in fast:
        torch.testing.assert_close(fast[m], slow[m], rtol=1e-4, atol=1e-7)
        assert fast[m].shape == (len(users), ds.feature_dims()[m])


def test_directional_contributions_by_hand():
    g = {"v": torch.tensor([[1.0, 0.0], [0.0, 2.0], [-1.0, 0.0]])}
    c = directional_contributions(g)["v"]
    total = torch.tensor([0.0, 2.0])
    torch.testing.assert_close(c, g["v"] @ total / total.norm())
    assert jaccard(np.array([1, 2, 3]), np.array([2, 3, 4])) == pytest.approx(0.5)


def test_mismatch_analysis_table(trained):
    ds, model = trained
    targets, _ = select_targets(ds, count=3, selection="uniform", seed=1)
    users, _ = split_users(ds)
    table = mismatch_analysis(model, ds, targets, users, budget=0.2, top_share=0.2)
    assert len(table) == 3 and (table.pair == "image-text").all()
    assert table.jaccard.between(0, 1).all() and (table.top_k == round(0.2 * len(users))).all()
    summary = gain_summary(table).set_index("loss_users")
    assert set(summary.index) == {"U_image", "U_text", "A"}
    assert (summary.hr_after >= 0).all()
