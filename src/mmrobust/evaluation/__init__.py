"""Evaluation layer: ranking metrics and protocols, robustness under attack, promotion
metrics, and the modality-imbalance and gradient-mismatch analyses."""

from mmrobust.evaluation.metrics import (
    DEFAULT_KS,
    METRIC_NAMES,
    per_user_topk_metrics,
    sampled_metrics,
)
from mmrobust.evaluation.ranking import (
    compute_embeddings,
    evaluate,
    evaluate_per_user,
    evaluate_sampled,
    excluded_items,
    topk_items,
)

__all__ = [
    "DEFAULT_KS",
    "METRIC_NAMES",
    "compute_embeddings",
    "evaluate",
    "evaluate_per_user",
    "evaluate_sampled",
    "excluded_items",
    "per_user_topk_metrics",
    "sampled_metrics",
    "topk_items",
]
