"""Uniform negative sampling: the one rejection sampler, and vectorised BPR triples built on it."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from mmrobust.data.errors import DataError


def interaction_keys(matrix: sp.spmatrix) -> np.ndarray:
    """The sorted keys ``user * n_items + item`` of the stored entries of ``matrix``."""
    coo = matrix.tocoo()
    return np.sort(coo.row.astype(np.int64) * matrix.shape[1] + coo.col.astype(np.int64))


def is_interaction(keys: np.ndarray, n_items: int, users: np.ndarray,
                   items: np.ndarray) -> np.ndarray:
    """Whether each (user, item) pair is among the
    sorted ``keys`` (see :func:`interaction_keys`)."""
    query = users * n_items + items
    idx = np.minimum(np.searchsorted(keys, query), len(keys) - 1)
    return keys[idx] == query


def sample_negatives(keys: np.ndarray, n_items: int, users: np.ndarray,
                     rng: np.random.Generator) -> np.ndarray:
    """One item per entry of ``users``, uniform among the items that user has no key for.

    Draws ``len(users)`` items at once, then re-draws the colliding entries in vectorised
    rounds (no Python loop per draw), in this fixed order, so a seed gives the same items
    whoever calls it.  Every user must have at least one free item (callers check), or this
    never ends.
    """
    neg = rng.integers(0, n_items, size=len(users))
    redo = np.flatnonzero(is_interaction(keys, n_items, users, neg))
    while len(redo):
        neg[redo] = rng.integers(0, n_items, size=len(redo))
        redo = redo[is_interaction(keys, n_items, users[redo], neg[redo])]
    return neg


class BPRSampler:
    """Yields, per epoch, shuffled (user, positive, negative) arrays.

    Negatives are uniform over items the user has no interaction with in the given matrix
    (:func:`sample_negatives`).  Epoch ``e`` uses the generator seeded by ``(seed, e)``, so a
    resumed run samples exactly what an uninterrupted one would.
    """

    def __init__(self, train: sp.csr_matrix, seed: int = 0):
        train = sp.csr_matrix(train)
        self.n_users, self.n_items = train.shape
        full = np.flatnonzero(train.getnnz(axis=1) >= self.n_items)
        if len(full):
            raise DataError(f"user {int(full[0])} has interacted with every item, "
                            "so no negative can be sampled")
        coo = train.tocoo()
        self.users = coo.row.astype(np.int64)
        self.pos = coo.col.astype(np.int64)
        self._keys = np.sort(self.users * self.n_items + self.pos)
        self.seed = seed

    def __len__(self) -> int:
        return len(self.users)

    def is_positive(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return is_interaction(self._keys, self.n_items, users, items)

    def sample_negatives(self, users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return sample_negatives(self._keys, self.n_items, users, rng)

    def epoch(self, epoch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self.users))
        users, pos = self.users[order], self.pos[order]
        return users, pos, self.sample_negatives(users, rng)
