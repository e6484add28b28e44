"""The built-in default dataset, built from the recbole wheel and the offline text encoder."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from mmrobust.data import DEFAULT_DATASET, build_dataset, load_dataset
from mmrobust.data.ml100k_meta import chronological_labels


def test_chronological_labels_by_hand():
    users = np.array([0] * 10 + [1] * 3)
    times = np.array([9, 8, 7, 6, 5, 4, 3, 2, 1, 1, 5, 5, 6])
    labels = chronological_labels(users, times)
    # user 0 (n=10): 8 train, 1 valid, 1 test; ties keep file order (the two t=1 rows: index 8 then
    # 9)
    assert labels[[8, 9, 7, 6, 5, 4, 3, 2]].tolist() == [0] * 8
    assert labels[1] == 1 and labels[0] == 2
    # user 1 (n=3): floor(2.4)=2 train, floor(2.7)=2 -> no valid, 1 test
    assert labels[10:].tolist() == [0, 0, 2]


@pytest.fixture(scope="module")
def meta():
    build_dataset(DEFAULT_DATASET)
    return load_dataset()  # no name: the default dataset


def test_default_dataset_is_ml100k_meta(meta):
    assert meta.name == "ml100k-meta"
    assert (meta.n_users, meta.n_items) == (943, 1682)
    assert meta.train.nnz + meta.valid.nnz + meta.test.nnz == 100_000
    assert (meta.train.nnz, meta.valid.nnz, meta.test.nnz) == (79_619, 9_942, 10_439)


def test_modalities(meta):
    assert meta.feature_dims() == {"genre": 20, "text": 384}
    text = meta.features["text"]
    np.testing.assert_allclose(np.linalg.norm(text, axis=1), 1.0, atol=1e-4)
    genre = meta.features["genre"]
    assert set(np.unique(genre[:, :-1])) <= {0.0, 1.0}
    assert genre[:, :-1].sum(1).min() >= 1  # every movie has at least one genre (or 'unknown')
    assert 0.0 <= genre[:, -1].min() and genre[:, -1].max() <= 1.0
    # similar titles embed closer than unrelated ones
    items = pd.read_csv(meta.source / "items.csv")
    idx = {t: i for i, t in zip(items.itemID, items.title, strict=True)}

    def sim(a: str, b: str) -> float:
        return float(text[idx[a]] @ text[idx[b]])

    assert sim("Star Wars", "Return of the Jedi") > sim("Star Wars", "Sense and Sensibility")


def test_split_is_chronological_per_user(meta):
    inter = pd.read_csv(meta.source / "ml100k-meta.inter", sep="\t")
    span = inter.groupby(["userID", "x_label"]).timestamp.agg(["min", "max"]).unstack()
    assert (span[("max", 0)] <= span[("min", 1)].fillna(np.inf)).all()
    assert (span[("max", 1)].fillna(-np.inf) <= span[("min", 2)]).all()
    provenance = json.loads((meta.source / "BUILD.json").read_text())
    assert provenance["source"].startswith("recbole-1.2.1")
    assert items_first_is_toy_story(meta)


def items_first_is_toy_story(meta) -> bool:
    items = pd.read_csv(meta.source / "items.csv")
    return items.loc[0, "title"] == "Toy Story" and items.loc[0, "ml100k_id"] == 1
