"""The in-memory dataset: interaction splits as sparse matrices plus item features by modality."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from mmrobust.data.errors import DataError
from mmrobust.errors import UserError

SPLITS = ("train", "valid", "test")


def _binary_csr(users: np.ndarray, items: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    data = np.ones(len(users), dtype=np.float32)
    matrix = sp.csr_matrix((data, (users, items)), shape=shape, dtype=np.float32)
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    return matrix


@dataclass
class Dataset:
    """Train/valid/test interactions (binary CSR, users × items) and item features.

    ``features[m]`` is a float32 array with one row per item for modality ``m``
    (e.g. ``image``, ``text``, ``audio``).  Build one with :meth:`from_interactions`,
    :func:`mmrobust.data.load_dataset` or :func:`mmrobust.data.make_synthetic`.
    """

    name: str
    n_users: int
    n_items: int
    train: sp.csr_matrix
    valid: sp.csr_matrix
    test: sp.csr_matrix
    features: dict[str, np.ndarray] = field(default_factory=dict)
    source: Path | None = None

    @classmethod
    def from_interactions(
        cls,
        name: str,
        users: np.ndarray,
        items: np.ndarray,
        labels: np.ndarray,
        n_users: int,
        n_items: int,
        features: dict[str, np.ndarray] | None = None,
        source: Path | None = None,
    ) -> Dataset:
        """Build a dataset from interaction arrays with split labels 0/1/2 (train/valid/test).

        Duplicate (user, item) pairs are dropped with a warning, keeping the earliest split
        so that no pair is both trained on and evaluated; valid/test interactions of users
        with no training interaction are dropped, as MMRec does.
        """
        users, items, labels = (np.asarray(a, dtype=np.int64) for a in (users, items, labels))
        users, items, labels = _drop_duplicates(name, users, items, labels)
        matrices = {}
        for code, split in enumerate(SPLITS):
            mask = labels == code
            matrices[split] = _binary_csr(users[mask], items[mask], (n_users, n_items))
        if matrices["train"].nnz == 0:
            raise DataError(f"dataset '{name}' has an empty train "
                            "split (no interaction with x_label 0)")
        has_train = np.asarray(matrices["train"].getnnz(axis=1) > 0)
        for split in ("valid", "test"):
            keep = sp.diags(has_train.astype(np.float32))
            matrices[split] = sp.csr_matrix(keep @ matrices[split])
            matrices[split].eliminate_zeros()
        ds = cls(name, n_users, n_items, matrices["train"], matrices["valid"], matrices["test"],
                 dict(features or {}), source)
        ds.validate_features()
        return ds

    # ----------------------------------------------------------------- access
    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.features)

    def split(self, name: str) -> sp.csr_matrix:
        if name not in SPLITS:
            raise UserError(f"unknown split '{name}'; use one of {', '.join(SPLITS)}")
        return getattr(self, name)

    def feature_dims(self) -> dict[str, int]:
        return {m: int(x.shape[1]) for m, x in self.features.items()}

    def feature_tensors(
        self, device: str | torch.device = "cpu",
        modalities: tuple[str, ...] | list[str] | None = None
    ) -> dict[str, torch.Tensor]:
        """Features as float32 tensors on ``device`` (all modalities unless a subset is named)."""
        names = self.modalities if modalities is None else tuple(modalities)
        missing = [m for m in names if m not in self.features]
        if missing:
            raise DataError(
                f"dataset '{self.name}' has no modality {', '.join(missing)}; "
                f"it has {', '.join(self.modalities) or 'none'}"
            )
        return {m: torch.as_tensor(self.features[m], dtype=torch.float32, device=device)
                for m in names}

    def interacted(self) -> sp.csr_matrix:
        """Every known interaction, train + valid + test, as one binary CSR matrix.

        Built once per combination of split matrices (re-assigning ``train``, ``valid`` or
        ``test`` rebuilds it) and never pickled, so a dataset shipped to a Ray worker stays
        as small as before.  Treat it as read-only: it is shared by every caller.
        """
        splits = (self.train, self.valid, self.test)
        cached = self.__dict__.get("_interacted")
        if cached is None or any(a is not b for a, b in zip(cached[0], splits, strict=True)):
            cached = (splits, (self.train + self.valid + self.test).tocsr())
            self.__dict__["_interacted"] = cached
        return cached[1]

    def __getstate__(self) -> dict[str, object]:
        state = dict(self.__dict__)
        state.pop("_interacted", None)  # a cache: rebuilt on demand after unpickling
        return state

    def item_popularity(self) -> np.ndarray:
        """Number of training interactions per item."""
        return np.asarray(self.train.getnnz(axis=0), dtype=np.int64)

    def with_features(self, features: dict[str, np.ndarray], name: str | None = None) -> Dataset:
        """A copy sharing the interactions but with other item features (validated)."""
        ds = Dataset(name or self.name, self.n_users, self.n_items, self.train, self.valid,
                     self.test, dict(features), self.source)
        ds.validate_features()
        return ds

    # ------------------------------------------------------------- validation
    def validate_features(self) -> None:
        for modality, x in self.features.items():
            what = f"feature matrix '{modality}'"
            self.features[modality] = check_feature_array(x, what, self.n_items)

    # ---------------------------------------------------------------- summary
    def summary(self) -> dict[str, object]:
        counts = {s: int(self.split(s).nnz) for s in SPLITS}
        total = sum(counts.values())
        active_users = int((self.train.getnnz(axis=1) > 0).sum())
        return {
            "name": self.name,
            "users": self.n_users,
            "items": self.n_items,
            "interactions": total,
            **{f"{s}_interactions": c for s, c in counts.items()},
            "users_with_train": active_users,
            "items_without_train": int((self.item_popularity() == 0).sum()),
            "density": total / max(1, self.n_users * self.n_items),
            "avg_train_per_user": counts["train"] / max(1, active_users),
            "modalities": {m: int(x.shape[1]) for m, x in self.features.items()},
            "source": str(self.source) if self.source else None,
        }

    def __repr__(self) -> str:
        dims = ", ".join(f"{m}:{d}" for m, d in self.feature_dims().items()) or "no features"
        return (f"Dataset('{self.name}', users={self.n_users}, items={self.n_items}, "
                f"train={self.train.nnz}, valid={self.valid.nnz}, test={self.test.nnz}, {dims})")


def check_feature_array(x: object, what: str, n_items: int | None = None) -> np.ndarray:
    """Return ``x`` as a 2-D finite float32 array or raise one clear :class:`DataError`."""
    arr = np.asarray(x)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise DataError(f"{what} is not numeric (dtype {arr.dtype}); "
                        "features must be a numeric array")
    if arr.ndim != 2:
        raise DataError(f"{what} must be 2-D (items × dims) but has shape {arr.shape}")
    if n_items is not None and arr.shape[0] != n_items:
        raise DataError(f"{what} has {arr.shape[0]} rows but the dataset "
                        f"has {n_items} items; it needs one row per item")
    arr = arr.astype(np.float32, copy=False)
    bad = ~np.isfinite(arr)
    if bad.any():
        row = int(np.argwhere(bad)[0, 0])
        raise DataError(f"{what} contains {int(bad.sum())} NaN/inf values "
                        f"(first in row {row}); features must be finite")
    return arr


def _drop_duplicates(name: str, users: np.ndarray, items: np.ndarray, labels: np.ndarray):
    order = np.lexsort((np.arange(len(users)), labels, items, users))
    u, i = users[order], items[order]
    first = np.ones(len(u), dtype=bool)
    first[1:] = (u[1:] != u[:-1]) | (i[1:] != i[:-1])
    n_dup = int((~first).sum())
    if n_dup:
        warnings.warn(f"dataset '{name}': dropped {n_dup} duplicate (user, "
                      "item) interactions, keeping the earliest split",
                      stacklevel=3)
    keep = np.sort(order[first])
    return users[keep], items[keep], labels[keep]
