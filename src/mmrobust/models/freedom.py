"""FREEDOM (Zhou & Shen, ACM MM'23, "A Tale of Two Graphs: Freezing and Denoising Graph
Structures for Multimodal Recommendation"), following MMRec's ``FREEDOM``.

* Frozen item–item graph, built once at construction from the raw features:
  S = Σ_m w_m · norm(kNN_k(cos(x_m))) with unweighted (0/1) kNN edges, norm(A) = D^{-1/2} A D^{-1/2}
  with row-sum degrees (every kNN row has k edges, so each edge weighs 1/k), and
  w_image = ``mm_image_weight``, the other modalities sharing 1 − w_image (MMRec: image and text).
* Degree-sensitive edge pruning: once per epoch (:meth:`on_epoch_start`, MMRec's
  ``pre_epoch_processing``) ⌊(1 − dropout)·|E|⌋ interactions are drawn without replacement
  with probability ∝ 1/√(d_u d_i), and the kept bipartite graph is re-normalised,
  Â'_ui = 1/√(d'_u d'_i).  Training propagates on this pruned graph; inference on the full
  Â = D^{-1/2} A D^{-1/2} (MMRec's ``full_sort_predict`` uses ``norm_adj``).
* LightGCN: E = mean_{l=0..L_ui} Â^l [e_user; e_item]; item graph: h = S^{L_mm} e_item;
  e_u = E_u, e_i = E_i + h_i, ŷ_ui = ⟨e_u, e_i⟩.
* Loss (MMRec's code): BPR(ŷ) + reg_weight · Σ_m BPR(⟨e_u, z^m_i⟩ − ⟨e_u, z^m_j⟩) with the
  projections z^m = g^m(x_m) = W_m x_m + b_m ∈ R^d (``image_trs`` / ``text_trs``; MMRec's
  ``feat_embed_dim`` must equal d as z^m is scored against e_u, so it is not a separate
  setting here); there is no L2 term.

At inference the features reach nothing: the item graph was frozen at construction and the
projections enter only the training loss (``parts`` is empty; ``embedding_delta``, added to
the projections, changes no score).  With ``rebuild_graph_at_inference`` the item graph is
rebuilt in eval mode from the features given to :meth:`embed` (a re-indexing scenario);
its 0/1 edges have no gradient, so the edge values are 1 in the forward pass and carry the
cosine similarity's gradient (straight-through: v = 1 + s − stopgrad(s)).

Deviations from MMRec: the features are an input (MMRec fine-tunes a copy of the raw
features as an ``nn.Embedding``; here they are not trained); the projections use Xavier
initialisation (MMRec: PyTorch's default) with zero bias; the feature BPR terms project only
the batch's items (same values and gradients as projecting every item); any number of
modalities; ``lambda_coeff`` of MMRec's YAML is unused by its code and omitted here; kNN
graphs are built in chunks, never as a dense I×I matrix.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import numpy as np
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
    rows,
    xavier_parameter,
)
from mmrobust.models.graph import (
    KnnGraph,
    bipartite_adjacency,
    cosine_knn,
    spmm,
    sym_normalize,
    sym_spmm,
    to_torch_csr,
)


class FREEDOMConfig(MultimodalConfig):
    embedding_size: int = Field(64, gt=0, description="ID embedding size d (MMRec default 64)")
    reg_weight: float = Field(1e-4, ge=0, description="weight of the projected-feature "
                                                      "BPR terms, no L2 (MMRec "
                                                      "reg_weight grid 0…1e-3; 1e-4 here)")
    knn_k: int = Field(10, gt=0, description="neighbours per item in the frozen "
                                             "kNN graph (MMRec/paper default 10)")
    n_mm_layers: int = Field(1, ge=0, description="item–item graph layers (MMRec default 1)")
    n_ui_layers: int = Field(2, ge=0, description="user–item LightGCN layers (MMRec default 2)")
    mm_image_weight: float = Field(0.1, ge=0, le=1, description="weight of the image kNN graph "
                                                                "in the mix (MMRec default 0.1)")
    dropout: float = Field(0.8, ge=0, lt=1, description="share of interactions pruned each epoch "
                                                        "(MMRec grid [0.8, 0.9]; its first value)")
    rebuild_graph_at_inference: bool = Field(False, description="rebuild the item kNN graph "
                                                                "from the given features in "
                                                                "eval mode (not in MMRec)")


def mix_weights(modalities: tuple[str, ...], image_weight: float) -> dict[str, float]:
    """w_m of the item-graph mix: image gets ``image_weight`` and the others share the rest
    (MMRec: image 0.1, text 0.9); one modality gets 1; without image, equal weights."""
    if len(modalities) == 1:
        return {modalities[0]: 1.0}
    if "image" not in modalities:
        return {m: 1.0 / len(modalities) for m in modalities}
    rest = (1.0 - image_weight) / (len(modalities) - 1)
    return {m: image_weight if m == "image" else rest for m in modalities}


class FREEDOM(Recommender):
    name = "freedom"
    Config = FREEDOMConfig
    feature_route = "graph"
    route_note = ("features only build the item–item kNN graph, frozen when the model "
                  "is built, and a training-loss term, so a feature perturbation does "
                  "not reach the score at inference unless the graph is rebuilt "
                  "(rebuild_graph_at_inference); the score has no per-modality parts")
    item_local = False

    @classmethod
    def route_of(cls, config: FREEDOMConfig) -> str:
        """'graph' when the kNN graph is rebuilt from the given features, else 'training-only'."""
        return "graph" if config.rebuild_graph_at_inference else "training-only"

    def __init__(self, dataset: Dataset, config: FREEDOMConfig | None = None):
        super().__init__(dataset, config or FREEDOMConfig())
        cfg = self.config
        d = cfg.embedding_size
        self.user_emb = xavier_parameter(self.n_users, d)
        self.item_emb = xavier_parameter(self.n_items, d)
        self.trs = nn.ModuleDict()
        for m in self.modalities:
            # scored against e_u: MMRec's feat_embed_dim = d
            layer = nn.Linear(self.feature_dims[m], d)
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
            self.trs[m] = layer
        self.weights = mix_weights(self.modalities, cfg.mm_image_weight)
        train = (dataset.train > 0).astype(np.float32).tocoo()
        self.register_buffer("adj", to_torch_csr(sym_normalize(bipartite_adjacency(train.tocsr()))),
                             persistent=False)
        # interactions and their pruning weights 1/√(d_u d_i)
        users, items = train.row.astype(np.int64), train.col.astype(np.int64)
        deg_u = np.bincount(users, minlength=self.n_users).astype(np.float64)
        deg_i = np.bincount(items, minlength=self.n_items).astype(np.float64)
        self.register_buffer("edge_users", torch.from_numpy(users), persistent=False)
        self.register_buffer("edge_items", torch.from_numpy(items), persistent=False)
        self.register_buffer("edge_weight",
                             torch.from_numpy((deg_u[users] * deg_i[items]) ** -0.5).float(),
                             persistent=False)
        self.register_buffer("masked_adj", None, persistent=False)
        with torch.no_grad():
            graph = self.build_item_graph(dataset.feature_tensors("cpu", self.modalities))
        self.register_buffer("mm_indices", graph.indices, persistent=False)
        self.register_buffer("mm_values", graph.values, persistent=False)
        adj, adj_t = graph.to_csr(self.n_items)  # the same graph as CSR, for faster propagation
        self.register_buffer("mm_adj", adj, persistent=False)
        self.register_buffer("mm_adj_t", adj_t, persistent=False)

    # ------------------------------------------------------------- graphs
    def build_item_graph(self, features: Mapping[str, Tensor],
                         straight_through: bool = False) -> KnnGraph:
        """S = Σ_m w_m norm(kNN_k(cos(x_m))) with 0/1 edges; with ``straight_through`` the edge
        values are 1 + s − stopgrad(s) (s the cosine similarity), equal in value, differentiable."""
        graphs = []
        for m in self.modalities:
            if straight_through:
                g = cosine_knn(features[m], self.config.knn_k)
                g = KnnGraph(g.indices, 1.0 + (g.values - g.values.detach()))
            else:
                g = cosine_knn(features[m], self.config.knn_k, binary=True)
            graphs.append(g.normalized().scaled(self.weights[m]))
        return KnnGraph.mix(graphs)

    @property
    def item_graph(self) -> KnnGraph:
        """The frozen item–item graph built at construction."""
        return KnnGraph(self.mm_indices, self.mm_values)

    def prune_edges(self) -> Tensor:
        """A freshly sampled, re-normalised pruned user–item adjacency (symmetric CSR, (U+I)²)."""
        if self.config.dropout <= 0:
            return self.adj
        n_keep = int(self.edge_weight.shape[0] * (1.0 - self.config.dropout))
        keep = torch.multinomial(self.edge_weight, n_keep, replacement=False)
        u, i = self.edge_users[keep], self.edge_items[keep]
        deg_u = torch.bincount(u, minlength=self.n_users).float() + 1e-7
        deg_i = torch.bincount(i, minlength=self.n_items).float() + 1e-7
        values = deg_u[u].rsqrt() * deg_i[i].rsqrt()
        index = torch.stack([torch.cat([u, i + self.n_users]), torch.cat([i + self.n_users, u])])
        n = self.n_users + self.n_items
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            coo = torch.sparse_coo_tensor(index, torch.cat([values, values]), (n, n),
                                          check_invariants=False)
            return coo.coalesce().to_sparse_csr()

    def on_epoch_start(self, epoch: int) -> None:
        self.masked_adj = self.prune_edges()  # MMRec pre_epoch_processing

    def _training_adj(self) -> Tensor:
        if self.masked_adj is None or self.masked_adj.device != self.adj.device:
            self.masked_adj = self.prune_edges()
        return self.masked_adj

    # ------------------------------------------------------------- encoders
    def modality_embedding_dims(self) -> dict[str, int]:
        return {m: self.config.embedding_size for m in self.modalities}

    def encode_modality(self, modality: str, x: Tensor) -> Tensor:
        return self.trs[modality](x)

    # ------------------------------------------------------------- forward
    def propagate(self, adj: Tensor, graph: KnnGraph | None = None) -> tuple[Tensor, Tensor]:
        """(e_u, e_i) on the user–item adjacency ``adj``
        with item graph ``graph`` (default: the frozen one)."""
        h = self.item_emb
        for _ in range(self.config.n_mm_layers):
            h = spmm(self.mm_adj, h, self.mm_adj_t) if graph is None else graph.propagate(h)
        layer = torch.cat([self.user_emb, self.item_emb], 0)
        total = layer
        for _ in range(self.config.n_ui_layers):
            layer = sym_spmm(adj, layer)
            total = total + layer
        out = total / (self.config.n_ui_layers + 1)
        return out[: self.n_users], out[self.n_users:] + h

    def embed(self, features: Mapping[str, Tensor],
              embedding_delta: Mapping[str, Tensor] | None = None) -> Embeddings:
        """Eval mode: the full user–item graph (MMRec's full_sort_predict) and the frozen item
        graph, or one rebuilt from ``features`` with ``rebuild_graph_at_inference``; training mode:
        the epoch's pruned graph.  ``embedding_delta`` (on the projections) reaches no score."""
        self.check_inputs(features, embedding_delta)
        if self.training:
            user, item = self.propagate(self._training_adj())
        else:
            graph = (self.build_item_graph(features, straight_through=True)
                     if self.config.rebuild_graph_at_inference else None)
            user, item = self.propagate(self.adj, graph)
        return Embeddings(user, item, {})

    def feature_bpr(self, user: Tensor, batch: Batch, features: Mapping[str, Tensor],
                    embedding_delta: Mapping[str, Tensor] | None = None) -> Tensor:
        """Σ_m BPR(⟨e_u, z^m_i⟩, ⟨e_u, z^m_j⟩) with z^m
        = g^m(x_m) (+ δ_m), ``user`` = e_u of the batch."""
        uniq, inverse = torch.unique(torch.cat([batch.pos, batch.neg]), return_inverse=True)
        total = torch.zeros((), device=user.device)
        for m in self.modalities:
            z = self.encode_modality(m, rows(features[m], uniq))
            if embedding_delta is not None and m in embedding_delta:
                z = z + rows(embedding_delta[m], uniq)
            z = rows(z, inverse)
            zi, zj = z[: len(batch)], z[len(batch):]
            total = total + bpr_loss(dot(user, zi), dot(user, zj))
        return total

    def loss(self, batch: Batch, features: Mapping[str, Tensor]) -> Tensor:
        user, item = self.propagate(self._training_adj())
        u, i, j = rows(user, batch.users), rows(item, batch.pos), rows(item, batch.neg)
        return (bpr_loss(dot(u, i), dot(u, j))
                + self.config.reg_weight * self.feature_bpr(u, batch, features))
