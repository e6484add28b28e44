"""LightGCN (He et al., SIGIR'20): E^{(k+1)} = Â E^{(k)}, Â = D^{-1/2} A D^{-1/2} on the
user–item graph; final embeddings are the mean of layers 0..L (Eq. 7–8 of the paper)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from pydantic import Field
from torch import Tensor

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
from mmrobust.models.graph import bipartite_adjacency, sym_normalize, sym_spmm, to_torch_csr


class LightGCNConfig(ModelConfig):
    n_layers: int = Field(3, ge=0, description="propagation layers L (paper default 3)")


class LightGCN(Recommender):
    name = "lightgcn"
    Config = LightGCNConfig

    def __init__(self, dataset: Dataset, config: LightGCNConfig | None = None):
        super().__init__(dataset, config or LightGCNConfig())
        d = self.config.embedding_size
        self.user_emb = xavier_parameter(self.n_users, d)
        self.item_emb = xavier_parameter(self.n_items, d)
        self.register_buffer("adj", to_torch_csr(sym_normalize(bipartite_adjacency(dataset.train))),
                             persistent=False)

    def propagate(self) -> tuple[Tensor, Tensor]:
        ego = torch.cat([self.user_emb, self.item_emb], 0)
        total, layer = ego, ego
        for _ in range(self.config.n_layers):
            layer = sym_spmm(self.adj, layer)
            total = total + layer
        out = total / (self.config.n_layers + 1)
        return out[: self.n_users], out[self.n_users:]

    def embed(self, features: Mapping[str, Tensor],
              embedding_delta: Mapping[str, Tensor] | None = None) -> Embeddings:
        user, item = self.propagate()
        return Embeddings(user, item, {})

    def loss(self, batch: Batch, features: Mapping[str, Tensor]) -> Tensor:
        user, item = self.propagate()
        u, i, j = rows(user, batch.users), rows(item, batch.pos), rows(item, batch.neg)
        reg = l2_reg(rows(self.user_emb, batch.users), rows(self.item_emb, batch.pos),
                     rows(self.item_emb, batch.neg))
        return bpr_loss(dot(u, i), dot(u, j)) + self.config.reg_weight * reg
