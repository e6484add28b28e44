"""SLMRec (Tao et al., IEEE TMM 2022): Self-supervised Learning for Multimedia Recommendation,
in MMRec's form (and the authors' code for the self-supervised tasks MMRec cannot run).

Branches k ∈ {id, m₁, …, m_M} share the user embeddings e_u and differ in the item input:
the ID embeddings e_i, or c^m_i = g^m(x_{m,i}) + δ_{m,i} with g^m(x) = W_m (x/‖x‖) + b_m.
Each branch runs LightGCN on Â = D^{-½} A D^{-½} of the user–item graph (mean of layers
0..L), giving z^k_u and z^k_i (all branches are propagated as one matrix of width (M+1)·d).
Fusion (MMRec ``mm_fusion_mode: concat``): user = F_u [z^id_u ; z^{m₁}_u ; …] + b_u and
item = F_i [z^id_i ; …] + b_i, ŷ_ui = ⟨user_u, item_i⟩.

Parts: with F^k the column block of F that reads branch k, user = Σ_k F^k_u z^k_u + b_u is a
sum, so s^m_ui = ⟨F^m_u z^m_u, F^m_i z^m_i⟩ (modality m's own fused embeddings) and ``rest``
holds the ID term, every cross term ⟨F^k_u z^k_u, F^l_i z^l_i⟩ (k ≠ l) and the bias terms.

Loss = InfoNCE(users, positives; τ = ``temperature``, in-batch negatives, cosine logits)
+ ``ssl_alpha`` · L_ssl + ½ ``reg_weight`` Σ_θ ‖θ‖² (the L2 form of MMRec's Adam weight decay),
with L_ssl by ``ssl_task``:

* ``FAC`` (fine and coarse, MMRec's and the authors' default): a chain of spaces
  h₀ = z^id_i, h_k = G_k h_{k−1}; modality m_k is contrasted with h_k through its head
  H_k z^{m_k}_i: Σ_k InfoNCE(h_k, H_k z^{m_k}_i; τ_ssl) over the batch's positive items
  (logits are raw inner products, as in the code); the last of ≥ 2 stages has width d/2.
* ``FD`` (feature dropout): two views of every branch with dropout after each propagation
  layer; InfoNCE between the views' fused users and between their fused items.
* ``FM`` (feature masking): two views, each with the item input of one randomly chosen
  branch (two different branches) zeroed; the same InfoNCE.  ``FD+FM``: both.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

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
    dot,
    rows,
    xavier_parameter,
)
from mmrobust.models.graph import bipartite_adjacency, spmm, sym_normalize, to_torch_csr


class SLMRecConfig(MultimodalConfig):
    reg_weight: float = Field(1e-4, ge=0, description="L2 on all parameters, ½·w·Σ‖θ‖² "
                                                      "per batch = Adam weight decay "
                                                      "(MMRec/authors' weight_decay 1e-4)")
    n_layers: int = Field(3, ge=0, description="LightGCN layers of every branch "
                                               "(MMRec/authors' layer_num 3)")
    temperature: float = Field(0.2, gt=0, description="temperature of the main InfoNCE "
                                                      "loss (MMRec/authors' temp 0.2)")
    ssl_task: Literal["FAC", "FD", "FM", "FD+FM"] = Field(
        "FAC", description="self-supervised task (MMRec/authors' default FAC)")
    ssl_alpha: float = Field(0.1, ge=0, description="weight of the self-supervised loss "
                                                    "(authors' default 0.1; MMRec grid 0.01…1)")
    ssl_temp: float = Field(0.2, gt=0, description="temperature of the self-supervised InfoNCE "
                                                   "(authors' default 0.2; MMRec grid 0.1…1)")
    dropout_rate: float = Field(0.3, ge=0, lt=1, description="dropout of the FD task "
                                                             "(MMRec/authors' dropout_rate 0.3)")


def _linear(n_in: int, n_out: int) -> nn.Linear:
    layer = nn.Linear(n_in, n_out)
    nn.init.xavier_uniform_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


def _info_nce(a: Tensor, b: Tensor, temperature: float) -> Tensor:
    """Cross-entropy of row k of a·bᵀ/τ against column k (in-batch negatives)."""
    logits = (a / temperature) @ b.T
    return F.cross_entropy(logits, torch.arange(a.shape[0], device=a.device))


class SLMRec(Recommender):
    name = "slmrec"
    Config = SLMRecConfig
    feature_route = "direct"
    route_note = ("features pass through g^m and a LightGCN over the user–item graph "
                  "into modality m's block of the fusion layers, which feed the score")
    item_local = False

    def __init__(self, dataset: Dataset, config: SLMRecConfig | None = None):
        super().__init__(dataset, config or SLMRecConfig())
        d = self.config.embedding_size
        n_branches = 1 + len(self.modalities)
        self.user_emb = xavier_parameter(self.n_users, d)
        self.item_emb = xavier_parameter(self.n_items, d)
        self.dense = nn.ModuleDict({m: _linear(self.feature_dims[m], d) for m in self.modalities})
        self.fuse_user = _linear(n_branches * d, d)
        self.fuse_item = _linear(n_branches * d, d)
        if self.config.ssl_task == "FAC":
            widths = [d] * len(self.modalities)
            if len(widths) >= 2:
                widths[-1] = d // 2
            self.fac_chain = nn.ModuleList([_linear(w_in, w) for w_in, w
                                            in zip([d, *widths[:-1]], widths, strict=True)])
            self.fac_head = nn.ModuleDict({m: _linear(d, w)
                                           for m, w in zip(self.modalities, widths, strict=True)})
        # MMRec's 'pre' adjacency D^{-1/2} A D^{-1/2}
        adj = sym_normalize(bipartite_adjacency(dataset.train))
        n = self.n_users
        self.register_buffer("adj_ui", to_torch_csr(adj[:n, n:]),
                             persistent=False)  # users ← items block R̂
        self.register_buffer("adj_iu", to_torch_csr(adj[n:, :n]),
                             persistent=False)  # items ← users block R̂ᵀ

    # ------------------------------------------------------------- contract
    def modality_embedding_dims(self) -> dict[str, int]:
        return {m: self.config.embedding_size for m in self.modalities}

    def encode_modality(self, modality: str, x: Tensor) -> Tensor:
        """g^m(x) = W_m (x/‖x‖) + b_m (MMRec normalises the feature rows, then ``*_dense``)."""
        scale = torch.linalg.vector_norm(x, dim=1, keepdim=True).clamp_min(1e-12).reciprocal()
        layer = self.dense[modality]
        # = W normalize(x) + b, without a normalised copy of x
        return F.linear(x, layer.weight) * scale + layer.bias

    def branch_inputs(self, features: Mapping[str, Tensor],
                      embedding_delta: Mapping[str, Tensor] | None = None
                      ) -> list[Tensor]:
        """The item input of every branch: [e_i, c^{m₁}, …]."""
        items = [self.item_emb]
        for m in self.modalities:
            c = self.encode_modality(m, features[m])
            if embedding_delta is not None and m in embedding_delta:
                c = c + embedding_delta[m]
            items.append(c)
        return items

    def _to_users(self, x: Tensor) -> Tensor:
        return spmm(self.adj_ui, x, self.adj_iu)

    def _to_items(self, x: Tensor) -> Tensor:
        return spmm(self.adj_iu, x, self.adj_ui)

    def propagate(self, items: list[Tensor], dropout: float = 0.0) -> tuple[Tensor, Tensor]:
        """LightGCN of all branches at once: (z_u [U, (M+1)d], z_i [I, (M+1)d]), blocks in branch
        order.

        Â is bipartite, so layer k of a branch is (R̂ y, R̂ᵀ x) for the previous layer (x users,
        y items): the user inputs e_u, shared by every branch, reach users at even layers and items
        at odd ones, and are propagated once at width d; only the item inputs are propagated at
        width (M+1)·d.  With dropout after each layer the branches no longer share anything and
        all are propagated."""
        n_branches, n_layers = len(items), self.config.n_layers
        item_input = torch.cat(items, 1)
        if dropout > 0:
            x, y = self.user_emb.repeat(1, n_branches), item_input
            total_u, total_i = x, y
            for _ in range(n_layers):
                x, y = F.dropout(self._to_users(y), dropout), F.dropout(self._to_items(x), dropout)
                total_u, total_i = total_u + x, total_i + y
            return total_u / (n_layers + 1), total_i / (n_layers + 1)
        shared, branch = self.user_emb, item_input
        shared_u, shared_i, branch_u, branch_i = [shared], [], [], [branch]
        for k in range(1, n_layers + 1):
            if k % 2:
                shared, branch = self._to_items(shared), self._to_users(branch)
                shared_i.append(shared)
                branch_u.append(branch)
            else:
                shared, branch = self._to_users(shared), self._to_items(branch)
                shared_u.append(shared)
                branch_i.append(branch)
        z_user = sum(shared_u).repeat(1, n_branches)
        z_user = z_user + sum(branch_u) if branch_u else z_user
        z_item = sum(branch_i)
        z_item = z_item + sum(shared_i).repeat(1, n_branches) if shared_i else z_item
        return z_user / (n_layers + 1), z_item / (n_layers + 1)

    def embed(self, features: Mapping[str, Tensor],
              embedding_delta: Mapping[str, Tensor] | None = None) -> Embeddings:
        self.check_inputs(features, embedding_delta)
        z_user, z_item = self.propagate(self.branch_inputs(features, embedding_delta))
        d = self.config.embedding_size
        parts = {}
        for k, m in enumerate(self.modalities, start=1):
            block = slice(k * d, (k + 1) * d)
            parts[m] = (z_user[:, block] @ self.fuse_user.weight[:, block].T,
                        z_item[:, block] @ self.fuse_item.weight[:, block].T)
        return Embeddings(self.fuse_user(z_user), self.fuse_item(z_item), parts)

    def bpr_scores(self, features: Mapping[str, Tensor], batch: Batch,
                   embedding_delta: Mapping[str, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """(ŷ_ui, ŷ_uj) with the fusion layers applied to the batch's rows only."""
        self.check_inputs(features, embedding_delta)
        z_user, z_item = self.propagate(self.branch_inputs(features, embedding_delta))
        user = self.fuse_user(rows(z_user, batch.users))
        return (dot(user, self.fuse_item(rows(z_item, batch.pos))),
                dot(user, self.fuse_item(rows(z_item, batch.neg))))

    # ------------------------------------------------------------- training
    def loss(self, batch: Batch, features: Mapping[str, Tensor]) -> Tensor:
        cfg = self.config
        items = self.branch_inputs(features)
        z_user, z_item = self.propagate(items)
        user = self.fuse_user(rows(z_user, batch.users))
        pos = self.fuse_item(rows(z_item, batch.pos))
        main = _info_nce(F.normalize(user, dim=1), F.normalize(pos, dim=1), cfg.temperature)
        if cfg.ssl_task == "FAC":
            ssl = self._fac(rows(z_item, batch.pos))
        else:
            ssl = self._two_views(items, batch)
        reg = sum((p.pow(2).sum() for p in self.parameters()), torch.zeros((), device=user.device))
        return main + cfg.ssl_alpha * ssl + 0.5 * cfg.reg_weight * reg

    def _fac(self, z_pos: Tensor) -> Tensor:
        """Fine-and-coarse contrast of the ID branch's item chain against each modality branch."""
        d = self.config.embedding_size
        h = z_pos[:, :d]
        total = torch.zeros((), device=z_pos.device)
        for k, (m, chain) in enumerate(zip(self.modalities, self.fac_chain, strict=True), start=1):
            h = chain(h)
            total = total + _info_nce(h, self.fac_head[m](z_pos[:, k * d:(k + 1) * d]),
                                      self.config.ssl_temp)
        return total

    def _two_views(self, items: list[Tensor], batch: Batch) -> Tensor:
        """FD / FM / FD+FM: InfoNCE between two stochastic views of the fused users and items."""
        cfg = self.config
        dropout = cfg.dropout_rate if cfg.ssl_task in ("FD", "FD+FM") else 0.0
        views = [list(items), list(items)]
        if cfg.ssl_task in ("FM", "FD+FM"):
            masked = torch.randperm(len(items), device=items[0].device)[:2].tolist()
            for view, k in zip(views, masked, strict=True):
                view[k] = torch.zeros_like(items[k])
        fused = []
        for view in views:
            z_user, z_item = self.propagate(view, dropout)
            fused.append((F.normalize(self.fuse_user(rows(z_user, batch.users)), dim=1),
                          F.normalize(self.fuse_item(rows(z_item, batch.pos)), dim=1)))
        (u1, i1), (u2, i2) = fused
        return _info_nce(u1, u2, cfg.ssl_temp) + _info_nce(i1, i2, cfg.ssl_temp)
