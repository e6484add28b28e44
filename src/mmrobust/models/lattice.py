"""LATTICE (Zhang et al., ACM MM'21, "Mining Latent Structures for Multimedia Recommendation"),
following MMRec's ``LATTICE`` (cf_model ``lightgcn``).

Item–item graphs, all kept as K neighbour slots per row (:class:`KnnGraph`), never dense:

* original graphs, frozen at construction from the training-time raw features:
  S^m = norm(kNN_k(cos(x_m)))  (MMRec's build_sim → build_knn_neighbourhood →
  compute_normalized_laplacian, norm(A) = D^{-1/2} A D^{-1/2} with row-sum degrees);
* learned graphs from the projections z_m = g^m(x_m) = W_m x_m + b_m (``image_trs`` /
  ``text_trs``): Ã^m = kNN_k(cos(z_m)), weighted values = cosine similarities;
* with softmax modality weights α = softmax(w):
  A = (1 − λ) · norm(Σ_m α_m Ã^m) + λ · Σ_m α_m S^m.

Item-graph convolution of the item ID embeddings: h = A^{L_i} e_item (``n_layers``).
Collaborative part (LightGCN as in MMRec's LATTICE): E^{(l+1)} = P E^{(l)} with
P = D^{-1}(A_ui + I) (self-loops, row-normalised: MMRec's ``get_adj_mat`` – not LightGCN's
D^{-1/2} A D^{-1/2}), E = mean_{l=0..L_ui} E^{(l)}; then
e_u = E_u,  e_i = E_i + h_i / ‖h_i‖  and  ŷ_ui = ⟨e_u, e_i⟩.

Loss: BPR + reg_weight · (‖e_u‖² + ‖e_i‖² + ‖e_j‖²) / (2·batch) on the final embeddings (MMRec).

Graph schedule (MMRec): the learned graph is rebuilt at the first :meth:`loss` call of each
epoch (gradients flow into the projections and modality weights in that batch) and reused,
detached, by the epoch's other batches.  :meth:`embed` always rebuilds it from the features
it is GIVEN (MMRec's ``full_sort_predict`` rebuilds it too), so an inference-time feature
perturbation reaches the score through the kNN edge values (the neighbour selection itself
is not differentiable); the frozen original graphs stay those of the training features.

Deviations from MMRec: the features are an input (MMRec fine-tunes a copy of the raw
features as an ``nn.Embedding``; here they are not trained); the projections use Xavier
initialisation (MMRec: PyTorch's default ``nn.Linear`` init) with zero bias; no learning-rate
scheduler (MMRec's [0.96, 50]); any number of modalities (MMRec: image and/or text); kNN
graphs are sparse (MMRec builds dense I×I matrices); cf_model ``ngcf`` is not provided.
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
    l2_reg,
    rows,
    xavier_parameter,
)
from mmrobust.models.graph import (
    KnnGraph,
    bipartite_adjacency,
    cosine_knn,
    row_normalize,
    spmm,
    to_torch_csr,
)


class LATTICEConfig(MultimodalConfig):
    embedding_size: int = Field(64, gt=0, description="ID embedding size d (MMRec default 64)")
    reg_weight: float = Field(1e-5, ge=0, description="L2 weight on the batch's final embeddings "
                                                      "(original code regs[0]; MMRec grid 0…1e-3)")
    feat_embed_dim: int = Field(64, gt=0, description="width of the projections image_trs "
                                                      "/ text_trs (MMRec default 64)")
    knn_k: int = Field(10, gt=0, description="neighbours per item in every kNN "
                                             "graph (MMRec/paper default 10)")
    lambda_coeff: float = Field(0.9, ge=0, le=1, description="weight λ of the frozen "
                                                             "original graph in the item "
                                                             "graph (MMRec/paper default 0.9)")
    n_layers: int = Field(1, ge=0, description="item-graph convolution layers (MMRec default 1)")
    n_ui_layers: int = Field(2, ge=0, description="user–item propagation layers "
                                                  "(MMRec weight_size [64, 64] → 2)")
    cf_model: Literal["lightgcn", "mf"] = Field("lightgcn",
                                                description="collaborative backbone "
                                                            "(MMRec default lightgcn)")


class LATTICE(Recommender):
    name = "lattice"
    Config = LATTICEConfig
    feature_route = "graph"
    route_note = ("features build the learned item–item kNN graph, rebuilt from the "
                  "given features at inference, so a perturbation moves the scores "
                  "through its edge values; the score has no per-modality parts")
    item_local = False

    def __init__(self, dataset: Dataset, config: LATTICEConfig | None = None):
        super().__init__(dataset, config or LATTICEConfig())
        cfg = self.config
        d = cfg.embedding_size
        self.user_emb = xavier_parameter(self.n_users, d)
        self.item_emb = xavier_parameter(self.n_items, d)
        self.trs = nn.ModuleDict()
        for m in self.modalities:
            layer = nn.Linear(self.feature_dims[m], cfg.feat_embed_dim)
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
            self.trs[m] = layer
        # equal initial modality weights (MMRec: [0.5, 0.5]); softmax-normalised in use
        self.modal_weight = nn.Parameter(torch.full((len(self.modalities),),
                                                    1.0 / len(self.modalities)))
        # user–item propagation matrix P = D^{-1}(A + I) (MMRec LATTICE.get_adj_mat), not symmetric
        a = bipartite_adjacency((dataset.train > 0).astype(np.float32))
        p = row_normalize(a + sp.eye(a.shape[0], dtype=np.float32, format="csr"))
        self.register_buffer("adj", to_torch_csr(p), persistent=False)
        self.register_buffer("adj_t", to_torch_csr(p.T), persistent=False)
        # frozen original kNN graphs from the training-time raw features
        feats = dataset.feature_tensors("cpu", self.modalities)
        for m in self.modalities:
            with torch.no_grad():
                g = cosine_knn(feats[m], cfg.knn_k).normalized()
            self.register_buffer(f"original_indices_{m}", g.indices, persistent=False)
            self.register_buffer(f"original_values_{m}", g.values, persistent=False)
        # this epoch's item graph, constant CSR (A, Aᵀ)
        self._epoch_graph: tuple[Tensor, Tensor] | None = None
        self._rebuild = True

    # ------------------------------------------------------------- encoders
    def modality_embedding_dims(self) -> dict[str, int]:
        return {m: self.config.feat_embed_dim for m in self.modalities}

    def encode_modality(self, modality: str, x: Tensor) -> Tensor:
        return self.trs[modality](x)

    def original_graph(self, modality: str) -> KnnGraph:
        """S^m: the frozen, normalised kNN graph of the
        training-time raw features of ``modality``."""
        return KnnGraph(getattr(self, f"original_indices_{modality}"),
                        getattr(self, f"original_values_{modality}"))

    def modality_weights(self) -> Tensor:
        return torch.softmax(self.modal_weight, 0)

    def item_graph(self, features: Mapping[str, Tensor],
                   embedding_delta: Mapping[str, Tensor] | None = None) -> KnnGraph:
        """A = (1 − λ)·norm(Σ_m α_m kNN(cos(g^m(x_m) + δ_m))) + λ·Σ_m α_m S^m, differentiable in the
        features, δ, the projections and α through the edge values."""
        weights = self.modality_weights()
        learned, original = [], []
        for k, m in enumerate(self.modalities):
            z = self.encode_modality(m, features[m])
            if embedding_delta is not None and m in embedding_delta:
                z = z + embedding_delta[m]
            learned.append(cosine_knn(z, self.config.knn_k).scaled(weights[k]))
            original.append(self.original_graph(m).scaled(weights[k]))
        lam = self.config.lambda_coeff
        return KnnGraph.mix([KnnGraph.mix(learned).normalized().scaled(1.0 - lam),
                             KnnGraph.mix(original).scaled(lam)])

    # ------------------------------------------------------------- forward
    def propagate(self, graph: KnnGraph | tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        """(e_u for all users, e_i for all items) given
        the item graph A (or constant CSR (A, Aᵀ))."""
        h = self.item_emb
        for _ in range(self.config.n_layers):
            h = graph.propagate(h) if isinstance(graph, KnnGraph) else spmm(graph[0], h, graph[1])
        if self.config.cf_model == "mf":
            user, item = self.user_emb, self.item_emb
        else:
            layer = torch.cat([self.user_emb, self.item_emb], 0)
            total = layer
            for _ in range(self.config.n_ui_layers):
                layer = spmm(self.adj, layer, self.adj_t)
                total = total + layer
            out = total / (self.config.n_ui_layers + 1)
            user, item = out[: self.n_users], out[self.n_users:]
        return user, item + F.normalize(h, p=2, dim=1)

    def embed(self, features: Mapping[str, Tensor],
              embedding_delta: Mapping[str, Tensor] | None = None) -> Embeddings:
        """Rebuilds the learned graph from ``features`` (and δ) on every call, training or not."""
        self.check_inputs(features, embedding_delta)
        user, item = self.propagate(self.item_graph(features, embedding_delta))
        return Embeddings(user, item, {})

    # ------------------------------------------------------------- training
    def on_epoch_start(self, epoch: int) -> None:
        self._rebuild = True  # MMRec pre_epoch_processing: build_item_graph = True

    def loss(self, batch: Batch, features: Mapping[str, Tensor]) -> Tensor:
        stale = self._epoch_graph is None or self._epoch_graph[0].device != self.item_emb.device
        graph: KnnGraph | tuple[Tensor, Tensor]
        if self._rebuild or stale:
            graph = self.item_graph(features)  # with gradients, for this batch only
            self._epoch_graph, self._rebuild = graph.to_csr(self.n_items), False
        else:
            graph = self._epoch_graph  # detached for the epoch's other batches
        user, item = self.propagate(graph)
        u, i, j = rows(user, batch.users), rows(item, batch.pos), rows(item, batch.neg)
        return bpr_loss(dot(u, i), dot(u, j)) + self.config.reg_weight * l2_reg(u, i, j)
