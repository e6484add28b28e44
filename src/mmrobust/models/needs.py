"""What a component (defense, measurement) needs of the model and dataset it is applied to.

Every attack, defense and analysis declares its :class:`Needs` once, as a class attribute,
and one function answers "why not" for a combination before any work is done: the
benchmark grid skips the combination with that sentence (shown in ``--plan`` and the
report), and the component raises the same sentence when it is used anyway.  The answer
needs only the model's class, its typed config and the dataset's modalities
(:class:`ModelProfile`), so a grid is checked without building a single model.

Examples:
    >>> from mmrobust.models import Needs, profile_of
    >>> needs = Needs("modality balancing", routes=("direct",), min_modalities=2, parts=True)
    >>> print(needs.why_not(profile_of("vbpr", {}, ("image",))))
    modality balancing needs two or more modalities; vbpr reads image
    >>> needs.why_not(profile_of("vbpr", {}, ("image", "text"))) is None
    True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mmrobust.errors import UserError
from mmrobust.models.base import FEATURE_ROUTES, Recommender
from mmrobust.models.registry import make_config, model_class

NUMBERS = {1: "one", 2: "two", 3: "three"}
ROUTE_WORDS = {
    "direct": "reads the item features directly",
    "graph": "reads the item features (any route)",
    "none": "reads no item features",
    "training-only": "reads item features at training only",
}


@dataclass(frozen=True)
class ModelProfile:
    """The facts about a (model, config, dataset) that components' needs are checked against."""

    model: str
    route: str
    modalities: tuple[str, ...]
    parts: bool
    route_note: str

    @classmethod
    def of(cls, model: Recommender) -> ModelProfile:
        """The profile of a built model."""
        return cls(
            model.name,
            model.feature_route,
            tuple(model.modalities),
            type(model).parts_of(model.config),
            model.route_note,
        )


def profile_of(model: str, params: Mapping[str, Any], modalities: Sequence[str]) -> ModelProfile:
    """The profile of model ``model`` with settings ``params`` on a dataset with ``modalities``
    (no model is built)."""
    cls = model_class(model)
    config = make_config(cls.name, dict(params))
    route = cls.route_of(config)
    chosen = () if route == "none" else tuple(getattr(config, "modalities", None) or modalities)
    return ModelProfile(cls.name, route, chosen, cls.parts_of(config), cls.route_note)


@dataclass(frozen=True)
class Needs:
    """What a component needs: the feature routes it works through, a minimum number of
    modalities, and per-modality score parts s^m (METHODS.md §2)."""

    who: str
    routes: tuple[str, ...] = FEATURE_ROUTES
    min_modalities: int = 0
    parts: bool = False

    def why_not(self, profile: ModelProfile) -> str | None:
        """None when the component applies to ``profile``; else the sentence saying why not."""
        if profile.route not in self.routes:
            wanted = " or ".join(ROUTE_WORDS.get(r, r) for r in self.routes)
            return (
                f"{self.who} needs a model whose score {wanted}; {profile.model} has feature route "
                f"'{profile.route}' ({profile.route_note})"
            )
        if len(profile.modalities) < self.min_modalities:
            count = NUMBERS.get(self.min_modalities, str(self.min_modalities))
            return (
                f"{self.who} needs {count} or more modalities; {profile.model} reads "
                f"{', '.join(profile.modalities) or 'none'}"
            )
        if self.parts and not profile.parts:
            return (
                f"{self.who} needs per-modality score parts; {profile.model} has none "
                f"({profile.route_note})"
            )
        return None

    def check(self, model: Recommender) -> None:
        """Raise :class:`NotApplicable` with the same sentence as :meth:`why_not`."""
        reason = self.why_not(ModelProfile.of(model))
        if reason is not None:
            raise NotApplicable(reason)


class NotApplicable(UserError):
    """A component was applied to a model or dataset it does not support (see :class:`Needs`)."""


def why_not(profile: ModelProfile, *components: Any) -> str | None:
    """The first reason any of ``components`` (objects or classes with a ``needs`` attribute)
    cannot be applied to ``profile``; None when all can."""
    for component in components:
        needs = getattr(component, "needs", None)
        reason = needs.why_not(profile) if needs is not None else None
        if reason is not None:
            return reason
    return None
