"""Attack objectives (to maximise) as functions of a :class:`Perturbation`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from mmrobust.attacks.perturbation import Perturbation
from mmrobust.data import Dataset
from mmrobust.data.sampling import BPRSampler
from mmrobust.errors import UserError
from mmrobust.models import Recommender


@dataclass
class Triples:
    users: Tensor
    pos: Tensor
    neg: Tensor

    def __len__(self) -> int:
        return int(self.users.shape[0])


def split_triples(dataset: Dataset, split: str = "test", seed: int = 0, negatives: int = 1,
                  sample: int | None = None, device: torch.device | str = "cpu") -> Triples:
    """Every (user, held-out item) pair of ``split`` with ``negatives`` uniform negatives each,
    drawn among items the user never interacted with; ``sample`` keeps a random subset of
    pairs (an explicit speed option)."""

    rng = np.random.default_rng([seed, 7919])
    coo = dataset.split(split).tocoo()
    users, pos = coo.row.astype(np.int64), coo.col.astype(np.int64)
    if len(users) == 0:
        raise UserError(f"dataset '{dataset.name}' has no {split} interactions to attack")
    if sample is not None and sample < len(users):
        keep = np.sort(rng.choice(len(users), size=sample, replace=False))
        users, pos = users[keep], pos[keep]
    users, pos = np.repeat(users, negatives), np.repeat(pos, negatives)
    interacted = BPRSampler(dataset.interacted())
    neg = interacted.sample_negatives(users, rng)
    as_t = lambda a: torch.from_numpy(a).to(device)  # noqa: E731
    return Triples(as_t(users), as_t(pos), as_t(neg))


class BPRObjective:
    """L_BPR = −mean log σ(ŷ'_ui − ŷ'_uj) over test triples, ŷ' from the perturbed inputs
    (modality-balancing paper, Eq. 2).

    ``triples`` is a fixed set, or a function of the call number that draws the negatives
    afresh at every evaluation.  Redrawing is the default for the untargeted attack
    (:func:`untargeted_objective`): with one fixed draw, PGD over-fits the drawn negatives
    (it drives already-misranked pairs further, the BPR loss being unbounded) and ends up
    lowering Recall less than FGSM; redrawn, it is a stochastic ascent on the expected BPR
    loss.  FGSM uses the first draw either way.
    """

    def __init__(self, model: Recommender, features: Mapping[str, Tensor],
                 triples: Triples | Callable[[int], Triples]):
        self.model, self.features, self.triples = model, features, triples
        self.calls = 0

    def current_triples(self) -> Triples:
        return self.triples if isinstance(self.triples, Triples) else self.triples(self.calls)

    def __call__(self, pert: Perturbation) -> Tensor:
        t = self.current_triples()
        self.calls += 1
        feats, emb_delta = pert.inputs(self.model, self.features)
        emb = self.model.embed(feats, emb_delta)
        margin = emb.pair_scores(t.users, t.pos) - emb.pair_scores(t.users, t.neg)
        return -F.logsigmoid(margin).mean()


def untargeted_objective(model: Recommender, dataset: Dataset, features: Mapping[str, Tensor],
                         split: str = "test",
                         seed: int = 0, negatives: int = 1, resample: bool = True,
                         sample: int | None = None) -> BPRObjective:
    """The untargeted attack objective: BPR over every (user, positive) pair of ``split`` with
    ``negatives`` sampled negatives each, redrawn at every evaluation when ``resample``."""
    device = model.device
    if not resample:
        return BPRObjective(model, features,
                            split_triples(dataset, split, seed, negatives, sample, device))
    return BPRObjective(model, features,
                        lambda k: split_triples(dataset, split, seed * 1_000_003 + k, negatives,
                                                                 sample, device))
