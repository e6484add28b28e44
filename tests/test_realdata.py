"""Real data (../shared/data): every trained model beats Popularity on TikTok and ML-100k.

Settings are the validation-selected ones of ``benchmarks/foundation_table.py``; epochs
are capped so that the test fits CI (the full runs are in the README's table).
"""

from __future__ import annotations

import pytest

from conftest import TUNED, requires_shared_data, trained_real


@pytest.mark.realdata
@requires_shared_data("tiktok", "ml100k")
@pytest.mark.parametrize("dataset", ["tiktok", "ml100k"])
def test_trained_models_beat_popularity(dataset):
    _, _, pop = trained_real(dataset, "pop")
    popularity = pop.test["recall@20"]
    scores = {name: trained_real(dataset, name)[2].test["recall@20"] for name in TUNED[dataset]}
    print(dataset, "popularity", popularity, scores)
    for name, score in scores.items():
        assert score > popularity, \
            f"{name} on {dataset}: Recall@20 {score:.4f} ≤ popularity {popularity:.4f}"
