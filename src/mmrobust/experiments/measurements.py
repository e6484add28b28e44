"""Every number mmrobust measures on a trained run: one class per kind, one registry.

A measurement kind is a :class:`Measurement` subclass with

* ``Spec``: its typed settings (pydantic) — every flag of its ``mmrobust attack|analyze``
  goal and the per-cell part of a benchmark ``attacks:`` entry of that ``kind``;
* ``needs``: what it needs of the model (:class:`~mmrobust.models.Needs`), checked before
  any work (the benchmark grid skips with the same sentence);
* ``run(run) -> Measured``: the computation, tables only;
* ``rows(run, measured)``: the result rows — the only place their coordinates
  (``attack``, ``attack_params``, ``population``, ...) are written;
* ``artifacts(run, measured, folder, name)``: CSVs and plots for the command line.

``Spec.cells()`` splits a spec into the single-setting specs the benchmark runs as one cell
each; the rows of a cell equal the matching rows of the whole spec run at once (each
setting is seeded on its own), so a CLI run and a benchmark cell can be joined.

Examples:
    >>> spec = UntargetedSpec(attacks=["fgsm"], budgets=[0.05])
    >>> measurement = make_measurement(spec)
    >>> measured = measurement.run(run)                  # a loaded Run
    >>> rows = measurement.rows(run, measured)           # list[ResultRow]
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
import pandas as pd
import torch
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from mmrobust.attacks import (
    Budget,
    PromotionAttack,
    PromotionConfig,
    make_attack,
    select_targets,
    split_users,
)
from mmrobust.errors import UserError
from mmrobust.evaluation import evaluate, evaluate_sampled
from mmrobust.evaluation.mismatch import gain_summary, mismatch_analysis
from mmrobust.evaluation.modality import modality_analysis
from mmrobust.evaluation.promotion import (
    PROMOTION_KS,
    promotion_report,
    promotion_table,
    target_hits,
)
from mmrobust.evaluation.robustness import masking_check, untargeted_sweep
from mmrobust.experiments.plots import (
    plot_case,
    plot_jaccard,
    plot_margins,
    plot_promotion,
    plot_robustness,
)
from mmrobust.experiments.results import ResultRow, params_json, run_coordinates
from mmrobust.experiments.runs import Run, load_run
from mmrobust.models import ModelProfile, Needs, NotApplicable
from mmrobust.training import BEST
from mmrobust.utils import atomic_path, atomic_write_text, seed_everything

#: PGD inside a promotion attack takes steps of 1.25 ε / steps (Band Together public code)
PROMOTION_PGD_STEP_SCALE = 1.25
#: feature routes through which a feature perturbation reaches the score
ATTACKABLE = ("direct", "graph")
Budgets = Annotated[list[Annotated[float, Field(gt=0)]], Field(min_length=1)]


class MeasurementSpec(BaseModel):
    """Settings shared by every kind: the seed of negatives, targets, users and noise."""

    model_config = ConfigDict(extra="forbid")

    kind: str
    seed: int | None = Field(None, ge=0, description="seed (default: the run's training seed)")

    def cells(self) -> list[MeasurementSpec]:
        """The single-setting specs the benchmark runs as one cell each."""
        return [self]

    def label(self) -> str:
        """A short description for cell titles."""
        return self.kind


class AttackSettings(MeasurementSpec):
    """Settings of the feature attacks a measurement crafts (METHODS.md §3)."""

    norm: Literal["l2", "linf"] = Field("l2", description="norm of the budget")
    point: Literal["raw", "embedding"] = Field("raw", description="perturbation point")
    relative: bool = Field(True, description="budgets relative to each row's L2 norm")
    pgd_steps: int = Field(10, ge=1, description="PGD steps")

    #: settings only PGD reads: refused (unless at their defaults) when no PGD attack is listed,
    #: reset to their defaults in the other attacks' cells
    PGD_ONLY: ClassVar[tuple[str, ...]] = ("pgd_steps", "restarts")

    def budget(self, eps: float) -> Budget:
        return Budget(eps=eps, norm=self.norm, relative=self.relative)

    @model_validator(mode="after")
    def _pgd_settings_need_pgd(self) -> AttackSettings:
        attacks = getattr(self, "attacks", None)
        if attacks is None or "pgd" in attacks:
            return self
        fields = type(self).model_fields
        unused = [f for f in self.PGD_ONLY if f in fields and getattr(self, f) != fields[f].default]
        if unused:
            raise ValueError(
                f"{' and '.join(unused)} only apply to PGD, and the attacks are "
                f"{', '.join(attacks) or 'none'}"
            )
        return self

    def for_attack(self, attack: str) -> dict[str, Any]:
        """Updates that give a one-attack cell of ``attack`` (PGD-only settings at their defaults
        for the other attacks, so that equal measurements share one cell)."""
        fields = type(self).model_fields
        reset = (
            {f: fields[f].default for f in self.PGD_ONLY if f in fields} if attack != "pgd" else {}
        )
        return {"attacks": [attack], **reset}


@dataclass
class Measured:
    """What a measurement computed: its main table, other tables by name, and facts."""

    table: pd.DataFrame
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)


class Measurement(ABC):
    """Base class of the registry (see the module docstring)."""

    kind: ClassVar[str]
    Spec: ClassVar[type[MeasurementSpec]]
    needs: ClassVar[Needs]
    #: folder of a run directory its artifacts go to
    folder: ClassVar[str] = "attacks"

    def __init__(self, spec: MeasurementSpec):
        self.spec = spec

    def seed(self, run: Run) -> int:
        return run.config.train.seed if self.spec.seed is None else self.spec.seed

    def why_not(self, profile: ModelProfile) -> str | None:
        """Why this measurement cannot be taken on a model with ``profile`` (None: it can)."""
        return self.needs.why_not(profile)

    def measure(self, run: Run) -> tuple[Measured, list[ResultRow]]:
        """Check the needs, run, and build the rows."""
        reason = self.why_not(ModelProfile.of(run.model))
        if reason is not None:
            raise NotApplicable(reason)
        measured = self.run(run)
        return measured, self.rows(run, measured)

    @abstractmethod
    def run(self, run: Run) -> Measured: ...

    @abstractmethod
    def rows(self, run: Run, measured: Measured) -> list[ResultRow]: ...

    def artifacts(self, run: Run, measured: Measured, folder: Path, name: str) -> list[Path]:
        """CSV files of every table (plots in subclasses)."""
        paths = [write_csv(measured.table, folder / f"{name}.csv")]
        paths += [write_csv(t, folder / f"{name}_{key}.csv") for key, t in measured.tables.items()]
        return paths

    def _row(self, run: Run, **values: Any) -> ResultRow:
        spec = self.spec
        base = {
            "norm": getattr(spec, "norm", "l2"),
            "point": getattr(spec, "point", "raw"),
            "modalities": "+".join(run.model.modalities),
            "split": "test",
        }
        return ResultRow(
            **run_coordinates(run.config, run.dataset.name, run.path), **{**base, **values}
        )


def write_csv(frame: pd.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
    return path


# ------------------------------------------------------------------ untargeted
class UntargetedSpec(AttackSettings):
    """Untargeted feature attacks: attacked full-ranking test metrics (METHODS.md §3)."""

    kind: Literal["untargeted"] = "untargeted"
    attacks: list[Literal["random", "fgsm", "pgd"]] = Field(
        default_factory=lambda: ["random", "fgsm", "pgd"], min_length=1, description="attacks"
    )
    budgets: Budgets = Field(
        default_factory=lambda: [0.025, 0.05, 0.075, 0.1], description="budgets r (relative) or ε"
    )
    restarts: int = Field(1, ge=1, description="PGD random restarts")
    modality_sets: list[list[str]] | None = Field(
        None, description="modality sets attacked (default: all)"
    )
    ks: list[Annotated[int, Field(ge=1)]] = Field(
        default_factory=lambda: [10, 20], min_length=1, description="cut-offs"
    )

    def cells(self) -> list[MeasurementSpec]:
        sets = self.modality_sets or [None]
        return [
            self.model_copy(
                update={**self.for_attack(a), "budgets": [b], "modality_sets": s and [s]}
            )
            for a in self.attacks
            for b in self.budgets
            for s in sets
        ]

    def label(self) -> str:
        return f"{'+'.join(self.attacks)} r={listed(self.budgets)}"


class Untargeted(Measurement):
    """Attacked full-ranking test metrics (modality-balancing paper §3.1, Table 2/3, Figure 5)."""

    kind = "untargeted"
    Spec = UntargetedSpec
    needs = Needs("a feature attack", routes=ATTACKABLE)
    spec: UntargetedSpec

    def run(self, run: Run) -> Measured:
        s, seed = self.spec, self.seed(run)
        seed_everything(seed)
        sweep = _sweep(run, s, seed, s.attacks, s.modality_sets)
        return Measured(sweep, facts={"seed": seed})

    def attack_params(self, attack: str, seed: int) -> str:
        pgd = (
            {"pgd_steps": self.spec.pgd_steps, "restarts": self.spec.restarts}
            if attack == "pgd"
            else {}
        )
        return params_json(relative=self.spec.relative, seed=seed, **pgd)

    def rows(self, run: Run, measured: Measured) -> list[ResultRow]:
        seed = measured.facts["seed"]
        return [
            self._row(
                run,
                attack=r.attack,
                attack_params=self.attack_params(r.attack, seed),
                budget=float(r.budget),
                modalities=r.modalities,
                metric=r.metric,
                k=int(r.k),
                value=float(r.attacked),
            )
            for r in measured.table.itertuples()
        ]

    def artifacts(self, run: Run, measured: Measured, folder: Path, name: str) -> list[Path]:
        title = (
            f"{run.config.model} on {run.dataset.name}: untargeted feature attacks "
            f"({self.spec.norm}, {self.spec.point})"
        )
        return super().artifacts(run, measured, folder, name) + [
            plot_robustness(measured.table, folder / f"{name}_recall20.png", title)
        ]


def _sweep(
    run: Run,
    s: UntargetedSpec | AdaptiveSpec,
    seed: int,
    attacks: list[str],
    modality_sets: list[list[str]] | None,
) -> pd.DataFrame:
    """Clean vs attacked test metrics of ``attacks`` at the spec's budgets (one table row per
    attack, budget, modality set and metric@K)."""
    return untargeted_sweep(
        run.model,
        run.dataset,
        attacks,
        s.budgets,
        modality_sets,
        s.norm,
        s.relative,
        s.point,
        s.pgd_steps,
        s.restarts,
        seed,
        s.ks,
    )


def listed(values: list[float]) -> str:
    """Budgets or weights for a cell title: ``0.05,0.1``."""
    return ",".join(f"{v:g}" for v in values)


# -------------------------------------------------------------------- adaptive
class AdaptiveSpec(AttackSettings):
    """The gradient-masking check: FGSM vs PGD with many steps and restarts."""

    kind: Literal["adaptive"] = "adaptive"
    budgets: Budgets = Field(
        default_factory=lambda: [0.05], description="budgets r (relative) or ε"
    )
    pgd_steps: int = Field(50, ge=1, description="PGD steps")
    restarts: int = Field(5, ge=1, description="PGD random restarts")
    factor: float = Field(2.0, gt=0, description="flag when the PGD drop > factor × the FGSM drop")
    ks: list[Annotated[int, Field(ge=1)]] = Field(
        default_factory=lambda: [10, 20], min_length=1, description="cut-offs"
    )

    def cells(self) -> list[MeasurementSpec]:
        return [self.model_copy(update={"budgets": [b]}) for b in self.budgets]

    def label(self) -> str:
        return f"fgsm+pgd r={listed(self.budgets)}"


class Adaptive(Measurement):
    """FGSM vs PGD-steps×restarts and the masking flag (1 = PGD drop > factor × FGSM drop)."""

    kind = "adaptive"
    Spec = AdaptiveSpec
    needs = Needs("the gradient-masking check", routes=ATTACKABLE)
    spec: AdaptiveSpec

    def run(self, run: Run) -> Measured:
        s, seed = self.spec, self.seed(run)
        seed_everything(seed)
        sweep = _sweep(run, s, seed, ["fgsm", "pgd"], None)
        return Measured(masking_check(sweep, s.factor), {"attacks": sweep}, {"seed": seed})

    def rows(self, run: Run, measured: Measured) -> list[ResultRow]:
        s = self.spec
        params = params_json(
            pgd_steps=s.pgd_steps,
            restarts=s.restarts,
            factor=s.factor,
            relative=s.relative,
            seed=measured.facts["seed"],
        )
        rows = [
            self._row(
                run,
                attack=r.attack,
                attack_params=params,
                budget=float(r.budget),
                metric=r.metric,
                k=int(r.k),
                value=float(r.attacked),
            )
            for r in measured.tables["attacks"].itertuples()
        ]
        rows += [
            self._row(
                run,
                attack="adaptive-check",
                attack_params=params,
                budget=float(r.budget),
                metric=f"{r.metric}_masking_flag",
                k=int(r.k),
                value=float(r.flagged),
            )
            for r in measured.table.itertuples()
        ]
        return rows


# ------------------------------------------------------------------- promotion
def promotion_settings(value: dict[str, Any]) -> dict[str, Any]:
    """Validated promotion settings with defaults filled in; β and the seed are set elsewhere."""
    if "beta" in value:
        raise ValueError("set β with 'betas' (--beta), not 'promotion.beta'")
    if "seed" in value:
        raise ValueError("set the seed with 'seed' (--seed), not 'promotion.seed'")
    return PromotionConfig(**value).model_dump(exclude={"beta", "seed"})


PromotionSettings = Annotated[dict[str, Any], AfterValidator(promotion_settings)]


class PromotionSpec(AttackSettings):
    """Item-promotion attacks on chosen targets (Band Together §5, METHODS.md §7)."""

    kind: Literal["promotion"] = "promotion"
    attacks: list[Literal["fgsm", "pgd"]] = Field(
        default_factory=lambda: ["fgsm", "pgd"], min_length=1, description="attacks"
    )
    budgets: Budgets = Field(
        default_factory=lambda: [0.025, 0.05, 0.075, 0.1], description="budgets r (relative) or ε"
    )
    betas: list[Annotated[float, Field(ge=0)]] = Field(
        default_factory=lambda: [0.0, 1.0], min_length=1, description="alignment weights β"
    )
    modalities: list[str] | None = Field(None, description="modalities perturbed (default: all)")
    promotion: PromotionSettings = Field(
        default_factory=lambda: promotion_settings({}),
        description="promotion settings (n_targets, surrogate, ...)",
    )

    def config(self, seed: int, beta: float) -> PromotionConfig:
        return PromotionConfig(**self.promotion, seed=seed, beta=beta)

    def cells(self) -> list[MeasurementSpec]:
        return [
            self.model_copy(update={**self.for_attack(a), "budgets": [b], "betas": [beta]})
            for a in self.attacks
            for b in self.budgets
            for beta in self.betas
        ]

    def label(self) -> str:
        return f"{'+'.join(self.attacks)} r={listed(self.budgets)} β={listed(self.betas)}"


_BEFORE: dict[tuple, dict[int, np.ndarray]] = {}
POPULATIONS = ("attack_users", "held_out_users")


class Promotion(Measurement):
    """HR@K of the targets before/after each promotion attack on the attack and held-out users,
    RI (Band Together §5, Table 2 / Figure 5)."""

    kind = "promotion"
    Spec = PromotionSpec
    needs = Needs("a promotion attack", routes=ATTACKABLE)
    spec: PromotionSpec

    def run(self, run: Run) -> Measured:
        s, seed = self.spec, self.seed(run)
        model, ds = run.model, run.dataset
        base = s.config(seed, 0.0)
        targets, note = select_targets(
            ds, base.n_interactions, base.n_targets, base.selection, seed
        )
        users = dict(zip(POPULATIONS, split_users(ds, base.attack_share, seed), strict=True))
        features = ds.feature_tensors(model.device, model.modalities)
        before = {p: _before_hits(run, targets, group, features) for p, group in users.items()}
        records, hits = [], {f"before/{p}": h for p, h in before.items()}
        for attack, eps, beta in [
            (a, b, beta) for a in s.attacks for b in s.budgets for beta in s.betas
        ]:
            seed_everything(seed)
            extra = (
                {"step_scale": PROMOTION_PGD_STEP_SCALE, "steps": s.pgd_steps}
                if attack == "pgd"
                else {}
            )
            crafted = make_attack(
                attack, budget=s.budget(eps), point=s.point, modalities=s.modalities, **extra
            )
            pert = PromotionAttack(crafted, s.config(seed, beta)).perturb(
                model, ds, targets, users["attack_users"], features
            )
            for population, group in users.items():
                after = target_hits(model, ds, targets, group, pert, features, PROMOTION_KS)
                hits[f"{attack}/r={eps}/beta={beta}/{population}"] = after
                for k, report in promotion_report(before[population], after).items():
                    records += [
                        {
                            "attack": attack,
                            "budget": eps,
                            "beta": beta,
                            "population": population,
                            "k": int(k),
                            "metric": metric,
                            "value": float(value),
                        }
                        for metric, value in report.items()
                    ]
        return Measured(
            pd.DataFrame(records),
            {"per_target": promotion_table(targets, hits)},
            {"seed": seed, "targets": len(targets), "target_note": note},
        )

    def rows(self, run: Run, measured: Measured) -> list[ResultRow]:
        s, facts = self.spec, measured.facts
        out = []
        for r in measured.table.itertuples():
            extra = {"pgd_steps": s.pgd_steps} if r.attack == "pgd" else {}
            params = params_json(
                **s.config(facts["seed"], float(r.beta)).model_dump(),
                targets=facts["targets"],
                target_note=facts["target_note"],
                relative=s.relative,
                modalities=s.modalities,
                **extra,
            )
            out.append(
                self._row(
                    run,
                    attack=f"promotion-{r.attack}",
                    attack_params=params,
                    budget=float(r.budget),
                    split="train-masked",
                    population=r.population,
                    metric=r.metric,
                    k=int(r.k),
                    value=float(r.value),
                    modalities="+".join(s.modalities or run.model.modalities),
                )
            )
        return out

    def artifacts(self, run: Run, measured: Measured, folder: Path, name: str) -> list[Path]:
        title = (
            f"{run.config.model} on {run.dataset.name}: promotion of "
            f"{measured.facts['target_note']} "
            f"({self.spec.promotion['surrogate']} utility)"
        )
        return super().artifacts(run, measured, folder, name) + [
            plot_promotion(wide_promotion(measured.table), folder / f"{name}_hr50.png", title)
        ]


def wide_promotion(table: pd.DataFrame) -> pd.DataFrame:
    """One row per (attack, budget, β, K) with ``<metric>_<attack|heldout>`` columns."""
    short = {"attack_users": "attack", "held_out_users": "heldout"}
    frame = table.assign(column=table.metric + "_" + table.population.map(short))
    wide = frame.pivot_table(
        index=["attack", "budget", "beta", "k"], columns="column", values="value", sort=False
    ).reset_index()
    wide.columns.name = None
    return wide


def _before_hits(
    run: Run, targets: np.ndarray, users: np.ndarray, features: Mapping[str, torch.Tensor]
) -> dict[int, np.ndarray]:
    """Un-attacked HR@K of the targets, memoised per (run weights, targets, users): every
    promotion cell of a run shares them, and on TikTok they cost as much as the attack."""
    best = run.path / BEST
    stamp = best.stat().st_mtime_ns if best.exists() else 0
    key = (str(run.path), stamp, targets.tobytes(), users.tobytes())
    if key not in _BEFORE:
        if len(_BEFORE) >= 16:
            _BEFORE.clear()
        _BEFORE[key] = target_hits(
            run.model, run.dataset, targets, users, None, features, PROMOTION_KS
        )
    return _BEFORE[key]


# -------------------------------------------------------------------- modality
class ModalitySpec(MeasurementSpec):
    """Per-modality score margins clean vs FGSM-L2 (modality-balancing paper §3.2)."""

    kind: Literal["modality"] = "modality"
    budgets: Budgets = Field(default_factory=lambda: [0.05], description="FGSM-L2 budgets r")
    case: tuple[int, int] | None = Field(
        None, description="(user, test item) of the case view (default: chosen)"
    )

    def cells(self) -> list[MeasurementSpec]:
        return [self.model_copy(update={"budgets": [b]}) for b in self.budgets]

    def label(self) -> str:
        return f"fgsm r={listed(self.budgets)}"


class Modality(Measurement):
    """Mean per-modality score margins clean vs FGSM-L2, the sensitive modality, a case view
    (modality-balancing paper Fig. 1a / 6a)."""

    kind = "modality"
    Spec = ModalitySpec
    needs = Needs("the modality-margin analysis", routes=ATTACKABLE, min_modalities=1)
    folder = "analysis"
    spec: ModalitySpec

    def run(self, run: Run) -> Measured:
        seed = self.seed(run)
        margins, cases, sensitive = [], [], {}
        for budget in self.spec.budgets:
            seed_everything(seed)
            result = modality_analysis(
                run.model, run.dataset, budget=budget, seed=seed, case=self.spec.case
            )
            margins.append(result.margins.assign(budget=budget))
            cases.append(result.case.assign(budget=budget))
            sensitive[budget] = result.sensitive
            case = (result.case_user, result.case_item)
        return Measured(
            pd.concat(margins, ignore_index=True),
            {"case": pd.concat(cases, ignore_index=True)},
            {"seed": seed, "sensitive": sensitive, "case": case},
        )

    def rows(self, run: Run, measured: Measured) -> list[ResultRow]:
        facts = measured.facts
        return [
            self._row(
                run,
                attack="fgsm",
                budget=float(r.budget),
                protocol="margin",
                population=r.part,
                attack_params=params_json(
                    analysis="modality-margin",
                    seed=facts["seed"],
                    sensitive=facts["sensitive"][r.budget],
                ),
                metric=f"margin_{phase}",
                k=None,
                value=float(getattr(r, phase)),
            )
            for r in measured.table.itertuples()
            for phase in ("clean", "attacked")
        ]

    def artifacts(self, run: Run, measured: Measured, folder: Path, name: str) -> list[Path]:
        paths = super().artifacts(run, measured, folder, name)
        facts = measured.facts
        user, item = facts["case"]
        for budget, margins in measured.table.groupby("budget", sort=False):
            suffix = "" if len(self.spec.budgets) == 1 else f"_r{budget:g}"
            title = f"{run.config.model} on {run.dataset.name}, FGSM-L2 r={100 * budget:g}%"
            case = measured.tables["case"]
            paths += [
                plot_margins(
                    margins,
                    folder / f"{name}{suffix}.png",
                    f"Score margins: {title}",
                    facts["sensitive"][budget],
                ),
                plot_case(
                    case[case.budget == budget],
                    folder / f"{name}_case{suffix}.png",
                    f"User {user}, test item {item}: scores before/after ({title})",
                ),
            ]
        return paths


# --------------------------------------------------------------------- sampled
class SampledSpec(AttackSettings):
    """Sampled-protocol evaluation, clean and under feature attacks (AMR paper §4.1, Table 3)."""

    kind: Literal["sampled"] = "sampled"
    attacks: list[Literal["random", "fgsm", "pgd"]] = Field(
        default_factory=lambda: ["fgsm"], description="attacks"
    )
    budgets: Budgets = Field(
        default_factory=lambda: [0.05], description="budgets r (relative) or ε"
    )
    n_negatives: int = Field(
        999, ge=1, description="negatives per positive (capped by what users have)"
    )
    clean: bool = Field(True, description="also evaluate without an attack")
    ks: list[Annotated[int, Field(ge=1)]] = Field(
        default_factory=lambda: [10, 20], min_length=1, description="cut-offs"
    )
    split: Literal["valid", "test"] = Field("test", description="held-out split evaluated")

    def cells(self) -> list[MeasurementSpec]:
        clean = (
            [
                SampledSpec(
                    seed=self.seed,
                    n_negatives=self.n_negatives,
                    ks=self.ks,
                    split=self.split,
                    attacks=[],
                )
            ]
            if self.clean
            else []
        )
        return clean + [
            self.model_copy(update={**self.for_attack(a), "budgets": [b], "clean": False})
            for a in self.attacks
            for b in self.budgets
        ]

    def label(self) -> str:
        attacked = f"{'+'.join(self.attacks)} r={listed(self.budgets)}" if self.attacks else ""
        return " + ".join(p for p in ("clean" if self.clean else "", attacked) if p)


class Sampled(Measurement):
    """Each test pair ranked against n sampled non-interacted items; ``n_negatives`` is capped
    by the fewest non-interacted items a test user has, and the count used is recorded."""

    kind = "sampled"
    Spec = SampledSpec
    needs = Needs("a feature attack", routes=ATTACKABLE)
    spec: SampledSpec

    def why_not(self, profile: ModelProfile) -> str | None:
        return self.needs.why_not(profile) if self.spec.attacks else None  # clean: any model

    def run(self, run: Run) -> Measured:
        s, seed = self.spec, self.seed(run)
        model, ds = run.model, run.dataset
        users = np.unique(ds.split(s.split).tocoo().row)
        n_neg = int(min(s.n_negatives, (ds.n_items - ds.interacted().getnnz(axis=1))[users].min()))
        features = ds.feature_tensors(model.device, model.modalities)
        settings = ([("none", 0.0)] if s.clean else []) + [
            (a, b) for a in s.attacks for b in s.budgets
        ]
        records = []
        for attack, eps in settings:
            seed_everything(seed)
            feats, delta = features, None
            if attack != "none":
                extra = {"steps": s.pgd_steps} if attack == "pgd" else {}
                crafted = make_attack(attack, budget=s.budget(eps), point=s.point, **extra)
                pert = crafted.perturb(model, ds, features, seed=seed)
                with torch.no_grad():
                    feats, delta = pert.inputs(model, features)
            metrics = evaluate_sampled(
                model, ds, s.split, feats, s.ks, n_neg, seed, embedding_delta=delta
            )
            records += [
                {
                    "attack": attack,
                    "budget": eps,
                    "metric": key.partition("@")[0],
                    "k": int(key.partition("@")[2]),
                    "value": float(value),
                }
                for key, value in metrics.items()
            ]
        return Measured(pd.DataFrame(records), facts={"seed": seed, "n_negatives": n_neg})

    def rows(self, run: Run, measured: Measured) -> list[ResultRow]:
        facts = measured.facts
        params = params_json(
            relative=self.spec.relative,
            n_negatives=facts["n_negatives"],
            requested_negatives=self.spec.n_negatives,
            seed=facts["seed"],
        )
        return [
            self._row(
                run,
                attack=r.attack,
                attack_params=params,
                budget=float(r.budget),
                protocol="sampled",
                split=self.spec.split,
                metric=r.metric,
                k=int(r.k),
                value=float(r.value),
            )
            for r in measured.table.itertuples()
        ]


def evaluate_run(
    run_dir: str | Path,
    split: str = "test",
    protocol: str = "full",
    n_negatives: int = 999,
    device: str = "auto",
) -> dict[str, float]:
    """Clean metrics of a run's best checkpoint on ``split``: full ranking, or the sampled
    protocol (the :class:`Sampled` measurement without an attack, so its numbers are the
    benchmark's)."""
    run = load_run(run_dir, device)
    ks = run.config.train.ks
    if protocol == "full":
        return evaluate(run.model, run.dataset, split, ks=ks)
    if protocol != "sampled":
        raise UserError(f"unknown protocol '{protocol}'; use 'full' or 'sampled'")
    if split not in ("valid", "test"):
        raise UserError(f"the sampled protocol evaluates 'valid' or 'test', not '{split}'")
    spec = SampledSpec(attacks=[], split=split, n_negatives=n_negatives, ks=ks)
    table = Sampled(spec).run(run).table
    return {f"{r.metric}@{r.k}": r.value for r in table.itertuples()}


# -------------------------------------------------------------------- mismatch
class MismatchSpec(MeasurementSpec):
    """Gradient mismatch between modalities (Band Together §3): overlap of the users each
    modality's gradient favours, and the attack gain per user set the loss is built over."""

    kind: Literal["mismatch"] = "mismatch"
    budget: float = Field(0.05, gt=0, description="FGSM promotion budget r of the gain check")
    top_share: float = Field(0.1, gt=0, le=1, description="share of attack users in U_m")
    gains: bool = Field(True, description="also measure the attack gain per loss user set")
    promotion: PromotionSettings = Field(
        default_factory=lambda: promotion_settings({}),
        description="promotion settings (n_targets, ...)",
    )

    def label(self) -> str:
        return f"mismatch r={self.budget:g}"


class Mismatch(Measurement):
    """Jaccard of the top users per modality over targets; HR@50 after an FGSM promotion built
    over each modality's top users vs over all attack users."""

    kind = "mismatch"
    Spec = MismatchSpec
    needs = Needs("the gradient-mismatch analysis", routes=("direct",), min_modalities=2)
    folder = "analysis"
    spec: MismatchSpec

    def run(self, run: Run) -> Measured:
        s, seed = self.spec, self.seed(run)
        seed_everything(seed)
        config = PromotionConfig(**s.promotion, seed=seed)
        targets, note = select_targets(
            run.dataset, config.n_interactions, config.n_targets, config.selection, seed
        )
        attack_users, _ = split_users(run.dataset, config.attack_share, seed)
        table = mismatch_analysis(
            run.model,
            run.dataset,
            targets,
            attack_users,
            budget=s.budget,
            top_share=s.top_share,
            config=config,
            gains=s.gains,
        )
        tables = {"gains": gain_summary(table)} if s.gains else {}
        return Measured(table, tables, {"seed": seed, "target_note": note, "targets": len(targets)})

    def rows(self, run: Run, measured: Measured) -> list[ResultRow]:
        s, facts = self.spec, measured.facts
        params = params_json(
            **s.promotion,
            top_share=s.top_share,
            seed=facts["seed"],
            targets=facts["targets"],
            target_note=facts["target_note"],
        )
        common = {
            "attack": "mismatch",
            "attack_params": params,
            "budget": s.budget,
            "split": "train-masked",
            "protocol": "mismatch",
        }
        jaccard = measured.table.groupby("pair", sort=False).jaccard.mean()
        rows = [
            self._row(run, **common, population=pair, metric="jaccard", value=float(v))
            for pair, v in jaccard.items()
        ]
        for r in measured.tables.get("gains", pd.DataFrame()).itertuples():
            rows += [
                self._row(
                    run,
                    **common,
                    population=f"loss_users={r.loss_users}",
                    metric=m,
                    k=50,
                    value=float(getattr(r, m)),
                )
                for m in ("hr_before", "hr_after", "ri_percent")
            ]
        return rows

    def artifacts(self, run: Run, measured: Measured, folder: Path, name: str) -> list[Path]:
        title = (
            f"{run.config.model} on {run.dataset.name}: top-{100 * self.spec.top_share:g}% user "
            "overlap "
            f"({measured.facts['target_note']})"
        )
        return super().artifacts(run, measured, folder, name) + [
            plot_jaccard(measured.table, folder / f"{name}_jaccard.png", title)
        ]


# -------------------------------------------------------------------- registry
MEASUREMENTS: dict[str, type[Measurement]] = {
    cls.kind: cls for cls in (Untargeted, Adaptive, Promotion, Modality, Sampled, Mismatch)
}
AnySpec = Annotated[
    UntargetedSpec | AdaptiveSpec | PromotionSpec | ModalitySpec | SampledSpec | MismatchSpec,
    Field(discriminator="kind"),
]


def measurement_class(kind: str) -> type[Measurement]:
    if kind not in MEASUREMENTS:
        raise UserError(f"unknown measurement '{kind}'; available: {', '.join(MEASUREMENTS)}")
    return MEASUREMENTS[kind]


def make_measurement(spec: MeasurementSpec) -> Measurement:
    return measurement_class(spec.kind)(spec)


def record(run: Run, spec: MeasurementSpec, name: str | None = None) -> tuple[Measured, list[Path]]:
    """Measure on a loaded run and keep everything in its directory: the result rows merged
    into ``results.parquet`` first, then the tables and plots in ``attacks/`` or ``analysis/``
    (named ``name``, default the kind)."""
    measurement = make_measurement(spec)
    measured, rows = measurement.measure(run)
    run.write_results(rows)
    folder = run.path / measurement.folder
    paths = measurement.artifacts(run, measured, folder, name or spec.kind)
    summary = {
        "spec": spec.model_dump(mode="json"),
        "facts": measured.facts,
        "files": [str(p) for p in paths],
    }
    atomic_write_text(
        folder / f"{name or spec.kind}.json", json.dumps(summary, indent=2, default=str)
    )
    return measured, paths
