"""Perturbation budgets: per item row and modality, L2 or L∞, relative or absolute.

A relative budget gives row i of modality m the radius ε_{m,i} = r_m · ‖x_{m,i}‖ where x
is the clean row at the perturbation point (raw features, or the modality embedding
g^m(x_{m,i}) at the ``embedding`` point) and ‖·‖ is the ``reference`` norm (L2 by
default, as METHODS.md §3 and §7: an L∞ budget then allows each coordinate to move by
r·‖x_{m,i}‖₂, as in the Band Together public code; ``reference: linf`` gives r·‖x_{m,i}‖_∞).
An absolute budget gives every row the radius ε_m.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import Tensor

from mmrobust.errors import UserError

Norm = Literal["l2", "linf"]


class Budget(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    eps: float | dict[str, float] = Field(0.05, description="r (relative) or ε (absolute); "
                                                            "a dict sets it per modality")
    norm: Norm = Field("l2", description="norm of each row's perturbation")
    relative: bool = Field(True, description="radius relative to the clean "
                                             "row's norm (else absolute)")
    reference: Norm = Field("l2", description="norm of the clean row that a "
                                              "relative budget is a fraction of")

    @field_validator("eps")
    @classmethod
    def _non_negative(cls, value: float | dict[str, float]) -> float | dict[str, float]:
        values = value.values() if isinstance(value, dict) else [value]
        if any(v < 0 or v != v for v in values):
            raise UserError(f"budget eps must be non-negative numbers, got {value}")
        return value

    def eps_for(self, modality: str) -> float:
        if isinstance(self.eps, dict):
            if modality not in self.eps:
                raise UserError(f"the budget sets eps for {', '.join(self.eps)} "
                                 f"but not for modality '{modality}'")
            return float(self.eps[modality])
        return float(self.eps)

    def radius(self, modality: str, clean_rows: Tensor) -> Tensor:
        """Per-row radius [n_rows] for the clean rows of ``modality`` at the perturbation point."""
        eps = self.eps_for(modality)
        if not self.relative:
            return torch.full((clean_rows.shape[0],), eps, dtype=clean_rows.dtype,
                              device=clean_rows.device)
        return eps * row_norm(clean_rows.detach(), self.reference)

    def describe(self) -> str:
        kind = "relative" if self.relative else "absolute"
        return f"{self.norm} {kind} eps={self.eps}"

    def scaled(self, eps: float | dict[str, float]) -> Budget:
        return self.model_copy(update={"eps": eps})


def row_norm(x: Tensor, norm: Norm) -> Tensor:
    return x.norm(dim=1) if norm == "l2" else x.abs().amax(dim=1)


def project_rows(delta: Tensor, radius: Tensor, norm: Norm) -> Tensor:
    """Project every row of ``delta`` onto its ball of the given radius (L2 ball or L∞ box)."""
    if norm == "linf":
        r = radius.unsqueeze(1)
        return torch.maximum(torch.minimum(delta, r), -r)
    norms = delta.norm(dim=1, keepdim=True)
    scale = torch.clamp(radius.unsqueeze(1) / norms.clamp_min(1e-12), max=1.0)
    return delta * scale


def steepest_direction(grad: Tensor, norm: Norm) -> Tensor:
    """Per-row steepest-ascent direction of unit
    norm: g/‖g‖₂ (L2) or sign(g) (L∞); 0 where g = 0."""
    if norm == "linf":
        return grad.sign()
    return grad / grad.norm(dim=1, keepdim=True).clamp_min(1e-30)


def random_direction(shape: tuple[int, ...], norm: Norm, generator: torch.Generator,
                     device: torch.device | str = "cpu",
                     dtype: torch.dtype = torch.float32) -> Tensor:
    """Random rows of unit norm: uniform on the L2
    sphere, or random signs (a corner of the L∞ box)."""
    if norm == "linf":
        signs = torch.randint(0, 2, shape, generator=generator, device="cpu")
        return signs.to(device, dtype) * 2 - 1
    g = torch.randn(shape, generator=generator, device="cpu").to(device, dtype)
    return g / g.norm(dim=1, keepdim=True).clamp_min(1e-30)
