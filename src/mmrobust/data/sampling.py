"""Vectorised BPR triple sampling: one uniform negative per training positive."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from mmrobust.data.errors import DataError


class BPRSampler:
    """Yields, per epoch, shuffled (user, positive, negative) arrays.

    Negatives are uniform over items the user has no training interaction with; collisions
    are re-drawn in vectorised rounds (no Python loop per triple).  Epoch ``e`` uses the
    generator seeded by ``(seed, e)``, so a resumed run samples exactly what an
    uninterrupted one would.
    """

    def __init__(self, train: sp.csr_matrix, seed: int = 0):
        train = sp.csr_matrix(train)
        self.n_users, self.n_items = train.shape
        full = np.flatnonzero(train.getnnz(axis=1) >= self.n_items)
        if len(full):
            raise DataError(f"user {int(full[0])} has interacted with every item, so no negative can be sampled")
        coo = train.tocoo()
        self.users = coo.row.astype(np.int64)
        self.pos = coo.col.astype(np.int64)
        self._keys = np.sort(self.users * self.n_items + self.pos)
        self.seed = seed

    def __len__(self) -> int:
        return len(self.users)

    def is_positive(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        keys = users * self.n_items + items
        idx = np.minimum(np.searchsorted(self._keys, keys), len(self._keys) - 1)
        return self._keys[idx] == keys

    def sample_negatives(self, users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        neg = rng.integers(0, self.n_items, size=len(users))
        redo = np.flatnonzero(self.is_positive(users, neg))
        while len(redo):
            neg[redo] = rng.integers(0, self.n_items, size=len(redo))
            redo = redo[self.is_positive(users[redo], neg[redo])]
        return neg

    def epoch(self, epoch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self.users))
        users, pos = self.users[order], self.pos[order]
        return users, pos, self.sample_negatives(users, rng)
