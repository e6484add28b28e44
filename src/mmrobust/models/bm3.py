"""BM3 (Zhou, Zhou, Zhang, Sun, Miao, Li, WWW'23, "Bootstrap Latent Representations for
Multi-modal Recommendation"), after MMRec's ``src/models/bm3.py`` and ``BM3.yaml`` (read,
not copied).

Online representations: LightGCN on ID embeddings, h = mean_{l=0..L} Â^l [E_u; E_i], then
h_u and h_i = h_i + E_i (the item ID embedding added once more, as MMRec), and per modality
f^m_i = g^m(x_m,i) = W_m x_m,i + b_m.  A shared predictor p(z) = P z + c.
Targets are the online vectors detached and passed through dropout (rate r): t = drop(sg(·)).
For a batch of (user u, positive item i) pairs, with C(a, b) = 1 − mean cos(a, b):
    L = C(p(h_u), t(h_i)) + C(p(h_i), t(h_u))                                  (graph view)
      + λ_cl · Σ_m [ C(p(f^m_i), t(h_i))  (inter-modality)  + C(p(f^m_i), t(f^m_i))  (intra) ]
      + λ_reg · (‖H_u‖_F + ‖H_i‖_F) / n_items                                     (MMRec's EmbLoss)
with H_u, H_i the full online tables.  No negative sampling: the batch's ``neg`` is unused.

Inference (MMRec's full_sort_predict): ŷ_ui = ⟨p(h_u), p(h_i)⟩, which reads no feature, so
the features shape only the training loss: feature_route ``training-only`` and no score parts.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from mmrobust.data import Dataset
from mmrobust.models.base import (
    Batch,
    Embeddings,
    MultimodalConfig,
    Recommender,
    rows,
    xavier_parameter,
)
from mmrobust.models.graph import bipartite_adjacency, sym_normalize, sym_spmm, to_torch_csr


class BM3Config(MultimodalConfig):
    reg_weight: float = Field(0.1, ge=0, description="λ_reg on (‖H_u‖_F + ‖H_i‖_F)/n_items (MMRec "
                                                     "grid [0.1, 0.01]; authors' best on Baby 0.1)")
    n_layers: int = Field(1, ge=0, description="LightGCN layers L (MMRec grid [1, "
                                               "2]; authors' best on Baby/Sports 1)")
    dropout: float = Field(0.5, ge=0, lt=1, description="dropout rate of the target views "
                                                        "(MMRec grid [0.3, 0.5]; authors' "
                                                        "best on Baby/Sports 0.5)")
    cl_weight: float = Field(2.0, ge=0, description="λ_cl on the inter- and intra-modality "
                                                    "alignment terms (MMRec default 2.0)")


def _alignment(online: Tensor, target: Tensor) -> Tensor:
    """1 − mean cosine similarity between online predictions and (already detached) targets."""
    return 1 - F.cosine_similarity(online, target, dim=-1).mean()


class BM3(Recommender):
    name = "bm3"
    Config = BM3Config
    feature_route = "training-only"
    route_note = ("features enter only the training loss (the inter-/intra-modality "
                  "alignment terms); the score ⟨p(h_u), p(h_i)⟩ reads ID embeddings "
                  "alone, so a feature perturbation at inference has no effect")
    item_local = False

    def __init__(self, dataset: Dataset, config: BM3Config | None = None):
        super().__init__(dataset, config or BM3Config())
        d = self.config.embedding_size
        self.user_emb = xavier_parameter(self.n_users, d)
        self.item_emb = xavier_parameter(self.n_items, d)
        self.predictor_weight = xavier_parameter(d, d)
        self.predictor_bias = nn.Parameter(torch.zeros(d))
        self.proj_weight = nn.ParameterDict({m: xavier_parameter(d, self.feature_dims[m])
                                             for m in self.modalities})
        self.proj_bias = nn.ParameterDict({m: nn.Parameter(torch.zeros(d))
                                           for m in self.modalities})
        self.register_buffer("adj", to_torch_csr(sym_normalize(bipartite_adjacency(dataset.train))),
                             persistent=False)

    def modality_embedding_dims(self) -> dict[str, int]:
        return {m: self.config.embedding_size for m in self.modalities}

    def encode_modality(self, modality: str, x: Tensor) -> Tensor:
        return x @ self.proj_weight[modality].T + self.proj_bias[modality]

    def predictor(self, z: Tensor) -> Tensor:
        return z @ self.predictor_weight.T + self.predictor_bias

    def online(self) -> tuple[Tensor, Tensor]:
        """(h_u, h_i): LightGCN mean over layers 0..L of the ID embeddings, E_i added to items."""
        layer = torch.cat([self.user_emb, self.item_emb], 0)
        total = layer
        for _ in range(self.config.n_layers):
            layer = sym_spmm(self.adj, layer)
            total = total + layer
        out = total / (self.config.n_layers + 1)
        return out[: self.n_users], out[self.n_users:] + self.item_emb

    def embed(self, features: Mapping[str, Tensor],
              embedding_delta: Mapping[str, Tensor] | None = None) -> Embeddings:
        self.check_inputs(features, embedding_delta)
        user, item = self.online()
        return Embeddings(self.predictor(user), self.predictor(item), {})

    def _target(self, z: Tensor) -> Tensor:
        with torch.no_grad():
            return F.dropout(z.detach(), self.config.dropout, training=True)

    def loss(self, batch: Batch, features: Mapping[str, Tensor]) -> Tensor:
        user, item = self.online()
        h_u, h_i = rows(user, batch.users), rows(item, batch.pos)
        t_u, t_i = self._target(h_u), self._target(h_i)
        total = _alignment(self.predictor(h_u), t_i) + _alignment(self.predictor(h_i), t_u)
        reg = (user.norm() + item.norm()) / self.n_items
        aligned = torch.zeros((), device=h_u.device)
        for m in self.modalities:
            f = self.encode_modality(m, rows(features[m], batch.pos))
            t_f = self._target(f)
            p_f = self.predictor(f)
            aligned = aligned + _alignment(p_f, t_i) + _alignment(p_f, t_f)
        return total + self.config.reg_weight * reg + self.config.cl_weight * aligned
