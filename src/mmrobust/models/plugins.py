"""Loss plug-ins: the hook through which training-time defenses add terms to a model's loss.

The trainer calls ``extra_loss(model, batch, features)`` on every batch and adds the
returned scalar to ``model.loss(batch, features)``.  A plug-in records what it did with
:meth:`LossPlugin.record`; the trainer writes the per-epoch means to the run's history.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping

from torch import Tensor

from mmrobust.models.base import Batch, Recommender


class LossPlugin:
    """Base class: subclasses implement :meth:`extra_loss` and set ``name``."""

    name: str = "plugin"

    def __init__(self) -> None:
        self._sums: dict[str, float] = defaultdict(float)
        self._counts: dict[str, int] = defaultdict(int)
        #: one-off facts worth keeping with the run (e.g. the chosen sensitive modality)
        self.notes: dict[str, object] = {}

    def extra_loss(self, model: Recommender, batch: Batch,
                   features: Mapping[str, Tensor]) -> Tensor | None:
        raise NotImplementedError

    def on_fit_start(self, model: Recommender, dataset: object) -> None:
        """Called once before the first epoch (e.g. to pick a sensitive modality)."""

    def record(self, key: str, value: float | Tensor) -> None:
        self._sums[key] += float(value)
        self._counts[key] += 1

    def epoch_log(self) -> dict[str, float]:
        """Per-epoch means of the recorded values (prefixed with the plug-in name); resets them."""
        out = {f"{self.name}/{k}": self._sums[k] / self._counts[k] for k in self._sums}
        self._sums.clear()
        self._counts.clear()
        return out
