"""Cross-modal gradient mismatch (Band Together §3, METHODS.md §8).

For a target t and attack users A: per-user gradients g^m_u = ∂ℓ_u/∂δ_m of the promotion
loss ℓ_u = h(ŷ_ut − τ_ut); directional contributions c^m_u = ⟨g^m_u, G^m⟩ / ‖G^m‖ with
G^m = Σ_u g^m_u; U_m = the top-k users by c^m; the overlap Jaccard(U_a, U_b) for every pair
of modalities; and the attack gain (RI of HR@K on A) when the promotion loss is built
over U_a, U_b or all of A.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import combinations

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from tqdm.auto import tqdm

from mmrobust.attacks import (
    FGSM,
    Budget,
    Perturbation,
    PromotionAttack,
    PromotionConfig,
    PromotionObjective,
)
from mmrobust.attacks.promotion import surrogate
from mmrobust.data import Dataset
from mmrobust.evaluation.promotion import target_hits
from mmrobust.models import Recommender


def per_user_gradients(model: Recommender, dataset: Dataset, target: int, users: np.ndarray,
                       features: Mapping[str, Tensor], config: PromotionConfig, point: str = "raw",
                       chunk: int = 64) -> dict[str, Tensor]:
    """{m: [|users|, D_m]} gradients of each user's promotion loss ℓ_u = h(ŷ_ut − τ_ut) w.r.t.
    the target's δ_m, at δ = 0.

    Item-local models: ŷ_ut = ⟨e_u, e_t(δ)⟩ with only e_t reading δ, so
    ∇_δ ℓ_u = h'(z_u) · J_tᵀ e_u; the Jacobian J_t of the target's representation is built
    with one backward pass per representation dimension and shared by all users.  Other
    models get one vector-Jacobian product per user, batched ``chunk`` users at a time.
    """
    device = model.device
    target_t = torch.tensor([target], device=device)
    users_t = torch.as_tensor(users, dtype=torch.long, device=device)
    objective = PromotionObjective(model, dataset, features, target_t, users_t, config, 1.0, point,
                                   fixed_threshold=True)
    pert = Perturbation.zeros(model, features, Budget(eps=1.0), point, None,
                              target_t).requires_grad_()
    names, deltas = list(pert.deltas), list(pert.deltas.values())
    model.eval()
    with torch.enable_grad():
        if model.item_local:
            emb = model.embed(*pert.inputs(model, features))
            v = emb.item[target]
            rows = [torch.autograd.grad(v, deltas, grad_outputs=basis, retain_graph=True,
                                        allow_unused=True)
                    for basis in torch.eye(v.shape[0], device=device)]
            jac = {m: torch.stack([_dense(r[k], deltas[k])[0] for r in rows])
                   for k, m in enumerate(names)}
            e_users = emb.user.index_select(0, users_t).detach()
            z = e_users @ v.detach() - objective.tau[:, 0]
            weight = _surrogate_slope(z, config.surrogate, 1.0)
            return {m: weight.unsqueeze(1) * (e_users @ jac[m]) for m in names}
        losses = surrogate(objective.target_scores(pert)[:, 0] - objective.tau[:, 0],
                           config.surrogate, 1.0)
        out: dict[str, list[Tensor]] = {m: [] for m in names}
        for start in range(0, len(users), chunk):
            n = min(chunk, len(users) - start)
            basis = torch.zeros(n, len(users), device=device)
            basis[torch.arange(n), torch.arange(start, start + n)] = 1.0
            grads = torch.autograd.grad(losses, deltas, grad_outputs=basis, is_grads_batched=True,
                                        retain_graph=True)
            for m, g in zip(names, grads, strict=True):
                out[m].append(g[:, 0, :].detach())
    return {m: torch.cat(v) for m, v in out.items()}


def _dense(grad: Tensor | None, like: Tensor) -> Tensor:
    return torch.zeros_like(like) if grad is None else grad


def _surrogate_slope(z: Tensor, kind: str, margin: float) -> Tensor:
    """h'(z): σ(−z) for log σ, 1[z + m > 0] for ReLU(z + m)."""
    return torch.sigmoid(-z) if kind == "logsigmoid" else (z + margin > 0).to(z.dtype)


def directional_contributions(grads: dict[str, Tensor]) -> dict[str, Tensor]:
    """c^m_u = ⟨g^m_u, Σ_u' g^m_u'⟩ / ‖Σ_u' g^m_u'‖ (METHODS.md §8)."""
    out = {}
    for m, g in grads.items():
        total = g.sum(0)
        out[m] = g @ total / total.norm().clamp_min(1e-30)
    return out


def top_users(contrib: Tensor, users: np.ndarray, k: int) -> np.ndarray:
    return users[torch.topk(contrib, min(k, len(users))).indices.cpu().numpy()]


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    sa, sb = set(a.tolist()), set(b.tolist())
    return len(sa & sb) / max(1, len(sa | sb))


def mismatch_analysis(model: Recommender, dataset: Dataset, targets: Sequence[int],
                      users: np.ndarray,
                      budget: float = 0.05, top_share: float = 0.1, k_hr: int = 50,
                      point: str = "raw",
                      config: PromotionConfig | None = None, gains: bool = True) -> pd.DataFrame:
    """One row per (target, modality pair): Jaccard of the top users and, with ``gains``,
    HR@``k_hr`` on A before and after an FGSM promotion whose loss is built over U_m (each
    modality) or A."""
    config = config or PromotionConfig()
    features = dataset.feature_tensors(model.device, model.modalities)
    k_users = max(1, int(round(top_share * len(users))))
    targets = [int(t) for t in targets]
    tops: list[dict[str, np.ndarray]] = []
    for target in tqdm(targets, desc="per-user gradients", disable=None):
        contrib = directional_contributions(per_user_gradients(model, dataset, target, users,
                                                               features, config, point))
        tops.append({m: top_users(c, users, k_users) for m, c in contrib.items()})
    rows = [{"target": t, "pair": f"{a}-{b}", "jaccard": jaccard(top[a], top[b]), "top_k": k_users}
            for t, top in zip(targets, tops, strict=True) for a, b in combinations(top, 2)]
    table = pd.DataFrame(rows)
    if not gains:
        return table
    before = target_hits(model, dataset, targets, users, None, features, ks=(k_hr,))[k_hr]
    table[f"hr@{k_hr}_before"] = table.target.map(dict(zip(targets, before, strict=True)))
    for name in [f"U_{m}" for m in tops[0]] + ["A"]:
        subsets = [users if name == "A" else top[name[2:]] for top in tops]
        after = _hits_after_promotion(model, dataset, targets, subsets, users, features, budget,
                                      point, config, k_hr)
        table[f"hr@{k_hr}_after_{name}"] = table.target.map(dict(zip(targets, after, strict=True)))
    return table


def _hits_after_promotion(model, dataset, targets, subsets, users, features, budget, point, config,
                          k_hr) -> np.ndarray:
    """HR@k on ``users`` of every target after an FGSM promotion built over its own user subset."""
    attack = PromotionAttack(FGSM(Budget(eps=budget), point=point), config)
    parts = [attack.perturb(model, dataset, [t], subset, features)
             for t, subset in zip(targets, subsets, strict=True)]
    merged = Perturbation(parts[0].point,
                          {m: torch.cat([p.deltas[m] for p in parts]) for m in parts[0].deltas},
                          {m: torch.cat([p.radius[m] for p in parts]) for m in parts[0].radius},
                          parts[0].budget, torch.cat([p.items for p in parts]))
    return target_hits(model, dataset, targets, users, merged, features, ks=(k_hr,))[k_hr]


def gain_summary(table: pd.DataFrame, k_hr: int = 50) -> pd.DataFrame:
    """Mean HR after and RI (%) per user set the loss was built over."""
    before = table[f"hr@{k_hr}_before"].mean()
    rows = []
    for col in [c for c in table.columns if c.startswith(f"hr@{k_hr}_after_")]:
        name = col.removeprefix(f"hr@{k_hr}_after_")
        after = table[col].mean()
        rows.append({"loss_users": name, "hr_before": before, "hr_after": after,
                     "ri_percent": (after / before - 1) * 100 if before > 0 else float("inf")})
    return pd.DataFrame(rows)
