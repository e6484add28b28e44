"""Real data (../shared/data): every trained model beats Popularity on TikTok and ML-100k.

Settings are the validation-selected ones of ``benchmarks/foundation_table.py``; epochs
are capped so that the test fits CI (the full runs are in the README's table).
"""

from __future__ import annotations

import pytest

from conftest import requires_shared_data
from mmrobust.data import load_dataset
from mmrobust.models import build_model
from mmrobust.training import TrainConfig, fit
from mmrobust.utils import seed_everything

SETTINGS = {  # dataset -> model -> (model settings, learning rate)
    "tiktok": {"mf": ({"reg_weight": 0.1}, 5e-3), "lightgcn": ({"reg_weight": 0.01}, 5e-3),
               "vbpr": ({"reg_weight": 0.1}, 5e-3)},
    "ml100k": {"mf": ({"reg_weight": 0.01}, 5e-3), "lightgcn": ({"reg_weight": 1e-3}, 5e-3),
               "vbpr": ({"reg_weight": 0.01}, 5e-3)},
}


def recall20(name: str, ds, params: dict, lr: float, epochs: int) -> float:
    seed_everything(0)
    model = build_model(name, ds, **params)
    result = fit(model, ds, TrainConfig(epochs=epochs, lr=lr, patience=10, progress=False, device="cpu"))
    return result.test["recall@20"]


@pytest.mark.realdata
@requires_shared_data("tiktok", "ml100k")
@pytest.mark.parametrize("dataset", ["tiktok", "ml100k"])
def test_trained_models_beat_popularity(dataset):
    ds = load_dataset(dataset)
    popularity = recall20("pop", ds, {}, 1e-3, 1)
    scores = {name: recall20(name, ds, params, lr, epochs=30) for name, (params, lr) in SETTINGS[dataset].items()}
    print(dataset, "popularity", popularity, scores)
    for name, score in scores.items():
        assert score > popularity, f"{name} on {dataset}: Recall@20 {score:.4f} ≤ popularity {popularity:.4f}"
