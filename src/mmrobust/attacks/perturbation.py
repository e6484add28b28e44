"""A perturbation: modality → δ at a perturbation point, with its budget and the radii used."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from mmrobust.attacks.budget import Budget, project_rows, row_norm
from mmrobust.errors import UserError
from mmrobust.models import PERTURBATION_POINTS, Recommender


@dataclass
class Perturbation:
    """``deltas[m]`` has one row per perturbed item (``items``; all items when None).

    ``radius[m]`` holds each row's budget radius.  :meth:`inputs` turns the perturbation
    into the ``(features, embedding_delta)`` pair that :meth:`Recommender.embed` and every
    evaluation take, so clean and attacked evaluation share one code path.
    """

    point: str
    deltas: dict[str, Tensor]
    radius: dict[str, Tensor]
    budget: Budget
    items: Tensor | None = None
    info: dict[str, object] = field(default_factory=dict)

    @classmethod
    def zeros(cls, model: Recommender, features: Mapping[str, Tensor], budget: Budget,
              point: str = "raw",
              modalities: Sequence[str] | None = None, items: Tensor | None = None) -> Perturbation:
        """A zero perturbation of ``modalities`` (default:
        all the model reads) for ``items`` (default: all)."""
        if point not in PERTURBATION_POINTS:
            raise UserError(f"unknown perturbation point '{point}'; use "
                             f"one of {', '.join(PERTURBATION_POINTS)}")
        names = tuple(modalities) if modalities else model.modalities
        if not names:
            raise UserError(f"{model.name} reads no item features, so there is nothing to perturb")
        deltas, radius = {}, {}
        for m in names:
            model.perturbation_shape(point, m)  # validates the modality
            clean = clean_rows(model, features, m, point, items)
            radius[m] = budget.radius(m, clean)
            deltas[m] = torch.zeros_like(clean)
        return cls(point, deltas, radius, budget, items)

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.deltas)

    def project(self) -> Perturbation:
        """Enforce the budget row by row (in place) and return self."""
        for m, delta in self.deltas.items():
            self.deltas[m] = project_rows(delta, self.radius[m], self.budget.norm)
        return self

    def detached(self) -> Perturbation:
        return Perturbation(self.point, {m: d.detach() for m, d in self.deltas.items()},
                            self.radius, self.budget, self.items, dict(self.info))

    def requires_grad_(self) -> Perturbation:
        for m, delta in self.deltas.items():
            self.deltas[m] = delta.detach().requires_grad_(True)
        return self

    def norms(self) -> dict[str, dict[str, float]]:
        """Norms actually used per modality: mean and max row norm, and max norm / radius."""
        out = {}
        for m, delta in self.deltas.items():
            n = row_norm(delta.detach(), self.budget.norm)
            r = self.radius[m]
            ratio = torch.where(r > 0, n / r.clamp_min(1e-30), torch.where(n > 0, torch.inf, 0.0))
            out[m] = {"mean_norm": float(n.mean()), "max_norm": float(n.max()),
                      "max_ratio_to_radius": float(ratio.max()), "mean_radius": float(r.mean())}
        return out

    def inputs(self, model: Recommender, features: Mapping[str, Tensor]
               ) -> tuple[dict[str, Tensor], dict[str, Tensor] | None]:
        """``(features, embedding_delta)`` to pass to
        ``model.embed`` (differentiable in the deltas)."""
        if self.point == "raw":
            feats = dict(features)
            for m, delta in self.deltas.items():
                feats[m] = _scatter_add(features[m], delta, self.items)
            return feats, None
        emb_delta = {}
        for m, delta in self.deltas.items():
            base = torch.zeros(model.perturbation_shape("embedding", m), dtype=delta.dtype,
                               device=delta.device)
            emb_delta[m] = _scatter_add(base, delta, self.items)
        return dict(features), emb_delta


def clean_rows(model: Recommender, features: Mapping[str, Tensor], modality: str, point: str,
               items: Tensor | None = None) -> Tensor:
    """The clean rows of ``modality`` at ``point``:
    raw features, or g^m(x) at the embedding point."""
    x = features[modality] if items is None else features[modality].index_select(0, items)
    if point == "raw":
        return x.detach()
    with torch.no_grad():
        return model.encode_modality(modality, x).detach()


def _scatter_add(base: Tensor, delta: Tensor, items: Tensor | None) -> Tensor:
    if items is None:
        return base + delta
    return base.index_add(0, items, delta)
