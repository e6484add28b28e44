"""Top-K metrics from a hit matrix (METHODS.md §1), per user.

``hits[u, r]`` is 1 when the item ranked r+1 for user u is relevant; ``n_pos[u]`` is the
number of relevant items of u.  With binary gains:

* Recall@K = hits@K / n_pos;  Precision@K = hits@K / K;  HR@K = 1[hits@K > 0]
* NDCG@K = Σ_{r≤K} hit_r / log2(r+1)  /  Σ_{r≤min(n_pos,K)} 1 / log2(r+1)
* MAP@K = Σ_{r≤K} P@r · hit_r / min(n_pos, K)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

DEFAULT_KS = (5, 10, 20, 50)
METRIC_NAMES = ("recall", "ndcg", "precision", "map", "hr")


def per_user_topk_metrics(hits: Tensor, n_pos: Tensor,
                          ks: Sequence[int] = DEFAULT_KS) -> dict[str, Tensor]:
    """{``name@K``: tensor[B]} for every metric and K; ``hits`` is [B, ≥max(ks)]."""
    hits = hits.to(torch.float64)
    n_pos = n_pos.to(torch.float64)
    ranks = torch.arange(1, hits.shape[1] + 1, device=hits.device, dtype=torch.float64)
    discounts = 1.0 / torch.log2(ranks + 1.0)
    cum_hits = hits.cumsum(1)
    cum_dcg = (hits * discounts).cumsum(1)
    cum_idcg = discounts.cumsum(0)
    cum_ap = (cum_hits / ranks * hits).cumsum(1)
    out: dict[str, Tensor] = {}
    for k in ks:
        if k > hits.shape[1]:
            raise ValueError(f"K={k} exceeds the {hits.shape[1]} ranked items available")
        h = cum_hits[:, k - 1]
        ideal = torch.clamp(n_pos, max=k).long()
        out[f"recall@{k}"] = h / n_pos
        out[f"ndcg@{k}"] = cum_dcg[:, k - 1] / cum_idcg[ideal - 1]
        out[f"precision@{k}"] = h / k
        out[f"map@{k}"] = cum_ap[:, k - 1] / ideal
        out[f"hr@{k}"] = (h > 0).to(torch.float64)
    return out


def sampled_metrics(rank: Tensor, ks: Sequence[int] = DEFAULT_KS) -> dict[str, Tensor]:
    """Sampled protocol: rank = #negatives scoring ≥ the positive; HR@K = 1[rank < K],
    NDCG@K = 1[rank < K] · log 2 / log(rank + 2)."""
    rank = rank.to(torch.float64)
    out: dict[str, Tensor] = {}
    for k in ks:
        hit = (rank < k).to(torch.float64)
        out[f"hr@{k}"] = hit
        out[f"ndcg@{k}"] = hit / torch.log2(rank + 2.0)
    return out
