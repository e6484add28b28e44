"""MMGCN (Wei et al., ACM MM'19, "MMGCN: Multi-modal Graph Convolution Network for Personalized
Recommendation of Micro-video"), following MMRec's ``models/mmgcn.py`` and the authors' code.

One GCN per modality m over the user–item bipartite graph (edges in both directions, mean
aggregation, no self loops).  Node inputs: a learned user preference table P_m [U, d_m] and,
for items, g^m(x_m) = MLP_m(x_m) (a linear map to ``dim_latent`` when D_m > ``latent_above``)
or x_m itself; every row is L2-normalised:  x⁰ = normalize([P_m ; g^m(x_m) + δ_m]).
Each of the L = 3 layers, with Ā = D⁻¹A the mean-aggregation adjacency and e_id the ID embedding
shared by all modalities:

    h     = lrelu(Ā xˡ W_c)                       (graph convolution, Eq. 1)
    x̂     = lrelu(W_l xˡ + b_l) + e_id              (Eq. 5)
    xˡ⁺¹  = lrelu(W_g [h ; x̂] + b_g)               (combination, concatenation;
                                                     ``combine='add'``: lrelu(W_g h + b_g + x̂),
                                                     the code's other branch)

The representation is the mean over modalities, e = (1/M) Σ_m x^L_m for users and items, and
ŷ_ui = ⟨e_u, e_i⟩.  Per-modality parts are (x^L_{m,u} / M, x^L_{m,i} / M), so
s^m_ui = ⟨x^L_{m,u}, x^L_{m,i}⟩ / M² and the cross terms ⟨x^L_{m,u}, x^L_{m',i}⟩ / M² (m ≠ m')
fall into ``rest``.

Follows MMRec except: every trainable tensor is a registered nn.Parameter with Xavier-uniform
weights and zero biases (MMRec's ID embedding and preference tables are plain tensors, so Adam
never updates them, and its g_layer2/3 keep PyTorch's default init); scores come from a fresh
forward pass (MMRec ranks with ``self.result`` cached before the last optimiser step); the L2 term
covers every modality's preference table (MMRec: only the visual one); ``logsigmoid`` instead of
``log(sigmoid)``.  Which modalities get an MLP is decided by width (MMRec hard-codes the visual one,
so on TikTok's 128-d image features it widens them to 256; here they enter raw).

Implementation: the bipartite graph is kept as its two row-normalised blocks (users ← items,
items ← users) in CSR with their transposes for the backward pass, so users and items stay
separate tensors.  The convolution is associated so that both products with W_c have n_items
rows: users get Ā_ui (x_i W_c), items get (Ā_iu x_u) W_c (for Amazon-Baby 7,050 instead of
26,495 rows), and products whose input is constant (raw item features in training) need no
input gradient.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import numpy as np
import scipy.sparse as sp
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
    bpr_loss,
    dot,
    rows,
    xavier_parameter,
)
from mmrobust.models.graph import normalize_rows, row_normalize, spmm, to_torch_csr


class MMGCNConfig(MultimodalConfig):
    reg_weight: float = Field(1e-5, ge=0, description="weight of the mean squared batch ID "
                                                      "embeddings + preferences (authors' "
                                                      "code default 1e-5; MMRec grid 0…0.1)")
    n_layers: int = Field(3, ge=1, description="GCN layers per modality (MMRec's and the authors' "
                                               "GCN run 3; MMRec's n_layers: 2 is unused)")
    dim_latent: int = Field(256, gt=0, description="width of MLP_m for wide features "
                                                   "(MMRec/authors: 256 for the visual GCN)")
    latent_above: int = Field(512, ge=0, description="modalities wider than this get MLP_m; "
                                                     "narrower ones enter raw (MMRec: image "
                                                     "4096-d via MLP, text 384-d raw)")
    combine: Literal["concat", "add"] = Field("concat",
                                              description="combination layer (MMRec/authors' "
                                                          "code run concat: their "
                                                          "concate='False' is a truthy string)")
    negative_slope: float = Field(0.01, ge=0, description="LeakyReLU slope (torch "
                                                          "default, as MMRec)")


def _linear(n_in: int, n_out: int) -> nn.Linear:
    layer = nn.Linear(n_in, n_out)
    nn.init.xavier_uniform_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


class _ModalityGCN(nn.Module):
    """The GCN of one modality: preference table, optional
    MLP, and L (conv, linear, combination) layers."""

    def __init__(self, n_users: int, dim_feat: int, dim: int, config: MMGCNConfig):
        super().__init__()
        self.mlp = _linear(dim_feat, config.dim_latent) if dim_feat > config.latent_above else None
        dim_in = config.dim_latent if self.mlp is not None else dim_feat
        self.dim_in = dim_in
        self.preference = xavier_parameter(n_users, dim_in)
        widths = [dim_in] + [dim] * (config.n_layers - 1)
        self.conv = nn.ParameterList([xavier_parameter(w, w) for w in widths])
        self.linear = nn.ModuleList([_linear(w, dim) for w in widths])
        concat = config.combine == "concat"
        self.combine = nn.ModuleList([_linear(w + dim if concat else w, dim) for w in widths])
        self.concat = concat
        self.slope = config.negative_slope

    def encode(self, x: Tensor) -> Tensor:
        return self.mlp(x) if self.mlp is not None else x

    def _act(self, x: Tensor) -> Tensor:
        return F.leaky_relu(x, self.slope)

    def forward(self, item_input: Tensor, id_user: Tensor, id_item: Tensor,
                graph: _BipartiteMean) -> tuple[Tensor, Tensor]:
        act = self._act
        xu, xi = normalize_rows(self.preference), normalize_rows(item_input)
        for conv, linear, combine in zip(self.conv, self.linear, self.combine, strict=True):
            # h = lrelu(Ā x W_c), associated so that both products with W_c have n_items rows
            hu = act(graph.users_from_items(xi @ conv))
            hi = act(graph.items_from_users(xu) @ conv)
            hat_u, hat_i = act(linear(xu)) + id_user, act(linear(xi)) + id_item
            if self.concat:   # W_g [h ; x̂] + b_g without materialising the concatenation
                w_h, w_x = combine.weight[:, : hu.shape[1]], combine.weight[:, hu.shape[1]:]
                xu = act(torch.addmm(F.linear(hat_u, w_x, combine.bias), hu, w_h.t()))
                xi = act(torch.addmm(F.linear(hat_i, w_x, combine.bias), hi, w_h.t()))
            else:
                xu, xi = act(combine(hu) + hat_u), act(combine(hi) + hat_i)
        return xu, xi


class _BipartiteMean(nn.Module):
    """Mean aggregation on the user–item graph as two CSR blocks (and their transposes)."""

    def __init__(self, train: sp.spmatrix):
        super().__init__()
        # never write into the dataset's arrays
        r = sp.csr_matrix(train, dtype=np.float32, copy=True)
        r.data[:] = 1.0
        user_block, item_block = row_normalize(r), row_normalize(r.T)      # D_u⁻¹ R, D_i⁻¹ Rᵀ
        for name, matrix in (("ui", user_block), ("ui_t", user_block.T), ("iu", item_block),
                             ("iu_t", item_block.T)):
            self.register_buffer(name, to_torch_csr(matrix), persistent=False)

    def users_from_items(self, item_rows: Tensor) -> Tensor:
        return spmm(self.ui, item_rows, self.ui_t)

    def items_from_users(self, user_rows: Tensor) -> Tensor:
        return spmm(self.iu, user_rows, self.iu_t)


class MMGCN(Recommender):
    """Per-modality GCNs over the user–item graph, averaged.  MMRec trains it with Adam
    (lr grid 1e-4…1e-2; the authors' code default 1e-4), batch 2048 (authors: 1024)."""

    name = "mmgcn"
    Config = MMGCNConfig
    feature_route = "direct"
    route_note = ("item features (through MLP_m, or raw when narrow) are the item "
                  "inputs of modality m's GCN, so propagation carries a perturbation "
                  "of one item into its users' and their other items' representations")
    item_local = False

    def __init__(self, dataset: Dataset, config: MMGCNConfig | None = None):
        super().__init__(dataset, config or MMGCNConfig())
        d = self.config.embedding_size
        self.id_embedding = xavier_parameter(self.n_users + self.n_items, d)
        self.gcns = nn.ModuleDict({m: _ModalityGCN(self.n_users, self.feature_dims[m], d,
                                                   self.config)
                                   for m in self.modalities})
        self.graph = _BipartiteMean(dataset.train)

    def modality_embedding_dims(self) -> dict[str, int]:
        return {m: gcn.dim_in for m, gcn in self.gcns.items()}

    def encode_modality(self, modality: str, x: Tensor) -> Tensor:
        return self.gcns[modality].encode(x)

    def propagate(self, features: Mapping[str, Tensor],
                  embedding_delta: Mapping[str, Tensor] | None = None
                  ) -> dict[str, tuple[Tensor, Tensor]]:
        """{m: (x^L_{m,users}, x^L_{m,items})}: every modality's GCN output."""
        id_user, id_item = self.id_embedding[: self.n_users], self.id_embedding[self.n_users:]
        out = {}
        for m, gcn in self.gcns.items():
            item_input = gcn.encode(features[m])
            if embedding_delta is not None and m in embedding_delta:
                item_input = item_input + embedding_delta[m]
            out[m] = gcn(item_input, id_user, id_item, self.graph)
        return out

    def embed(self, features: Mapping[str, Tensor],
              embedding_delta: Mapping[str, Tensor] | None = None) -> Embeddings:
        self.check_inputs(features, embedding_delta)
        scale = 1.0 / len(self.modalities)
        parts = {m: (u * scale, i * scale)
                 for m, (u, i) in self.propagate(features, embedding_delta).items()}
        return Embeddings(sum(u for u, _ in parts.values()), sum(i for _, i in parts.values()),
                          parts)

    def representations(self, features: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        """(users, items): the mean over modalities of
        the GCN outputs (``embed`` without the parts)."""
        outs = list(self.propagate(features).values())
        scale = 1.0 / len(outs)
        return sum(u for u, _ in outs) * scale, sum(i for _, i in outs) * scale

    def loss(self, batch: Batch, features: Mapping[str, Tensor]) -> Tensor:
        """BPR + reg_weight · (MMRec's mean squared ID embeddings of the batch's users and items
        + Σ_m mean squared preference table P_m)."""
        self.check_inputs(features)
        user, item = self.representations(features)
        u, i, j = rows(user, batch.users), rows(item, batch.pos), rows(item, batch.neg)
        id_u = rows(self.id_embedding, batch.users)
        id_i = rows(self.id_embedding, batch.pos + self.n_users)
        id_j = rows(self.id_embedding, batch.neg + self.n_users)
        # MMRec: (id[users, users]² + id[pos, neg]²).mean() over the interleaved [2B, d] tensors
        reg = id_u.pow(2).mean() + 0.5 * (id_i.pow(2).mean() + id_j.pow(2).mean())
        reg = reg + sum(gcn.preference.pow(2).mean() for gcn in self.gcns.values())
        return bpr_loss(dot(u, i), dot(u, j)) + self.config.reg_weight * reg
