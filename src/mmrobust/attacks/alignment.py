"""Cross-modal gradient alignment (Band Together §4.2, METHODS.md §7).

The modalities' perturbation gradients live in different spaces (raw features of different
widths, or modality embeddings of different widths), so they are compared after mapping
each into the shared item-representation space: the Jacobian-vector product
J_m g_m = d/dt e_i(δ + t·g_m) of the perturbed items' final representations e_i along the
gradient of modality m.  The alignment of a row is the mean over modality pairs of
cos(J_a g_a, J_b g_b).  Everything is built with ``create_graph=True``, so the term can be
differentiated again (second-order gradients) by the attack or defense that maximises it.
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import combinations

import torch
import torch.nn.functional as F
from torch import Tensor

from mmrobust.attacks.perturbation import Perturbation
from mmrobust.errors import UserError
from mmrobust.models import Recommender


def mapped_gradients(model: Recommender, features: Mapping[str, Tensor], pert: Perturbation,
                     grads: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """{m: J_m g_m} for the perturbed rows ([n_rows, D] in the item-representation space)."""
    if pert.items is None:
        raise ValueError("gradient alignment needs the perturbation's item rows (items=...)")
    emb = model.embed(*pert.inputs(model, features))
    rows = emb.item.index_select(0, pert.items)
    probe = torch.zeros_like(rows, requires_grad=True)
    out = {}
    for m, grad in grads.items():
        (vjp,) = torch.autograd.grad(rows, pert.deltas[m], probe, create_graph=True,
                                     allow_unused=True)
        if vjp is None:
            raise UserError(f"{model.name}'s item representation does not read modality '{m}' "
                             f"at the {pert.point} point, so its gradient cannot be aligned")
        (jvp,) = torch.autograd.grad(vjp, probe, grad, create_graph=True)
        out[m] = jvp
    return out


def alignment(model: Recommender, features: Mapping[str, Tensor], pert: Perturbation,
              grads: Mapping[str, Tensor]) -> Tensor:
    """Per-row mean over modality pairs of cos(J_a g_a, J_b g_b): a tensor [n_rows]."""
    if len(grads) < 2:
        raise UserError("gradient alignment needs at least two perturbed modalities")
    mapped = mapped_gradients(model, features, pert, grads)
    cosines = [F.cosine_similarity(mapped[a], mapped[b], dim=1, eps=1e-12)
               for a, b in combinations(mapped, 2)]
    return torch.stack(cosines).mean(0)
