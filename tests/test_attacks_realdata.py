"""Attacks on real data (VBPR on TikTok and ML-100k, CI-size training)."""

from __future__ import annotations

import pytest

from conftest import requires_shared_data, trained_real
from mmrobust.attacks import FGSM, PGD, Budget, PromotionAttack, select_targets, split_users
from mmrobust.evaluation.promotion import promotion_report, target_hits
from mmrobust.evaluation.robustness import untargeted_sweep

pytestmark = [pytest.mark.realdata, requires_shared_data("tiktok", "ml100k")]


@pytest.mark.parametrize("dataset", ["tiktok", "ml100k"])
def test_fgsm_lowers_recall_much_more_than_random_noise(dataset):
    ds, model, _ = trained_real(dataset, "vbpr")
    sweep = untargeted_sweep(model, ds, budgets=(0.05,), ks=(20,))
    recall = sweep[sweep.metric == "recall"].set_index("attack")
    print(dataset, recall[["clean", "attacked", "drop"]].to_dict())
    assert recall.loc["fgsm", "attacked"] < recall.loc["fgsm", "clean"]
    assert recall.loc["fgsm", "drop"] > recall.loc["random", "drop"] + 0.02
    assert recall.loc["pgd", "drop"] >= recall.loc["fgsm", "drop"] - 0.01
    assert (sweep.max_ratio_to_radius <= 1 + 1e-5).all()


@pytest.mark.parametrize("dataset", ["tiktok", "ml100k"])
def test_promotion_improves_target_hit_rates(dataset):
    ds, model, _ = trained_real(dataset, "vbpr")
    targets, _ = select_targets(ds, count=30)
    attack_users, held_out = split_users(ds)
    feats = ds.feature_tensors()
    before = target_hits(model, ds, targets, attack_users, None, feats, ks=(50,))
    for attack in (FGSM(Budget(eps=0.05)), PGD(Budget(eps=0.05), step_scale=1.25)):
        pert = PromotionAttack(attack).perturb(model, ds, targets, attack_users, feats)
        after = target_hits(model, ds, targets, attack_users, pert, feats, ks=(50,))
        report = promotion_report(before, after)[50]
        print(dataset, attack.name, report)
        assert report["ri_percent"] > 0
