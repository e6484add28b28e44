"""MMGCL (Yi, Wang, Ounis & Macdonald, SIGIR'22, "Multi-modal Graph Contrastive Learning for
Micro-video Recommendation").  MMRec has no MMGCL; this follows the paper and the authors'
public code and config (zxy-ml84/MMGCL), read, not copied.

Encoder.  One LightGCN channel per modality plus an ID channel, all on the user–item graph
Â = D^-½ A D^-½.  Channel c starts from user inputs U^c and item inputs V^c, where
V^id = item ID embeddings, V^m = g^m(x_m) (+ δ_m at the ``embedding`` point) with
g^m(x) = W_m x̂ + b_m (x̂ = x/‖x‖₂ row-wise, as the authors' code), and U^id, U^m are
per-channel user embeddings.  e^c = mean_{l=0..L} Â^l [U^c; V^c].
Fusion (the paper's ‖): e_u = [e_u^id ‖ e_u^m1 ‖ …], e_i likewise, ŷ_ui = ⟨e_u, e_i⟩, so
s^m_ui = ⟨e_u^m, e_i^m⟩ exactly and s^rest_ui = ⟨e_u^id, e_i^id⟩.

Training loss  L = L_BPR(ŷ) + λ_reg · L2(batch ego embeddings) + λ_ssl · (L_ssl^user + L_ssl^item).
Two views of every node:
* V1, modality masking: one modality m ~ p (p_m, Σ p_m = 1) per view has its inputs U^m and
  V^m replaced by random embeddings (fresh Gaussian draws with the replaced inputs' RMS); the
  graph and the other channels are the clean ones.
* V2, modality edge dropout: every channel's graph (ID channel included) drops each
  user–item edge independently with probability ρ and is re-normalised.
L_ssl over the batch's distinct users (and, separately, distinct positive items), with
z = concat of a node's channel blocks, cos(a, b) = ⟨a, b⟩/(‖a‖‖b‖) and anchor z1_i (V1),
positive z2_i (V2):
    L = −mean_i log  exp(cos(z1_i, z2_i)/τ)
                     / [ Σ_j exp(cos(z1_i, z2_j)/τ) + exp(cos(z1_i, ž2_i)/τ) ]
where j runs over the batch's nodes (the other nodes are negatives) and ž2_i is the paper's
"challenging negative": the positive z2_i with the block of one modality (drawn uniformly per
node) replaced by that block of another batch node d(i) ≠ i, so that it differs from the
positive in one modality only.

Where the paper leaves it open (choices made here): per-channel user embeddings U^m (the
paper masks "user/item features" of a modality); the RMS-matched Gaussian masking draws; one
masked modality per view (not per node); the swapped modality drawn per node, uniformly.
The authors' code differs from the paper (and is not followed): it fuses with linear read-out
layers, its contrastive term contrasts users with their positive items within one view, and
computes, but never adds, the challenging-negative term.  Its ssl_alpha 0.4 belongs to that
user–item term; with the paper's node-level loss 0.4 trains tiktok below popularity, so the
default λ_ssl = 0.05 was chosen on tiktok's validation split from {0.4, 0.1, 0.05, 0}.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from mmrobust.data import Dataset
from mmrobust.errors import UserError
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
from mmrobust.models.graph import bipartite_adjacency, sym_normalize, sym_spmm, to_torch_csr


class MMGCLConfig(MultimodalConfig):
    reg_weight: float = Field(1e-4, ge=0, description="L2 weight on the batch's ego embeddings "
                                                      "(authors' config: weight_decay 1e-4)")
    n_layers: int = Field(3, ge=0, description="LightGCN layers L per channel "
                                               "(authors' config layer_num 3)")
    ssl_weight: float = Field(0.05, ge=0, description="weight λ_ssl of the contrastive loss "
                                                      "(tiktok-validation choice; authors' config "
                                                      "0.4 is for their code's user–item loss)")
    ssl_temp: float = Field(0.2, gt=0, description="InfoNCE temperature τ "
                                                   "(authors' config ssl_temp 0.2)")
    edge_dropout: float = Field(0.05, ge=0, lt=1, description="edge drop rate ρ of modality "
                                                              "edge dropout (authors' "
                                                              "config dropout_rate 0.05)")
    mask_probs: dict[str, float] | None = Field(
        None, description="masking probability p_m per modality (default "
                          "uniform; the paper's p are per dataset)")
    challenging_negatives: bool = Field(True, description="add the paper's one-modality-swapped "
                                                          "negative to the InfoNCE denominator")
    normalize_features: bool = Field(True, description="L2-normalise feature rows before "
                                                       "the projection (authors' code)")


class MMGCL(Recommender):
    name = "mmgcl"
    Config = MMGCLConfig
    feature_route = "direct"
    route_note = ("each modality's projected features propagate over the user–item graph "
                  "into that modality's block of the concatenated user and item embeddings")
    item_local = False

    def __init__(self, dataset: Dataset, config: MMGCLConfig | None = None):
        super().__init__(dataset, config or MMGCLConfig())
        d = self.config.embedding_size
        self.user_id = xavier_parameter(self.n_users, d)
        self.item_id = xavier_parameter(self.n_items, d)
        self.user_modal = nn.ParameterDict({m: xavier_parameter(self.n_users, d)
                                            for m in self.modalities})
        self.proj_weight = nn.ParameterDict({m: xavier_parameter(d, self.feature_dims[m])
                                             for m in self.modalities})
        self.proj_bias = nn.ParameterDict({m: nn.Parameter(torch.zeros(d))
                                           for m in self.modalities})
        self.register_buffer("mask_probs", self._mask_probs(), persistent=False)
        self._build_graph(dataset.train)

    # ------------------------------------------------------------- set-up
    def _mask_probs(self) -> Tensor:
        given = self.config.mask_probs
        if given is None:
            return torch.full((len(self.modalities),), 1.0 / len(self.modalities))
        unknown = sorted(set(given) - set(self.modalities))
        if unknown:
            raise UserError(f"mask_probs names modality {', '.join(unknown)} "
                             f"but {self.name} reads {', '.join(self.modalities)}")
        probs = torch.tensor([float(given.get(m, 0.0)) for m in self.modalities])
        if (probs < 0).any() or probs.sum() <= 0:
            raise UserError(f"mask_probs must be non-negative with a positive sum, got {given}")
        return probs / probs.sum()

    def _build_graph(self, train: sp.csr_matrix) -> None:
        """The normalised graph Â, and for edge dropout its CSR pattern with, per stored entry, the
        id of the user–item edge it belongs to (both directions of an edge share one id)."""
        r = sp.csr_matrix(train, dtype=np.float64)
        r.sum_duplicates()
        r.sort_indices()
        n_edges = r.nnz
        ids = sp.csr_matrix((np.arange(1, n_edges + 1, dtype=np.float64), r.indices, r.indptr),
                            shape=r.shape)
        pattern = sp.bmat([[None, ids], [ids.T, None]], format="csr")
        pattern.sort_indices()
        self.register_buffer("adj", to_torch_csr(sym_normalize(bipartite_adjacency(train))),
                             persistent=False)
        self.register_buffer("crow", torch.from_numpy(pattern.indptr.astype(np.int64)),
                             persistent=False)
        self.register_buffer("col", torch.from_numpy(pattern.indices.astype(np.int64)),
                             persistent=False)
        self.register_buffer("entry_edge", torch.from_numpy(pattern.data.astype(np.int64) - 1),
                             persistent=False)
        edge_user = np.repeat(np.arange(r.shape[0], dtype=np.int64), np.diff(r.indptr))
        self.register_buffer("edge_user", torch.from_numpy(edge_user), persistent=False)
        self.register_buffer("edge_item", torch.from_numpy(r.indices.astype(np.int64)),
                             persistent=False)

    # ------------------------------------------------------------- encoder
    def modality_embedding_dims(self) -> dict[str, int]:
        return {m: self.config.embedding_size for m in self.modalities}

    def encode_modality(self, modality: str, x: Tensor) -> Tensor:
        if self.config.normalize_features:
            x = F.normalize(x, dim=1)
        return x @ self.proj_weight[modality].T + self.proj_bias[modality]

    def item_inputs(self, features: Mapping[str, Tensor],
                    embedding_delta: Mapping[str, Tensor] | None = None
                    ) -> dict[str, Tensor]:
        """{m: g^m(x_m) (+ δ_m)}: modality m's item inputs to its graph channel."""
        out = {}
        for m in self.modalities:
            e = self.encode_modality(m, features[m])
            if embedding_delta is not None and m in embedding_delta:
                e = e + embedding_delta[m]
            out[m] = e
        return out

    def propagate(self, user: Tensor, item: Tensor,
                  adj: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """One LightGCN channel: mean of layers 0..L of Â^l [user; item]."""
        adj = self.adj if adj is None else adj
        layer = torch.cat([user, item], 0)
        total = layer
        for _ in range(self.config.n_layers):
            layer = sym_spmm(adj, layer)
            total = total + layer
        out = total / (self.config.n_layers + 1)
        return out[: self.n_users], out[self.n_users:]

    def channel_inputs(self, item_inputs: Mapping[str, Tensor]) -> list[tuple[Tensor, Tensor]]:
        """(user inputs, item inputs) per channel: the ID channel first, then one per modality."""
        return [(self.user_id, self.item_id)] + [(self.user_modal[m], item_inputs[m])
                                                 for m in self.modalities]

    def channels(self, item_inputs: Mapping[str, Tensor]) -> list[tuple[Tensor, Tensor]]:
        return [self.propagate(u, i) for u, i in self.channel_inputs(item_inputs)]

    def embed(self, features: Mapping[str, Tensor],
              embedding_delta: Mapping[str, Tensor] | None = None) -> Embeddings:
        self.check_inputs(features, embedding_delta)
        chans = self.channels(self.item_inputs(features, embedding_delta))
        user = torch.cat([u for u, _ in chans], 1)
        item = torch.cat([i for _, i in chans], 1)
        return Embeddings(user, item, {m: chans[k + 1] for k, m in enumerate(self.modalities)})

    # ------------------------------------------------------------- augmentations
    def dropped_adjacency(self, keep: Tensor | None = None) -> Tensor:
        """Â of the graph whose user–item edges are kept where ``keep`` is 1 (default: each edge
        kept with probability 1 − ρ), D^-½ A D^-½ on the kept edges, same CSR pattern as Â."""
        n_edges = self.edge_user.shape[0]
        if keep is None:
            keep = (torch.rand(n_edges, device=self.edge_user.device) >= self.config.edge_dropout)
        keep = keep.to(self.user_id.dtype)
        deg_user = torch.zeros(self.n_users, dtype=keep.dtype, device=keep.device)
        deg_user.index_add_(0, self.edge_user, keep)
        deg_item = torch.zeros(self.n_items, dtype=keep.dtype, device=keep.device)
        deg_item.index_add_(0, self.edge_item, keep)
        inv_user = torch.where(deg_user > 0, deg_user.clamp_min(1).rsqrt(),
                               torch.zeros_like(deg_user))
        inv_item = torch.where(deg_item > 0, deg_item.clamp_min(1).rsqrt(),
                               torch.zeros_like(deg_item))
        weight = keep * rows(inv_user, self.edge_user) * rows(inv_item, self.edge_item)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            return torch.sparse_csr_tensor(self.crow, self.col, rows(weight, self.entry_edge),
                                           size=(self.n_users + self.n_items,) * 2,
                                           check_invariants=False)

    def masking_view(self, clean: list[tuple[Tensor, Tensor]], item_inputs: Mapping[str, Tensor]
                     ) -> tuple[list[tuple[Tensor, Tensor]], int]:
        """V1: one modality (drawn with p) gets random
        inputs; returns the channels and its index."""
        k = int(torch.multinomial(self.mask_probs, 1)) + 1
        user_in, item_in = self.channel_inputs(item_inputs)[k]
        out = list(clean)
        out[k] = self.propagate(_random_like(user_in), _random_like(item_in))
        return out, k

    def edge_dropout_view(self, item_inputs: Mapping[str, Tensor]) -> list[tuple[Tensor, Tensor]]:
        """V2: every channel on its own edge-dropped graph."""
        return [self.propagate(u, i, self.dropped_adjacency())
                for u, i in self.channel_inputs(item_inputs)]

    def challenging_negatives(self, positive: Tensor) -> Tensor:
        """Per node i: its positive blocks [B, C, d] with one modality block (drawn uniformly among
        the modality channels 1..C−1) taken from another node d(i) ≠ i of the batch."""
        n, n_channels = positive.shape[0], positive.shape[1]
        channel = torch.randint(1, n_channels, (n,), device=positive.device)
        shift = torch.randint(1, n, (n,), device=positive.device)
        donor = (torch.arange(n, device=positive.device) + shift) % n
        swap = F.one_hot(channel, n_channels).bool().unsqueeze(-1)
        return torch.where(swap, rows(positive, donor), positive)

    def info_nce(self, anchor: Tensor, positive: Tensor) -> Tensor:
        """InfoNCE of blocks [B, C, d]: positive pair (z1_i, z2_i), negatives z2_j (j ≠ i) and,
        when enabled, the challenging negative ž2_i; cosine similarity over the concatenation."""
        z1 = F.normalize(anchor.flatten(1), dim=1)
        z2 = F.normalize(positive.flatten(1), dim=1)
        logits = z1 @ z2.T / self.config.ssl_temp
        if self.config.challenging_negatives and positive.shape[0] > 1 and positive.shape[1] > 1:
            hard = F.normalize(self.challenging_negatives(positive).flatten(1), dim=1)
            logits = torch.cat([logits, dot(z1, hard).unsqueeze(1) / self.config.ssl_temp], 1)
        return F.cross_entropy(logits, torch.arange(z1.shape[0], device=z1.device))

    def ssl_loss(self, batch: Batch, clean: list[tuple[Tensor, Tensor]],
                 item_inputs: Mapping[str, Tensor]) -> Tensor:
        view1, _ = self.masking_view(clean, item_inputs)
        view2 = self.edge_dropout_view(item_inputs)
        users, items = torch.unique(batch.users), torch.unique(batch.pos)

        def blocks(view: list[tuple[Tensor, Tensor]], side: int, idx: Tensor) -> Tensor:
            return torch.stack([rows(channel[side], idx) for channel in view], 1)

        return (self.info_nce(blocks(view1, 0, users), blocks(view2, 0, users))
                + self.info_nce(blocks(view1, 1, items), blocks(view2, 1, items)))

    # ------------------------------------------------------------- loss
    def loss(self, batch: Batch, features: Mapping[str, Tensor]) -> Tensor:
        item_inputs = self.item_inputs(features)
        clean = self.channels(item_inputs)
        user = torch.cat([u for u, _ in clean], 1)
        item = torch.cat([i for _, i in clean], 1)
        u, i, j = rows(user, batch.users), rows(item, batch.pos), rows(item, batch.neg)
        ego_user = torch.cat([rows(self.user_id, batch.users)]
                             + [rows(self.user_modal[m], batch.users) for m in self.modalities], 1)
        reg = l2_reg(ego_user, rows(self.item_id, batch.pos), rows(self.item_id, batch.neg))
        total = bpr_loss(dot(u, i), dot(u, j)) + self.config.reg_weight * reg
        if self.config.ssl_weight > 0:
            total = total + self.config.ssl_weight * self.ssl_loss(batch, clean, item_inputs)
        return total


def _random_like(x: Tensor) -> Tensor:
    """Random embeddings in place of a masked modality's inputs: N(0, rms(x)²) entries."""
    return torch.randn_like(x) * x.detach().pow(2).mean().sqrt()
