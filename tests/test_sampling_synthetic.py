"""BPR sampling and the synthetic generator."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from mmrobust.data import BPRSampler, DataError, make_synthetic


def test_negatives_are_never_training_positives():
    # dense: 60 % of items are positives
    ds = make_synthetic(n_users=200, n_items=50, per_user=30, seed=1)
    sampler = BPRSampler(ds.train, seed=0)
    users, pos, neg = sampler.epoch(0)
    assert len(users) == ds.train.nnz
    dense = ds.train.toarray()
    assert dense[users, pos].all()
    assert not dense[users, neg].any()
    # uniform over the allowed items: every item that some user can draw is drawn
    assert len(np.unique(neg)) == ds.n_items


def test_sampling_is_a_pure_function_of_seed_and_epoch():
    ds = make_synthetic(seed=2)
    a, b = BPRSampler(ds.train, seed=5), BPRSampler(ds.train, seed=5)
    for x, y in zip(a.epoch(3), b.epoch(3), strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.epoch(3)[2], a.epoch(4)[2])


def test_user_with_every_item_is_rejected():
    train = sp.csr_matrix(np.ones((2, 3)))
    with pytest.raises(DataError, match="user 0 has interacted with every item"):
        BPRSampler(train)


def test_synthetic_modalities_follow_their_snr():
    ds = make_synthetic(n_users=50, n_items=500,
                        modalities={"clean": (16, 100.0), "noisy": (16, 0.01)}, seed=0)
    assert ds.feature_dims() == {"clean": 16, "noisy": 16}
    # the clean modality is (almost) a linear image of the same factors: low rank
    sv_clean = np.linalg.svd(ds.features["clean"], compute_uv=False)
    sv_noisy = np.linalg.svd(ds.features["noisy"], compute_uv=False)
    assert sv_clean[8:].sum() / sv_clean.sum() < 0.1
    assert sv_noisy[8:].sum() / sv_noisy.sum() > 0.3
    assert (ds.train.nnz, ds.valid.nnz, ds.test.nnz) == (50 * 16, 50 * 2, 50 * 2)


def test_synthetic_is_deterministic():
    a, b = make_synthetic(seed=4), make_synthetic(seed=4)
    assert (a.train != b.train).nnz == 0
    np.testing.assert_array_equal(a.features["image"], b.features["image"])
