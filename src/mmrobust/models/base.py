"""The model contract every attack, defense and evaluation relies on (METHODS.md §2).

A model is built from a :class:`~mmrobust.data.Dataset` and a typed config.  Its forward
pass takes the item feature matrices as an argument (``features``: modality → tensor), so
perturbed features are just another input, and returns :class:`Embeddings` from which
the fused score ŷ_ui = ⟨e_u, e_i⟩, full-ranking scores and the per-modality decomposition
ŷ_ui = Σ_m s^m_ui + s^rest_ui follow.  Two perturbation points exist:

* ``raw``: add δ_m to rows of x_m (the caller passes ``features`` + δ);
* ``embedding``: add δ_m to the per-modality item embeddings g^m(x_m) right before
  fusion or the graph (``embed(features, embedding_delta=δ)``).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from mmrobust.data import Dataset
from mmrobust.errors import UserError

PERTURBATION_POINTS = ("raw", "embedding")
#: How item features reach a model's score at inference:
#: ``none``: the model reads no features;
#: ``direct``: through differentiable encoders (and graphs over users and items) into ŷ;
#: ``graph``: only through an item–item graph built from the features, so a perturbation
#:   reaches ŷ only when the graph is (re)built from the perturbed features;
#: ``training-only``: features shape only the training loss; inference ignores them.
FEATURE_ROUTES = ("none", "direct", "graph", "training-only")


class ModelConfig(BaseModel):
    """Settings shared by every trainable model (MMRec defaults)."""

    model_config = ConfigDict(extra="forbid")

    embedding_size: int = Field(64, gt=0, description="embedding size d (MMRec default 64)")
    reg_weight: float = Field(1e-4, ge=0, description="L2 weight on the batch's embeddings")


class MultimodalConfig(ModelConfig):
    modalities: list[str] | None = Field(
        None, description="modalities the model reads (default: all of "
                          "the dataset's); one name = unimodal variant"
    )


@dataclass
class Batch:
    """A batch of BPR triples (user, positive item, negative item), as index tensors."""

    users: Tensor
    pos: Tensor
    neg: Tensor

    def to(self, device: torch.device) -> Batch:
        return Batch(self.users.to(device), self.pos.to(device), self.neg.to(device))

    def __len__(self) -> int:
        return int(self.users.shape[0])


@dataclass
class Embeddings:
    """One forward pass: ŷ_ui = ⟨user[u], item[i]⟩ and, per modality m,
    s^m_ui = ⟨parts[m][0][u], parts[m][1][i]⟩ from modality m's own embeddings."""

    user: Tensor
    item: Tensor
    parts: dict[str, tuple[Tensor, Tensor]]

    def full_scores(self, users: Tensor) -> Tensor:
        """Scores of every item for a batch of users: [B, n_items]."""
        return rows(self.user, users) @ self.item.T

    def pair_scores(self, users: Tensor, items: Tensor) -> Tensor:
        return dot(rows(self.user, users), rows(self.item, items))

    def modality_scores(self, users: Tensor, items: Tensor) -> dict[str, Tensor]:
        """{m: s^m_ui} for every modality plus ``rest`` = ŷ − Σ_m s^m (ID part and
        cross-modal terms)."""
        out = {m: dot(rows(u, users), rows(i, items)) for m, (u, i) in self.parts.items()}
        out["rest"] = self.pair_scores(users, items) - sum(out.values(), torch.zeros(()))
        return out

    def modality_full_scores(self, users: Tensor) -> dict[str, Tensor]:
        out = {m: rows(u, users) @ i.T for m, (u, i) in self.parts.items()}
        out["rest"] = self.full_scores(users) - sum(out.values(), torch.zeros(()))
        return out


def rows(table: Tensor, index: Tensor) -> Tensor:
    """``table[index]`` via ``index_select``, whose
    backward (index_add) is fast and deterministic on CPU."""
    return table.index_select(0, index)


def dot(a: Tensor, b: Tensor) -> Tensor:
    """Row-wise inner products."""
    return (a * b).sum(-1)


def bpr_loss(pos_scores: Tensor, neg_scores: Tensor) -> Tensor:
    """L_BPR = −mean log σ(ŷ_ui − ŷ_uj)."""
    return -F.logsigmoid(pos_scores - neg_scores).mean()


def l2_reg(*tensors: Tensor) -> Tensor:
    """Σ‖·‖² / (2·batch), the usual per-batch L2 penalty on embeddings."""
    batch = tensors[0].shape[0]
    total = sum((t.pow(2).sum() for t in tensors), torch.zeros((), device=tensors[0].device))
    return total / (2 * batch)


class Recommender(nn.Module):
    """Base class of the zoo.  Subclasses implement :meth:`embed` and, when they read
    features, :meth:`encode_modality`; they may override :meth:`score` and :meth:`loss`
    with cheaper equivalents."""

    name: ClassVar[str] = "recommender"
    Config: ClassVar[type[ModelConfig]] = ModelConfig
    #: how item features reach the score (one of FEATURE_ROUTES)
    feature_route: ClassVar[str] = "none"
    #: one sentence for result tables: how a feature perturbation reaches the score
    route_note: ClassVar[str] = "the model reads no item features"
    #: True when perturbing item i's features changes only item i's representation (no
    #: graph carries it to users or other items); attacks then batch targets exactly
    item_local: ClassVar[bool] = False
    trainable: ClassVar[bool] = True

    @classmethod
    def route_of(cls, config: ModelConfig) -> str:
        """The feature route of this model under ``config`` (a setting may change it)."""
        return cls.feature_route

    @classmethod
    def parts_of(cls, config: ModelConfig) -> bool:
        """Whether the score decomposes into per-modality parts s^m under ``config`` (every
        model of the zoo whose score reads the features directly does; override otherwise)."""
        return cls.route_of(config) == "direct"

    def __init__(self, dataset: Dataset, config: ModelConfig):
        super().__init__()
        self.config = config
        self.n_users = dataset.n_users
        self.n_items = dataset.n_items
        self.modalities: tuple[str, ...] = self._select_modalities(dataset, config)
        self.feature_dims = {m: dataset.feature_dims()[m] for m in self.modalities}

    def _select_modalities(self, dataset: Dataset, config: ModelConfig) -> tuple[str, ...]:
        if self.feature_route == "none":
            return ()
        wanted = getattr(config, "modalities", None) or list(dataset.modalities)
        unknown = [m for m in wanted if m not in dataset.features]
        if unknown:
            raise UserError(
                f"{self.name} was asked for modality {', '.join(unknown)} but dataset "
                f"'{dataset.name}' has {', '.join(dataset.modalities) or 'no features'}"
            )
        if not wanted:
            raise UserError(f"{self.name} reads item features but "
                             f"dataset '{dataset.name}' has none")
        return tuple(wanted)

    def __deepcopy__(self, memo: dict) -> Recommender:
        """Deep copy that shares the constant sparse
        operators (CSR tensors cannot be deep-copied)."""
        for module in self.modules():
            for value in list(module._buffers.values()) + list(vars(module).values()):
                if isinstance(value, Tensor) and value.layout != torch.strided:
                    memo[id(value)] = value
                elif isinstance(value, tuple) and any(
                        isinstance(v, Tensor) and v.layout != torch.strided for v in value):
                    memo[id(value)] = value
        clone = self.__class__.__new__(self.__class__)
        memo[id(self)] = clone
        for key, value in vars(self).items():
            clone.__dict__[key] = copy.deepcopy(value, memo)
        return clone

    @property
    def device(self) -> torch.device:
        for tensor in list(self.parameters()) + list(self.buffers()):
            return tensor.device
        return torch.device("cpu")

    # ------------------------------------------------------------- contract
    def embed(self, features: Mapping[str, Tensor],
              embedding_delta: Mapping[str, Tensor] | None = None) -> Embeddings:
        """User and item representations for all users and items."""
        raise NotImplementedError

    def encode_modality(self, modality: str, x: Tensor) -> Tensor:
        """g^m: raw feature rows of ``modality`` → that modality's item embeddings."""
        raise NotImplementedError(f"{self.name} has no per-modality "
                                  "item encoder (it reads no features)")

    def modality_embedding_dims(self) -> dict[str, int]:
        """Width of g^m's output per modality (the ``embedding`` perturbation point)."""
        return {}

    def perturbation_shape(self, point: str, modality: str) -> tuple[int, int]:
        if point not in PERTURBATION_POINTS:
            raise UserError(f"unknown perturbation point '{point}'; use "
                             f"one of {', '.join(PERTURBATION_POINTS)}")
        if modality not in self.modalities:
            raise UserError(f"{self.name} does not read modality '{modality}' "
                             f"(it reads {', '.join(self.modalities) or 'none'})")
        dims = self.feature_dims if point == "raw" else self.modality_embedding_dims()
        return (self.n_items, dims[modality])

    def score(self, features: Mapping[str, Tensor], users: Tensor, items: Tensor,
              embedding_delta: Mapping[str, Tensor] | None = None) -> Tensor:
        """ŷ_ui for pairs (users[k], items[k])."""
        return self.embed(features, embedding_delta).pair_scores(users, items)

    def bpr_scores(self, features: Mapping[str, Tensor], batch: Batch,
                   embedding_delta: Mapping[str, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """(ŷ_ui, ŷ_uj) for a batch of triples (one forward pass)."""
        emb = self.embed(features, embedding_delta)
        return emb.pair_scores(batch.users, batch.pos), emb.pair_scores(batch.users, batch.neg)

    def on_epoch_start(self, epoch: int) -> None:
        """Called by the trainer before every training epoch (e.g. to rebuild a learned graph)."""

    def loss(self, batch: Batch, features: Mapping[str, Tensor]) -> Tensor:
        """The model's own training loss for a batch (BPR + L2 by default)."""
        emb = self.embed(features)
        u, i, j = rows(emb.user, batch.users), rows(emb.item, batch.pos), rows(emb.item, batch.neg)
        return bpr_loss(dot(u, i), dot(u, j)) + self.config.reg_weight * l2_reg(u, i, j)

    # ------------------------------------------------------------- checks
    def check_inputs(self, features: Mapping[str, Tensor],
                     embedding_delta: Mapping[str, Tensor] | None = None) -> None:
        for m in self.modalities:
            if m not in features:
                raise ValueError(f"{self.name} needs feature matrix '{m}' "
                                 f"but got {', '.join(features) or 'none'}")
            x = features[m]
            if x.dim() != 2 or tuple(x.shape) != (self.n_items, self.feature_dims[m]):
                raise ValueError(f"feature matrix '{m}' has shape {tuple(x.shape)}; "
                                 f"{self.name} expects {(self.n_items, self.feature_dims[m])}")
        for m, delta in (embedding_delta or {}).items():
            expected = self.perturbation_shape("embedding", m)
            if tuple(delta.shape) != expected:
                raise ValueError(f"embedding perturbation for '{m}' has shape "
                                 f"{tuple(delta.shape)}; expected {expected}")


def xavier_parameter(*shape: int) -> nn.Parameter:
    return nn.Parameter(nn.init.xavier_uniform_(torch.empty(*shape)))
