"""VBPR (He & McAuley, AAAI'16) in MMRec's form, without biases.

User vector [γ_u ; θ_u] ∈ R^{2d}; item vector [γ_i ; W · concat_m(x_{m,i})] with
W ∈ R^{d × Σ_m D_m}.  Writing W = [W_1 … W_M] by the blocks that read each modality,
ŷ_ui = ⟨γ_u, γ_i⟩ + Σ_m ⟨θ_u, W_m x_{m,i}⟩, so s^m_ui = ⟨θ_u, W_m x_{m,i}⟩ exactly,
s^rest_ui = ⟨γ_u, γ_i⟩, and g^m(x) = W_m x is modality m's item encoder.
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
    MultimodalConfig,
    Recommender,
    bpr_loss,
    dot,
    l2_reg,
    rows,
    xavier_parameter,
)
from mmrobust.models.content import LinearContent


class VBPRConfig(MultimodalConfig):
    reg_weight: float = Field(1e-4, ge=0, description="L2 weight on the batch's user/item "
                                                      "vectors (MMRec grid 1e-5…2)")
    item_bias: bool = Field(True, description="the original paper's item bias β_i, part "
                                              "of the ID score (false: MMRec's form)")


class VBPR(LinearContent, Recommender):
    name = "vbpr"
    Config = VBPRConfig
    feature_route = "direct"
    route_note = "features pass through W_m straight into the score"
    item_local = True

    def __init__(self, dataset: Dataset, config: VBPRConfig | None = None):
        super().__init__(dataset, config or VBPRConfig())
        d = self.config.embedding_size
        self.user_emb = xavier_parameter(self.n_users, 2 * d)
        self.item_emb = xavier_parameter(self.n_items, d)
        self.item_bias = nn.Parameter(torch.zeros(self.n_items)) if self.config.item_bias else None
        width = sum(self.feature_dims.values())
        self.W = nn.Parameter(nn.init.xavier_uniform_(torch.empty(d, width)))
        self._init_blocks()

    def embed(self, features: Mapping[str, Tensor],
              embedding_delta: Mapping[str, Tensor] | None = None) -> Embeddings:
        self.check_inputs(features, embedding_delta)
        d = self.config.embedding_size
        parts = self._content(features, None, embedding_delta)
        item = torch.cat([self.item_emb, sum(parts.values())] + self._bias(None), 1)
        theta = self.user_emb[:, d:]
        return Embeddings(self._user_vectors(self.user_emb), item,
                          {m: (theta, e) for m, e in parts.items()})

    def _bias(self, items: Tensor | None) -> list[Tensor]:
        if self.item_bias is None:
            return []
        return [(self.item_bias if items is None else rows(self.item_bias, items)).unsqueeze(1)]

    def _user_vectors(self, user: Tensor) -> Tensor:
        """[γ_u ; θ_u] (and a constant 1 that reads the item bias, when there is one)."""
        if self.item_bias is None:
            return user
        return torch.cat([user, torch.ones(user.shape[0], 1, device=user.device, dtype=user.dtype)],
                         1)

    def _item_vectors(self, features, items: Tensor, embedding_delta=None) -> Tensor:
        uniq, inverse = torch.unique(items, return_inverse=True)
        content = sum(self._content(features, uniq, embedding_delta).values())
        return rows(torch.cat([rows(self.item_emb, uniq), content] + self._bias(uniq), 1), inverse)

    def score(self, features, users, items, embedding_delta=None) -> Tensor:
        return dot(self._user_vectors(rows(self.user_emb, users)),
                   self._item_vectors(features, items, embedding_delta))

    def _batch_vectors(self, features, batch: Batch,
                       embedding_delta=None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        vectors = self._item_vectors(features, torch.cat([batch.pos, batch.neg]), embedding_delta)
        user = rows(self.user_emb, batch.users)
        return user, self._user_vectors(user), vectors[: len(batch)], vectors[len(batch):]

    def bpr_scores(self, features, batch: Batch, embedding_delta=None) -> tuple[Tensor, Tensor]:
        _, u, i, j = self._batch_vectors(features, batch, embedding_delta)
        return dot(u, i), dot(u, j)

    def loss(self, batch: Batch, features: Mapping[str, Tensor]) -> Tensor:
        user, u, i, j = self._batch_vectors(features, batch)
        return bpr_loss(dot(u, i), dot(u, j)) + self.config.reg_weight * l2_reg(user, i, j)
