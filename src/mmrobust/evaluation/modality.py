"""Modality-imbalance analysis (modality-balancing paper §3.2, METHODS.md §4).

For test triples (u, i, j) the per-modality score margin m^m = s^m_ui − s^m_uj (and the
fused margin ŷ_ui − ŷ_uj, and the ``rest`` part) is averaged before and after an attack;
the sensitive modality is the one whose mean margin drops most.  The case view takes one
test pair (u, i) and shows the per-modality scores of i and of u's top-10 negatives (the
highest-scored items u never interacted with) before and after.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from mmrobust.attacks import FGSM, Budget, Perturbation, Triples, split_triples
from mmrobust.data import Dataset
from mmrobust.errors import UserError
from mmrobust.evaluation.ranking import compute_embeddings
from mmrobust.models import Embeddings, Recommender


@dataclass
class ModalityAnalysis:
    margins: pd.DataFrame   # part, clean, attacked, drop, relative_drop
    sensitive: str          # the modality whose margin drops most ("none" if no margin drops)
    case: pd.DataFrame      # item, role, part, clean, attacked
    case_user: int
    case_item: int


def _parts(emb: Embeddings, users: Tensor, items: Tensor) -> dict[str, Tensor]:
    parts = emb.modality_scores(users, items)
    parts["fused"] = emb.pair_scores(users, items)
    return parts


def margins(emb: Embeddings, triples: Triples) -> dict[str, Tensor]:
    """Per-triple margins {part: s_ui − s_uj} for every modality, ``rest`` and ``fused``."""
    pos, neg = _parts(emb, triples.users, triples.pos), _parts(emb, triples.users, triples.neg)
    return {k: pos[k] - neg[k] for k in pos}


def modality_analysis(model: Recommender, dataset: Dataset, pert: Perturbation | None = None,
                      budget: float = 0.05, seed: int = 0, case: tuple[int, int] | None = None,
                      n_negatives: int = 10,
                      features: Mapping[str, Tensor] | None = None) -> ModalityAnalysis:
    """Margins clean vs attacked (default attack: FGSM-L2, r = ``budget``, all modalities) and a
    case view.

    Models whose score has no per-modality parts (features only shape a graph) get, instead,
    the fused margin with each modality attacked alone; the sensitive modality is then the
    one whose lone attack lowers the fused margin most."""
    if not model.modalities:
        raise UserError(f"{model.name} reads no item features: "
                         "there are no modality margins to analyse")
    if features is None:
        features = dataset.feature_tensors(model.device, model.modalities)
    triples = split_triples(dataset, "test", seed, device=model.device)
    if pert is None:
        pert = FGSM(Budget(eps=budget)).perturb(model, dataset, features, seed=seed)
    clean = compute_embeddings(model, dataset, features)
    with torch.no_grad():
        attacked = compute_embeddings(model, dataset, *pert.inputs(model, features))
        m_clean, m_attacked = margins(clean, triples), margins(attacked, triples)
    rows = []
    for part in m_clean:
        c, a = float(m_clean[part].mean()), float(m_attacked[part].mean())
        rows.append({"part": part, "clean": c, "attacked": a, "drop": c - a,
                     "relative_drop": (c - a) / abs(c) if c else float("nan")})
    if not clean.parts:  # no per-modality score parts: attack one modality at a time instead
        rows += _single_modality_drops(model, dataset, features, triples, m_clean["fused"], budget,
                                       seed)
    table = pd.DataFrame(rows)
    per_modality = table[table.part.isin(model.modalities)]
    if per_modality.empty:
        per_modality = table[table.part.str.startswith("fused, ")]
    top = per_modality.loc[per_modality["drop"].idxmax()]
    # "none" when no modality's attack lowers a margin (e.g. features do not reach the score)
    sensitive = (str(top["part"]).removeprefix("fused, ").split(" ")[0] if top["drop"] > 0
                 else "none")
    user, item = case if case is not None else _default_case(clean, attacked, triples)
    return ModalityAnalysis(table, sensitive,
                            case_view(clean, attacked, dataset, user, item, n_negatives), user,
                            item)


def _single_modality_drops(model, dataset, features, triples, clean_fused, budget,
                           seed) -> list[dict]:
    """Fused margin when only modality m is attacked (FGSM-L2), for models without score parts."""
    rows = []
    for m in model.modalities:
        pert = FGSM(Budget(eps=budget), modalities=[m]).perturb(model, dataset, features, seed=seed)
        with torch.no_grad():
            attacked = compute_embeddings(model, dataset, *pert.inputs(model, features))
            fused = margins(attacked, triples)["fused"]
        c, a = float(clean_fused.mean()), float(fused.mean())
        rows.append({"part": f"fused, {m} attacked alone", "clean": c, "attacked": a, "drop": c - a,
                     "relative_drop": (c - a) / abs(c) if c else float("nan")})
    return rows


def _default_case(clean: Embeddings, attacked: Embeddings, triples: Triples) -> tuple[int, int]:
    """The test pair whose fused score falls most under the attack."""
    with torch.no_grad():
        drop = (clean.pair_scores(triples.users, triples.pos)
                - attacked.pair_scores(triples.users, triples.pos))
    k = int(torch.argmax(drop))
    return int(triples.users[k]), int(triples.pos[k])


def case_view(clean: Embeddings, attacked: Embeddings, dataset: Dataset, user: int, item: int,
              n_negatives: int = 10) -> pd.DataFrame:
    """Per-part scores of the positive ``item`` and
    of ``user``'s top negatives, clean and attacked."""
    device = clean.user.device
    u = torch.tensor([user], device=device)
    scores = clean.full_scores(u)[0].clone()
    interacted = dataset.interacted()[user].indices
    scores[torch.from_numpy(interacted.astype(np.int64)).to(device)] = -torch.inf
    negatives = torch.topk(scores, n_negatives).indices
    items = torch.cat([torch.tensor([item], device=device), negatives])
    users = u.expand(len(items))
    with torch.no_grad():
        before, after = _parts(clean, users, items), _parts(attacked, users, items)
    rows = []
    for part in before:
        for pos, it in enumerate(items.tolist()):
            rows.append({"item": it, "role": "positive" if pos == 0 else f"negative {pos}",
                         "part": part,
                         "clean": float(before[part][pos]), "attacked": float(after[part][pos])})
    return pd.DataFrame(rows)
