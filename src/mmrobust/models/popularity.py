"""Popularity baseline: every user gets items ranked by their number of training interactions."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from mmrobust.data import Dataset
from mmrobust.models.base import Embeddings, ModelConfig, Recommender


class PopularityConfig(ModelConfig):
    pass


class Popularity(Recommender):
    """ŷ_ui = number of training interactions of item i (no parameters, no training)."""

    name = "pop"
    Config = PopularityConfig
    trainable = False

    def __init__(self, dataset: Dataset, config: PopularityConfig | None = None):
        super().__init__(dataset, config or PopularityConfig())
        counts = torch.as_tensor(dataset.item_popularity(), dtype=torch.float32)
        self.register_buffer("counts", counts.unsqueeze(1))
        self.register_buffer("ones", torch.ones(dataset.n_users, 1))

    def embed(self, features: Mapping[str, Tensor],
              embedding_delta: Mapping[str, Tensor] | None = None) -> Embeddings:
        return Embeddings(self.ones, self.counts, {})

    def loss(self, batch, features):  # pragma: no cover - guarded by the trainer
        raise RuntimeError("the popularity baseline has nothing to train")
