"""MF-BPR (Rendle et al., UAI'09): ŷ_ui = ⟨p_u, q_i⟩ + b_i trained with the BPR loss.

The item bias b_i is on by default, as in MyMediaLite's BPR-MF (Rendle's reference
implementation): without it a factorisation spends capacity on popularity and loses to the
popularity baseline on very sparse data such as TikTok.  ``item_bias: false`` gives the
bias-free form.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from pydantic import Field
from torch import Tensor, nn

from mmrobust.data import Dataset
from mmrobust.models.base import (
    Batch,
    Embeddings,
    ModelConfig,
    Recommender,
    bpr_loss,
    dot,
    l2_reg,
    rows,
    xavier_parameter,
)


class MFConfig(ModelConfig):
    reg_weight: float = Field(0.1, ge=0, description="L2 weight on the batch's p_u, "
                                                     "q_i, q_j, b (tuned on validation)")
    item_bias: bool = Field(True, description="learn an item bias b_i (MyMediaLite BPR-MF)")


class MF(Recommender):
    name = "mf"
    Config = MFConfig

    def __init__(self, dataset: Dataset, config: MFConfig | None = None):
        super().__init__(dataset, config or MFConfig())
        d = self.config.embedding_size
        self.user_emb = xavier_parameter(self.n_users, d)
        self.item_emb = xavier_parameter(self.n_items, d)
        self.item_bias = nn.Parameter(torch.zeros(self.n_items)) if self.config.item_bias else None

    def _vectors(self) -> tuple[Tensor, Tensor]:
        if self.item_bias is None:
            return self.user_emb, self.item_emb
        ones = torch.ones(self.n_users, 1, device=self.user_emb.device)
        return (torch.cat([self.user_emb, ones], 1),
                torch.cat([self.item_emb, self.item_bias.unsqueeze(1)], 1))

    def embed(self, features: Mapping[str, Tensor],
              embedding_delta: Mapping[str, Tensor] | None = None) -> Embeddings:
        user, item = self._vectors()
        return Embeddings(user, item, {})

    def score(self, features, users, items, embedding_delta=None) -> Tensor:
        out = dot(rows(self.user_emb, users), rows(self.item_emb, items))
        return out if self.item_bias is None else out + rows(self.item_bias, items)

    def loss(self, batch: Batch, features: Mapping[str, Tensor]) -> Tensor:
        pos = self.score(features, batch.users, batch.pos)
        neg = self.score(features, batch.users, batch.neg)
        tensors = [rows(self.user_emb, batch.users), rows(self.item_emb, batch.pos),
                   rows(self.item_emb, batch.neg)]
        if self.item_bias is not None:
            tensors += [rows(self.item_bias, batch.pos), rows(self.item_bias, batch.neg)]
        return bpr_loss(pos, neg) + self.config.reg_weight * l2_reg(*tensors)
