"""Full-ranking evaluation (METHODS.md §1), batched over users with bounded memory.

Every item is scored for each evaluated user; the user's training items (and validation
items when scoring the test split) are set to −∞; the top-K are compared with the split's
held-out items.  The feature dict is an argument, so clean and perturbed evaluation are
one code path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from mmrobust.data import Dataset
from mmrobust.data.sampling import interaction_keys, sample_negatives
from mmrobust.errors import UserError
from mmrobust.evaluation.metrics import DEFAULT_KS, per_user_topk_metrics, sampled_metrics
from mmrobust.models import Embeddings, Recommender


def excluded_items(dataset: Dataset, split: str) -> sp.csr_matrix:
    """Items never recommended when scoring ``split``: train items, plus valid items for test."""
    if split == "train":
        raise UserError("evaluating on the train split is not "
                         "meaningful: its items are the ones masked")
    mask = dataset.train
    if split == "test":
        mask = (mask + dataset.valid).tocsr()
    return mask


def _rows_to_index(matrix: sp.csr_matrix, rows: np.ndarray,
                   device: torch.device) -> tuple[Tensor, Tensor]:
    sub = matrix[rows]
    row = np.repeat(np.arange(len(rows)), np.diff(sub.indptr))
    cols = torch.from_numpy(sub.indices.astype(np.int64)).to(device)
    return torch.from_numpy(row).to(device), cols


@torch.no_grad()
def compute_embeddings(model: Recommender, dataset: Dataset,
                       features: Mapping[str, Tensor] | None = None,
                       embedding_delta: Mapping[str, Tensor] | None = None) -> Embeddings:
    was_training = model.training
    model.eval()
    try:
        feats = (features if features is not None
                 else dataset.feature_tensors(model.device, model.modalities))
        return model.embed(feats, embedding_delta)
    finally:
        model.train(was_training)


def _masked_topk(emb: Embeddings, mask: sp.csr_matrix, rows: np.ndarray, k: int) -> Tensor:
    device = emb.user.device
    scores = emb.full_scores(torch.from_numpy(rows).to(device)).float()
    r, c = _rows_to_index(mask, rows, device)
    scores[r, c] = -torch.inf
    return torch.topk(scores, k, dim=1).indices


def topk_items(emb: Embeddings, dataset: Dataset, users: np.ndarray, k: int, split: str = "test",
               batch_size: int = 4096) -> Tensor:
    """Top-``k`` item ids [len(users), k] with the split's excluded items masked."""
    mask = excluded_items(dataset, split)
    out = [_masked_topk(emb, mask, users[s:s + batch_size], k)
           for s in range(0, len(users), batch_size)]
    return torch.cat(out) if out else torch.empty(0, k, dtype=torch.long, device=emb.user.device)


def evaluate_per_user(model: Recommender, dataset: Dataset, split: str = "test",
                      features: Mapping[str, Tensor] | None = None, ks: Sequence[int] = DEFAULT_KS,
                      batch_size: int = 4096, embedding_delta: Mapping[str, Tensor] | None = None,
                      ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(evaluated users, {``metric@K``: per-user values}) for every user with items in ``split``."""
    emb = compute_embeddings(model, dataset, features, embedding_delta)
    target = dataset.split(split)
    users = np.flatnonzero(target.getnnz(axis=1) > 0)
    if len(users) == 0:
        raise UserError(f"dataset '{dataset.name}' has no interactions "
                         f"in the {split} split to evaluate")
    kmax = min(max(ks), dataset.n_items)
    device = emb.user.device
    mask = excluded_items(dataset, split)
    chunks: dict[str, list[Tensor]] = {}
    for start in range(0, len(users), batch_size):
        rows = users[start:start + batch_size]
        top = _masked_topk(emb, mask, rows, kmax)
        r, c = _rows_to_index(target, rows, device)
        relevant = torch.zeros(len(rows), dataset.n_items, dtype=torch.bool, device=device)
        relevant[r, c] = True
        hits = relevant.gather(1, top)
        n_pos = torch.from_numpy(np.diff(target[rows].indptr)).to(device)
        for key, values in per_user_topk_metrics(hits, n_pos, ks).items():
            chunks.setdefault(key, []).append(values.cpu())
    return users, {k: torch.cat(v).numpy() for k, v in chunks.items()}


def evaluate(model: Recommender, dataset: Dataset, split: str = "test",
             features: Mapping[str, Tensor] | None = None,
             ks: Sequence[int] = DEFAULT_KS, batch_size: int = 4096,
             embedding_delta: Mapping[str, Tensor] | None = None) -> dict[str, float]:
    """Mean Recall/NDCG/Precision/MAP/HR@K over the users of ``split`` (full ranking)."""
    _, per_user = evaluate_per_user(model, dataset, split, features, ks, batch_size,
                                    embedding_delta)
    return {key: float(values.mean()) for key, values in per_user.items()}


def sample_negatives_excluding(interacted: sp.csr_matrix, users: np.ndarray, n: int,
                               rng: np.random.Generator) -> np.ndarray:
    """[len(users), n] items drawn uniformly among those ``users`` never interacted with.

    Row-major, this is :func:`mmrobust.data.sampling.sample_negatives` for each user repeated
    ``n`` times (``rng.integers`` fills a [U, n] array with the same draws as a flat one).
    """
    return _negatives(interaction_keys(interacted), interacted.shape[1], users, n, rng)


def _negatives(keys: np.ndarray, n_items: int, users: np.ndarray, n: int,
               rng: np.random.Generator) -> np.ndarray:
    return sample_negatives(keys, n_items, np.repeat(users, n), rng).reshape(len(users), n)


def evaluate_sampled(model: Recommender, dataset: Dataset, split: str = "test",
                     features: Mapping[str, Tensor] | None = None, ks: Sequence[int] = DEFAULT_KS,
                     n_negatives: int = 999, seed: int = 0, batch_size: int = 1024,
                     embedding_delta: Mapping[str, Tensor] | None = None) -> dict[str, float]:
    """Sampled protocol (AMR paper): each held-out (u, i) is ranked against ``n_negatives``
    items u never interacted with; HR@K and NDCG@K averaged over held-out pairs."""
    emb = compute_embeddings(model, dataset, features, embedding_delta)
    interacted = dataset.interacted()
    free = dataset.n_items - interacted.getnnz(axis=1)
    cases = dataset.split(split).tocoo()
    if cases.nnz == 0:
        raise UserError(f"dataset '{dataset.name}' has no interactions "
                         f"in the {split} split to evaluate")
    if (free[cases.row] < n_negatives).any():
        raise UserError(f"some users have fewer than {n_negatives} "
                         "non-interacted items; lower n_negatives")
    keys = interaction_keys(interacted)
    rng = np.random.default_rng(seed)
    device = emb.user.device
    sums: dict[str, float] = {}
    for start in range(0, cases.nnz, batch_size):
        u = cases.row[start:start + batch_size].astype(np.int64)
        i = cases.col[start:start + batch_size].astype(np.int64)
        neg = torch.from_numpy(_negatives(keys, dataset.n_items, u, n_negatives, rng)).to(device)
        scores = emb.full_scores(torch.from_numpy(u).to(device))
        pos_scores = scores.gather(1, torch.from_numpy(i).to(device).unsqueeze(1))
        rank = (scores.gather(1, neg) >= pos_scores).sum(1)
        for key, values in sampled_metrics(rank, ks).items():
            sums[key] = sums.get(key, 0.0) + float(values.sum())
    return {key: total / cases.nnz for key, total in sums.items()}
