"""Ranking metrics against hand-computed rankings."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mmrobust.data import Dataset
from mmrobust.evaluation import evaluate, evaluate_per_user, evaluate_sampled, per_user_topk_metrics
from mmrobust.models import Embeddings, Recommender


class FixedScores(Recommender):
    """ŷ_ui = S[u, i] for a given score matrix (user vectors are one-hot)."""

    name = "fixed"
    trainable = False

    def __init__(self, dataset: Dataset, scores: np.ndarray):
        super().__init__(dataset, self.Config())
        self.register_buffer("scores", torch.as_tensor(scores, dtype=torch.float32))

    def embed(self, features, embedding_delta=None):
        return Embeddings(torch.eye(self.n_users), self.scores.T, {})


def toy_dataset() -> Dataset:
    # user 0: train {0}, test {2, 4}; user 1: train {1, 3}, valid {5}, test {0}
    users = [0, 0, 0, 1, 1, 1, 1]
    items = [0, 2, 4, 1, 3, 5, 0]
    labels = [0, 2, 2, 0, 0, 1, 2]
    return Dataset.from_interactions("toy", users, items, labels, 2, 6)


SCORES = np.array([[9, 8, 7, 1, 6, 5],
                   [2, 9, 1, 9, 3, 9]], dtype=np.float32)


def test_hand_computed_full_ranking():
    ds = toy_dataset()
    users, per_user = evaluate_per_user(FixedScores(ds, SCORES), ds, "test", ks=(1, 2, 3, 5))
    assert users.tolist() == [0, 1]
    l2, l3, l4 = (1 / math.log2(r) for r in (2, 3, 4))
    # user 0 ranking after masking item 0: 1, 2, 4, 5, 3 -> hits [0, 1, 1, 0, 0]; 2 relevant
    # user 1 ranking after masking 1, 3 (train) and 5 (valid): 4, 0, 2 -> hits [0, 1, 0]; 1 relevant
    expected = {
        "recall@1": [0, 0], "recall@2": [0.5, 1], "recall@3": [1, 1],
        "precision@3": [2 / 3, 1 / 3], "hr@1": [0, 0], "hr@2": [1, 1],
        "ndcg@2": [(1 / math.log2(3)) / (l2 + 1 / math.log2(3)), 1 / math.log2(3)],
        "ndcg@3": [(1 / math.log2(3) + l4) / (l2 + l3), 1 / math.log2(3)],
        "map@2": [(1 / 2) / 2, 1 / 2], "map@3": [(1 / 2 + 2 / 3) / 2, 1 / 2],
        "map@5": [(1 / 2 + 2 / 3) / 2, 1 / 2],
    }
    for key, values in expected.items():
        np.testing.assert_allclose(per_user[key], values, rtol=1e-9, err_msg=key)
    means = evaluate(FixedScores(ds, SCORES), ds, "test", ks=(1, 2, 3, 5))
    assert means["recall@2"] == pytest.approx(0.75)


def test_valid_split_masks_only_train_items():
    ds = toy_dataset()
    _, per_user = evaluate_per_user(FixedScores(ds, SCORES), ds, "valid", ks=(1, 2))
    # only user 1 has a valid item (5); masking train items 1, 3 leaves 5 (score 9) on top
    assert per_user["hr@1"].tolist() == [1.0]


def test_ndcg_is_one_for_a_perfect_ranking():
    hits = torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0]])
    out = per_user_topk_metrics(hits, torch.tensor([2, 1]), ks=(4,))
    assert out["ndcg@4"].tolist() == [1.0, 1.0]
    assert out["map@4"].tolist() == [1.0, 1.0]


def test_sampled_protocol_ranks():
    ds = toy_dataset()
    scores = np.array([[0, 0, 10, 0, 10, 0],      # positives beat every negative -> rank 0
                       [-5, 0, 0, 0, 0, 0]], np.float32)  # user 1's positive (item 0) is last
    out = evaluate_sampled(FixedScores(ds, scores), ds, "test", ks=(1, 2), n_negatives=1, seed=0)
    # user 1 has only item 2 and 4 free: rank 1 (one negative ≥ positive)
    assert out["hr@1"] == pytest.approx(2 / 3)
    assert out["hr@2"] == pytest.approx(1.0)
    assert out["ndcg@2"] == pytest.approx((1 + 1 + 1 / math.log2(3)) / 3)


def test_sampled_protocol_refuses_too_many_negatives():
    ds = toy_dataset()
    with pytest.raises(ValueError, match="fewer than 999 non-interacted items"):
        evaluate_sampled(FixedScores(ds, SCORES), ds, "test")


def test_masking_check_flags_a_pgd_drop_over_twice_the_fgsm_drop():
    import pandas as pd

    from mmrobust.evaluation.robustness import masking_check

    rows = []
    for budget, fgsm, pgd in ((0.05, 0.10, 0.15), (0.1, 0.05, 0.30)):
        for attack, drop in (("fgsm", fgsm), ("pgd", pgd)):
            rows.append({"attack": attack, "budget": budget, "modalities": "image+text",
                         "metric": "recall", "k": 20,
                         "clean": 0.2, "attacked": 0.2 * (1 - drop), "drop": drop})
    check = masking_check(pd.DataFrame(rows)).set_index("budget")
    assert not check.loc[0.05, "flagged"] and check.loc[0.1, "flagged"]
    assert check.loc[0.1, "pgd_drop"] == pytest.approx(0.30)
    assert check.loc[0.1, "clean"] == pytest.approx(0.2)
    with pytest.raises(ValueError, match="missing pgd"):
        masking_check(pd.DataFrame([r for r in rows if r["attack"] == "fgsm"]))
