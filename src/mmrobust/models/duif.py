"""DUIF (Geng et al., ICCV'15, "Learning Image and User Features for Recommendation in Social
Networks"), in the form the AMR paper (Tang et al., TKDE'19) uses as a baseline: MF whose item
embedding is replaced by a linear projection of the item's content features, trained with BPR.

User vector p_u ∈ R^d; item vector q_i = E · concat_m(x_{m,i}) with E ∈ R^{d × Σ_m D_m} and
no item ID embedding, so ŷ_ui = ⟨p_u, E x_i⟩.  Writing E = [E_1 … E_M] by the blocks that read
each modality (as VBPR's W), ŷ_ui = Σ_m ⟨p_u, E_m x_{m,i}⟩: s^m_ui = ⟨p_u, E_m x_{m,i}⟩ exactly
and s^rest = 0.  g^m(x) = E_m x is modality m's item encoder.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from pydantic import Field
from torch import Tensor

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


class DUIFConfig(MultimodalConfig):
    reg_weight: float = Field(1e-4, ge=0, description="L2 weight on the batch's p_u, "
                                                      "q_i, q_j (project default as "
                                                      "VBPR; AMR paper grid 0…1)")


class DUIF(LinearContent, Recommender):
    """ŷ_ui = ⟨p_u, Σ_m E_m x_{m,i}⟩.  The AMR paper trained it with Adagrad (batch 512, lr tuned in
    {0.005, 0.01, 0.05, 0.1}, L2 in {0, 1e-6, 1e-4, 1e-2, 1}, d = 64) and reports no chosen lr; here
    the trainer's Adam (lr 1e-3) is the default."""

    name = "duif"
    Config = DUIFConfig
    feature_route = "direct"
    route_note = ("the item vector is E_m x_m summed over modalities, so features pass linearly "
                  "straight into the score")
    item_local = True

    def __init__(self, dataset: Dataset, config: DUIFConfig | None = None):
        super().__init__(dataset, config or DUIFConfig())
        d = self.config.embedding_size
        self.user_emb = xavier_parameter(self.n_users, d)
        self.W = xavier_parameter(d, sum(self.feature_dims.values()))  # the paper's E
        self._init_blocks()

    def embed(self, features: Mapping[str, Tensor],
              embedding_delta: Mapping[str, Tensor] | None = None) -> Embeddings:
        self.check_inputs(features, embedding_delta)
        parts = self._content(features, None, embedding_delta)
        item = sum(parts.values(), torch.zeros((), device=self.user_emb.device))
        return Embeddings(self.user_emb, item, {m: (self.user_emb, e) for m, e in parts.items()})

    def _item_vectors(self, features: Mapping[str, Tensor], items: Tensor,
                      embedding_delta: Mapping[str, Tensor] | None = None) -> Tensor:
        """q_i for a batch of item indices (each distinct item encoded once)."""
        uniq, inverse = torch.unique(items, return_inverse=True)
        return rows(sum(self._content(features, uniq, embedding_delta).values()), inverse)

    def score(self, features, users, items, embedding_delta=None) -> Tensor:
        self.check_inputs(features, embedding_delta)
        return dot(rows(self.user_emb, users), self._item_vectors(features, items, embedding_delta))

    def loss(self, batch: Batch, features: Mapping[str, Tensor]) -> Tensor:
        vectors = self._item_vectors(features, torch.cat([batch.pos, batch.neg]))
        i, j = vectors[: len(batch)], vectors[len(batch):]
        u = rows(self.user_emb, batch.users)
        return bpr_loss(dot(u, i), dot(u, j)) + self.config.reg_weight * l2_reg(u, i, j)
