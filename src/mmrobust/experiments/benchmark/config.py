"""The benchmark's typed config: the grid (datasets × models × defense variants × seeds),
how runs train and fine-tune, the measurements (``attacks:``, one entry per measurement of
the registry, :mod:`mmrobust.experiments.measurements`) and the paper-layout tables."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mmrobust.data import DEFAULT_DATASET
from mmrobust.defenses import defense_class
from mmrobust.experiments.config import ConfigError, DefenseSpec, format_validation_error
from mmrobust.experiments.measurements import (
    AdaptiveSpec,
    MeasurementSpec,
    MismatchSpec,
    ModalitySpec,
    PromotionSpec,
    SampledSpec,
    UntargetedSpec,
)
from mmrobust.models import make_config, model_class
from mmrobust.training import TrainConfig

#: the paper layouts a table can have (``tables.LAYOUTS`` implements each)
LayoutName = Literal["mb-table2", "bt-table2", "amr-table3", "robustness", "budget-grid"]


def _check_train(values: dict[str, Any], key: str) -> dict[str, Any]:
    try:
        TrainConfig(**values)
    except ValidationError as exc:
        raise ValueError(
            format_validation_error(exc, "training settings", prefix=f"{key}.")
        ) from None
    return values


class ModelOverride(BaseModel):
    """Per-dataset model settings (e.g. the validation-tuned regularisation)."""

    model_config = ConfigDict(extra="forbid")

    params: dict[str, Any] = Field(
        default_factory=dict, description="model settings for this dataset"
    )
    train: dict[str, Any] = Field(
        default_factory=dict, description="training settings for this dataset"
    )


class ModelEntry(BaseModel):
    """A model of the grid with its settings (shared, and per dataset)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="model name (vbpr, mmgcn, ...)")
    params: dict[str, Any] = Field(default_factory=dict, description="model settings")
    train: dict[str, Any] = Field(
        default_factory=dict, description="training settings of the clean run"
    )
    per_dataset: dict[str, ModelOverride] = Field(
        default_factory=dict, description="settings per dataset"
    )

    @model_validator(mode="after")
    def _resolve(self) -> ModelEntry:
        self.name = model_class(self.name).name
        for where, override in [("", ModelOverride()), *self.per_dataset.items()]:
            prefix = f"per_dataset.{where}." if where else ""
            try:
                make_config(self.name, {**self.params, **override.params})
            except ValidationError as exc:
                raise ValueError(
                    format_validation_error(exc, f"{self.name} settings", prefix=f"{prefix}params.")
                ) from None
            _check_train({**self.train, **override.train}, f"{prefix}train")
        return self

    def settings(self, dataset: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """(model settings, training settings) on ``dataset``."""
        override = (
            self.per_dataset.get(dataset)
            or self.per_dataset.get(Path(dataset).name)
            or ModelOverride()
        )
        return {**self.params, **override.params}, {**self.train, **override.train}


class FinetuneConfig(BaseModel):
    """How defenses fine-tune from the clean model: a fresh Adam at a small rate for a fixed
    number of epochs, keeping the last epoch (``restore: last``; no selection on any split)."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(50, ge=1, description="fine-tuning epochs (Band Together: 50)")
    lr: float = Field(2e-4, gt=0, description="learning rate of the fine-tuning")
    train: dict[str, Any] = Field(
        default_factory=dict, description="other training settings of the fine-tuning"
    )

    @field_validator("train")
    @classmethod
    def _train(cls, value: dict[str, Any]) -> dict[str, Any]:
        return _check_train(value, "finetune.train")


class VariantConfig(BaseModel):
    """A row of the tables: the clean model, a unimodal model or fine-tuned defenses; a
    ``sweep`` expands it into one variant per combination of defense settings."""

    model_config = ConfigDict(extra="forbid")

    label: str = Field(description="row label in the tables (e.g. 'Adv training')")
    kind: Literal["clean", "finetune", "unimodal"] = Field(
        "finetune", description="where the run comes from"
    )
    defenses: list[DefenseSpec] = Field(
        default_factory=list, description="stacked training-time defenses"
    )
    modality: str = Field("each", description="unimodal: the modality kept, or 'each'")
    sweep: dict[str, list[Any]] = Field(
        default_factory=dict, description="'<defense>.<setting>': values"
    )
    finetune: dict[str, Any] = Field(
        default_factory=dict, description="fine-tuning overrides (epochs, lr, ...)"
    )

    @model_validator(mode="after")
    def _check(self) -> VariantConfig:
        if self.kind != "finetune" and (self.defenses or self.sweep or self.finetune):
            raise ValueError(
                f"variant '{self.label}' of kind '{self.kind}' takes no defenses, sweep or "
                "finetune "
                "settings (use kind: finetune)"
            )
        names = {d.name: d for d in self.defenses}
        for key, values in self.sweep.items():
            name, _, setting = key.rpartition(".")
            if not name or defense_class(name).name not in names:
                raise ValueError(
                    f"sweep key '{key}' of variant '{self.label}' must look like "
                    "<defense>.<setting> "
                    f"with the defense among {sorted(names) or 'its defenses (none listed)'}"
                )
            spec = names[defense_class(name).name]
            if setting not in spec.params:
                raise ValueError(
                    f"sweep key '{key}': '{setting}' is not a setting of {spec.name}; "
                    f"allowed: {', '.join(spec.params)}"
                )
            if not values:
                raise ValueError(f"sweep key '{key}' of variant '{self.label}' has no values")
        return self

    def expand(
        self, modalities: tuple[str, ...]
    ) -> list[tuple[str, dict[str, Any], VariantConfig]]:
        """[(label, sweep setting, concrete variant)]: one per sweep combination or modality."""
        if self.kind == "unimodal":
            if self.modality != "each" and self.modality not in modalities:
                raise ConfigError(
                    f"variant '{self.label}': modality '{self.modality}' is not in the dataset "
                    f"(allowed: each, {', '.join(modalities)})"
                )
            chosen = modalities if self.modality == "each" else (self.modality,)
            return [
                (
                    self._label({"modality": m}, True),
                    {"modality": m},
                    self.model_copy(update={"modality": m}),
                )
                for m in chosen
            ]
        if not self.sweep:
            return [(self.label, {}, self)]
        out = []
        for values in itertools.product(*self.sweep.values()):
            setting = dict(zip(self.sweep, values, strict=True))
            defenses = [d.model_copy(deep=True) for d in self.defenses]
            for key, value in setting.items():
                name, _, param = key.rpartition(".")
                target = next(d for d in defenses if d.name == defense_class(name).name)
                target.params = DefenseSpec(
                    name=target.name, params={**target.params, param: value}
                ).params
            out.append(
                (
                    self._label(setting, True),
                    setting,
                    self.model_copy(update={"defenses": defenses, "sweep": {}}),
                )
            )
        return out

    def _label(self, setting: dict[str, Any], suffix: bool) -> str:
        short = {k.rpartition(".")[2]: v for k, v in setting.items()}
        if "{" in self.label:
            return self.label.format(**short)
        if self.kind == "unimodal":
            return f"{self.label}-{short['modality']}" if suffix else self.label
        shown = ", ".join(
            f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in short.items()
        )
        return f"{self.label} ({shown})"


class Selection(BaseModel):
    """Which runs a measurement entry applies to, and its name in tables."""

    model_config = ConfigDict(extra="forbid")

    spec_class: ClassVar[type[MeasurementSpec]]

    name: str = Field("", description="id used by tables (default: the kind)")
    variants: list[str] | None = Field(
        None, description="apply only to these variant labels or groups"
    )
    seeds: list[int] | None = Field(None, description="apply only to runs with these seeds")
    models: list[str] | None = Field(None, description="apply only to these models")

    @model_validator(mode="after")
    def _name(self) -> Selection:
        self.name = self.name or getattr(self, "kind", "")
        if self.models is not None:
            self.models = [model_class(m).name for m in self.models]
        return self

    def applies(self, labels: tuple[str, ...], seed: int, model: str) -> bool:
        return (
            (self.variants is None or any(v in labels for v in self.variants))
            and (self.seeds is None or seed in self.seeds)
            and (self.models is None or model in self.models)
        )

    def spec(self) -> MeasurementSpec:
        """The measurement settings of the entry (without name and filters)."""
        return self.spec_class(
            **self.model_dump(exclude=set(Selection.model_fields), exclude_unset=True)
        )


class UntargetedEntry(Selection, UntargetedSpec):
    """An ``attacks:`` entry of kind ``untargeted``."""

    spec_class = UntargetedSpec


class AdaptiveEntry(Selection, AdaptiveSpec):
    """An ``attacks:`` entry of kind ``adaptive``."""

    spec_class = AdaptiveSpec


class PromotionEntry(Selection, PromotionSpec):
    """An ``attacks:`` entry of kind ``promotion``."""

    spec_class = PromotionSpec


class ModalityEntry(Selection, ModalitySpec):
    """An ``attacks:`` entry of kind ``modality``."""

    spec_class = ModalitySpec


class SampledEntry(Selection, SampledSpec):
    """An ``attacks:`` entry of kind ``sampled``."""

    spec_class = SampledSpec


class MismatchEntry(Selection, MismatchSpec):
    """An ``attacks:`` entry of kind ``mismatch``."""

    spec_class = MismatchSpec


ENTRIES: dict[str, type[Selection]] = {
    cls.model_fields["kind"].default: cls
    for cls in (
        UntargetedEntry,
        AdaptiveEntry,
        PromotionEntry,
        ModalityEntry,
        SampledEntry,
        MismatchEntry,
    )
}
AttackEntry = Annotated[
    UntargetedEntry | AdaptiveEntry | PromotionEntry | ModalityEntry | SampledEntry | MismatchEntry,
    Field(discriminator="kind"),
]


class TableConfig(BaseModel):
    """A paper-layout table built from the results store (see ``store.build_table``)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="id of the table")
    layout: LayoutName = Field(
        description="mb-table2, bt-table2, amr-table3, robustness or budget-grid"
    )
    title: str = Field("", description="caption")
    variants: list[str] | None = Field(
        None, description="rows: variant labels or groups (default: all)"
    )
    source: str | None = Field(
        None, description="name of the attack entry read (default: the first that fits)"
    )
    attack: str = Field("fgsm", description="attack of the attacked columns")
    budget: float = Field(0.05, description="budget of the attacked columns")
    beta: float = Field(0.0, description="budget-grid on promotion: the β of the attack")
    metric: str = Field("recall", description="robustness / budget-grid: metric")
    k: int = Field(20, description="robustness / budget-grid: cut-off")
    baseline: str | None = Field(
        None, description="undefended row for the tests (default: the clean variant)"
    )


class Resources(BaseModel):
    """What one cell needs (declared to Ray for every task)."""

    model_config = ConfigDict(extra="forbid")

    num_cpus: float = Field(1.0, gt=0, description="CPUs per cell")
    num_gpus: float = Field(0.0, ge=0, description="GPUs per cell")


class BenchmarkConfig(BaseModel):
    """A whole benchmark: the grid, how to train and fine-tune, what to measure and show."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("benchmark", description="benchmark name")
    description: str = Field("", description="what it reproduces")
    preset: str | None = Field(None, description="the preset applied (filled in when loading)")
    datasets: list[str] = Field(
        default_factory=lambda: [DEFAULT_DATASET], description="dataset names or folders"
    )
    models: list[ModelEntry] = Field(
        default_factory=lambda: [ModelEntry(name="vbpr")], description="models"
    )
    seeds: list[int] = Field(
        default_factory=lambda: [0], description="seeds (paired across variants)"
    )
    train: dict[str, Any] = Field(
        default_factory=dict, description="training settings of the clean runs"
    )
    finetune: FinetuneConfig = Field(
        default_factory=FinetuneConfig, description="defense fine-tuning"
    )
    defenses: list[VariantConfig] = Field(
        default_factory=lambda: [VariantConfig(label="Multimodal", kind="clean")],
        description="table rows",
    )
    attacks: list[AttackEntry] = Field(default_factory=list, description="measurements")
    tables: list[TableConfig] = Field(
        default_factory=list, description="paper-layout tables of the report"
    )
    device: str = Field("cpu", description="'cpu', 'cuda', 'auto'")
    resources: Resources = Field(default_factory=Resources, description="per-cell resources (Ray)")

    @field_validator("models", mode="before")
    @classmethod
    def _model_names(cls, value: Any) -> Any:
        return (
            [{"name": v} if isinstance(v, str) else v for v in value]
            if isinstance(value, list)
            else value
        )

    @field_validator("train")
    @classmethod
    def _train(cls, value: dict[str, Any]) -> dict[str, Any]:
        return _check_train(value, "train")

    @model_validator(mode="after")
    def _cross_check(self) -> BenchmarkConfig:
        for what, names in (
            ("defenses[].label", [v.label for v in self.defenses]),
            ("attacks[].name", [a.name for a in self.attacks]),
            ("tables[].name", [t.name for t in self.tables]),
            ("datasets", self.datasets),
            ("seeds", self.seeds),
        ):
            if len(set(names)) != len(names):
                raise ValueError(f"'{what}' must be unique; got {names}")
        if not self.seeds or not self.datasets or not self.models:
            raise ValueError("'datasets', 'models' and 'seeds' must not be empty")
        labels = [v.label for v in self.defenses]
        attacks = [a.name for a in self.attacks]
        for table in self.tables:
            if table.source is not None and table.source not in attacks:
                raise ValueError(
                    f"table '{table.name}': source '{table.source}' is not an attack; "
                    f"allowed: {', '.join(attacks) or 'none defined'}"
                )
        for kind, entries in (("attack", self.attacks), ("table", self.tables)):
            for entry in entries:
                unknown = [v for v in entry.variants or [] if not _matches_any(v, labels)]
                if unknown:
                    raise ValueError(
                        f"{kind} '{entry.name}': variants {unknown} are not defense labels; "
                        f"allowed: {', '.join(labels)} (or their expansions)"
                    )
            if kind == "table":
                for entry in entries:
                    if entry.baseline is not None and not _matches_any(entry.baseline, labels):
                        raise ValueError(
                            f"table '{entry.name}': baseline '{entry.baseline}' is not a defense "
                            "label; "
                            f"allowed: {', '.join(labels)}"
                        )
        return self

    def clean_label(self) -> str | None:
        return next((v.label for v in self.defenses if v.kind == "clean"), None)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def _matches_any(name: str, labels: list[str]) -> bool:
    """A variant label of the config or one of its expansions ('Unimodal-image', 'MB (lam=0.1)')."""
    return name in labels or any(name.startswith(label) for label in labels)
