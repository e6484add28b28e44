"""Benchmark configs (typed, YAML with presets) and their expansion into a grid of cells.

A benchmark is datasets × models × defenses × attacks × budgets × seeds.  It expands into
*cells*, each one unit of work with a stable id (a hash of its coordinates):

* ``train``: a model trained from scratch (the clean model, or a unimodal variant);
* ``finetune``: a defense (or a stack of defenses) fine-tuned from a clean model, as the
  defense papers do (modality-balancing paper §5.1.4; Band Together §5.1; AMR §4);
* ``eval``: one measurement of a trained run: an untargeted attack at one budget
  (modality-balancing paper Table 2/3, Figure 5), a promotion attack (Band Together
  Table 2, Figure 5), the gradient-masking check, the modality margins (modality-balancing
  Figure 1a / 6a) or the sampled-protocol evaluation (AMR paper Table 3).

Equal coordinates give equal ids, so a clean model is trained once and reused by every
attack and every defense that fine-tunes from it, and two table rows naming the same
defense settings share one run.  *Members* tie the grid to what the tables show: one per
(dataset, model, defense variant, seed), naming its run cell and its eval cells.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mmrobust.attacks import PromotionConfig
from mmrobust.data import DEFAULT_DATASET
from mmrobust.defenses import defense_class
from mmrobust.experiments.config import ConfigError, DefenseSpec, RunConfig, format_validation_error
from mmrobust.models import make_config, model_class
from mmrobust.training import TrainConfig

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
EVAL_KINDS = ("untargeted", "promotion", "adaptive", "modality", "sampled")
LAYOUTS = ("mb-table2", "bt-table2", "amr-table3", "robustness", "budget-grid")
# settings that change where or how fast a run goes, never its numbers: not part of a cell's id
NOT_IDENTITY = ("device", "progress", "eval_batch_size", "checkpoint_every")
NO_FEATURE_ROUTES = ("none", "training-only")


def _check_train(values: dict[str, Any], key: str) -> dict[str, Any]:
    try:
        TrainConfig(**values)
    except ValidationError as exc:
        raise ValueError(format_validation_error(exc, "training settings", prefix=f"{key}.")) from None
    return values


class ModelOverride(BaseModel):
    """Per-dataset model settings (e.g. the validation-tuned regularisation)."""

    model_config = ConfigDict(extra="forbid")

    params: dict[str, Any] = Field(default_factory=dict, description="model settings for this dataset")
    train: dict[str, Any] = Field(default_factory=dict, description="training settings for this dataset")


class ModelEntry(BaseModel):
    """A model of the grid with its settings (shared, and per dataset)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="model name (vbpr, mmgcn, ...)")
    params: dict[str, Any] = Field(default_factory=dict, description="model settings")
    train: dict[str, Any] = Field(default_factory=dict, description="training settings of the clean run")
    per_dataset: dict[str, ModelOverride] = Field(default_factory=dict, description="settings per dataset")

    @model_validator(mode="after")
    def _resolve(self) -> ModelEntry:
        self.name = model_class(self.name).name
        for where, override in [("", ModelOverride()), *self.per_dataset.items()]:
            prefix = f"per_dataset.{where}." if where else ""
            try:
                make_config(self.name, {**self.params, **override.params})
            except ValidationError as exc:
                raise ValueError(format_validation_error(exc, f"{self.name} settings", prefix=f"{prefix}params.")) from None
            _check_train({**self.train, **override.train}, f"{prefix}train")
        return self

    def settings(self, dataset: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """(model settings, training settings) on ``dataset``."""
        override = self.per_dataset.get(dataset) or self.per_dataset.get(Path(dataset).name) or ModelOverride()
        return {**self.params, **override.params}, {**self.train, **override.train}


class FinetuneConfig(BaseModel):
    """How defenses fine-tune from the clean model: a fresh Adam at a small rate for a fixed
    number of epochs, keeping the last epoch (``restore: last``; no selection on any split)."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(50, ge=1, description="fine-tuning epochs (Band Together: 50)")
    lr: float = Field(2e-4, gt=0, description="learning rate of the fine-tuning")
    train: dict[str, Any] = Field(default_factory=dict, description="other training settings of the fine-tuning")

    @field_validator("train")
    @classmethod
    def _train(cls, value: dict[str, Any]) -> dict[str, Any]:
        return _check_train(value, "finetune.train")


class VariantConfig(BaseModel):
    """A row of the tables: the clean model, a unimodal model or fine-tuned defenses; a
    ``sweep`` expands it into one variant per combination of defense settings."""

    model_config = ConfigDict(extra="forbid")

    label: str = Field(description="row label in the tables (e.g. 'Adv training')")
    kind: Literal["clean", "finetune", "unimodal"] = Field("finetune", description="where the run comes from")
    defenses: list[DefenseSpec] = Field(default_factory=list, description="stacked training-time defenses")
    modality: str = Field("each", description="unimodal: the modality kept, or 'each'")
    sweep: dict[str, list[Any]] = Field(default_factory=dict, description="'<defense>.<setting>': values")
    finetune: dict[str, Any] = Field(default_factory=dict, description="fine-tuning overrides (epochs, lr, ...)")

    @model_validator(mode="after")
    def _check(self) -> VariantConfig:
        if self.kind != "finetune" and (self.defenses or self.sweep or self.finetune):
            raise ValueError(f"variant '{self.label}' of kind '{self.kind}' takes no defenses, sweep or finetune "
                             "settings (use kind: finetune)")
        names = {d.name: d for d in self.defenses}
        for key, values in self.sweep.items():
            name, _, setting = key.rpartition(".")
            if not name or defense_class(name).name not in names:
                raise ValueError(f"sweep key '{key}' of variant '{self.label}' must look like <defense>.<setting> "
                                 f"with the defense among {sorted(names) or 'its defenses (none listed)'}")
            spec = names[defense_class(name).name]
            if setting not in spec.params:
                raise ValueError(f"sweep key '{key}': '{setting}' is not a setting of {spec.name}; "
                                 f"allowed: {', '.join(spec.params)}")
            if not values:
                raise ValueError(f"sweep key '{key}' of variant '{self.label}' has no values")
        return self

    def expand(self, modalities: tuple[str, ...]) -> list[tuple[str, dict[str, Any], VariantConfig]]:
        """[(label, sweep setting, concrete variant)]: one per sweep combination or modality."""
        if self.kind == "unimodal":
            if self.modality != "each" and self.modality not in modalities:
                raise ConfigError(f"variant '{self.label}': modality '{self.modality}' is not in the dataset "
                                  f"(allowed: each, {', '.join(modalities)})")
            chosen = modalities if self.modality == "each" else (self.modality,)
            return [(self._label({"modality": m}, True), {"modality": m},
                     self.model_copy(update={"modality": m})) for m in chosen]
        if not self.sweep:
            return [(self.label, {}, self)]
        out = []
        for values in itertools.product(*self.sweep.values()):
            setting = dict(zip(self.sweep, values, strict=True))
            defenses = [d.model_copy(deep=True) for d in self.defenses]
            for key, value in setting.items():
                name, _, param = key.rpartition(".")
                target = next(d for d in defenses if d.name == defense_class(name).name)
                target.params = DefenseSpec(name=target.name, params={**target.params, param: value}).params
            out.append((self._label(setting, True), setting, self.model_copy(update={"defenses": defenses, "sweep": {}})))
        return out

    def _label(self, setting: dict[str, Any], suffix: bool) -> str:
        short = {k.rpartition(".")[2]: v for k, v in setting.items()}
        if "{" in self.label:
            return self.label.format(**short)
        if self.kind == "unimodal":
            return f"{self.label}-{short['modality']}" if suffix else self.label
        return f"{self.label} ({', '.join(f'{k}={v:g}' if isinstance(v, float) else f'{k}={v}' for k, v in short.items())})"


class AttackConfig(BaseModel):
    """One kind of measurement applied to the trained runs (expanded over attacks × budgets × β)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("", description="id used by tables (default: the kind)")
    kind: Literal["untargeted", "promotion", "adaptive", "modality", "sampled"] = Field(
        description="untargeted, promotion, adaptive (FGSM vs PGD masking check), modality (margins), sampled")
    attacks: list[Literal["random", "fgsm", "pgd"]] = Field(default_factory=lambda: ["fgsm"], description="attacks")
    budgets: list[float] = Field(default_factory=lambda: [0.05], description="budgets r (relative) or ε")
    norm: Literal["l2", "linf"] = Field("l2", description="norm of the budget")
    point: Literal["raw", "embedding"] = Field("raw", description="perturbation point")
    relative: bool = Field(True, description="budgets relative to each row's L2 norm")
    pgd_steps: int = Field(10, ge=1, description="PGD steps (adaptive: e.g. 50)")
    restarts: int = Field(1, ge=1, description="PGD random restarts")
    betas: list[float] = Field(default_factory=lambda: [0.0], description="promotion: alignment weights β")
    promotion: dict[str, Any] = Field(default_factory=dict, description="promotion settings (targets, surrogate, ...)")
    n_negatives: int = Field(999, ge=1, description="sampled: negatives per positive (capped by what users have)")
    factor: float = Field(2.0, gt=0, description="adaptive: flag when the PGD drop > factor × FGSM drop")
    ks: list[int] = Field(default_factory=lambda: [10, 20], description="cut-offs of the attacked metrics")
    seed: int | None = Field(None, description="seed of negatives/targets (default: the run's seed)")
    variants: list[str] | None = Field(None, description="apply only to these variant labels or groups")
    seeds: list[int] | None = Field(None, description="apply only to runs with these seeds")

    @model_validator(mode="after")
    def _check(self) -> AttackConfig:
        self.name = self.name or self.kind
        if not self.budgets or any(b <= 0 for b in self.budgets):
            raise ValueError(f"attack '{self.name}': budgets must be a non-empty list of positive numbers")
        try:
            PromotionConfig(**self.promotion)
        except ValidationError as exc:
            raise ValueError(format_validation_error(exc, "promotion settings", prefix="promotion.")) from None
        if "beta" in self.promotion:
            raise ValueError(f"attack '{self.name}': set promotion β with 'betas', not 'promotion.beta'")
        return self

    def settings(self) -> list[dict[str, Any]]:
        """One dict per eval cell (identity of the measurement, without the filters)."""
        base = self.model_dump(exclude={"name", "attacks", "budgets", "betas", "variants", "seeds"})
        kind = self.kind
        if kind in ("modality", "adaptive"):
            return [{**base, "attack": "fgsm" if kind == "modality" else "fgsm+pgd", "budget": b, "beta": 0.0}
                    for b in self.budgets]
        combos = [(a, b, beta) for a in self.attacks for b in self.budgets
                  for beta in (self.betas if kind == "promotion" else [0.0])]
        cells = [{**base, "attack": a, "budget": b, "beta": beta} for a, b, beta in combos]
        if kind == "sampled":
            cells.insert(0, {**base, "attack": "none", "budget": 0.0, "beta": 0.0})
        return cells

    def applies(self, labels: tuple[str, ...], seed: int) -> bool:
        return (self.variants is None or any(v in labels for v in self.variants)) and \
            (self.seeds is None or seed in self.seeds)


class TableConfig(BaseModel):
    """A paper-layout table built from the results store (see ``store.build_table``)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="id of the table")
    layout: Literal["mb-table2", "bt-table2", "amr-table3", "robustness", "budget-grid"] = Field(
        description="mb-table2, bt-table2, amr-table3, robustness or budget-grid")
    title: str = Field("", description="caption")
    variants: list[str] | None = Field(None, description="rows: variant labels or groups (default: all)")
    source: str | None = Field(None, description="name of the attack entry read (default: the first that fits)")
    attack: str = Field("fgsm", description="attack of the attacked columns")
    budget: float = Field(0.05, description="budget of the attacked columns")
    beta: float = Field(0.0, description="budget-grid on promotion: the β of the attack")
    metric: str = Field("recall", description="robustness / budget-grid: metric")
    k: int = Field(20, description="robustness / budget-grid: cut-off")
    baseline: str | None = Field(None, description="undefended row for the tests (default: the clean variant)")


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
    datasets: list[str] = Field(default_factory=lambda: [DEFAULT_DATASET], description="dataset names or folders")
    models: list[ModelEntry] = Field(default_factory=lambda: [ModelEntry(name="vbpr")], description="models")
    seeds: list[int] = Field(default_factory=lambda: [0], description="seeds (paired across variants)")
    train: dict[str, Any] = Field(default_factory=dict, description="training settings of the clean runs")
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig, description="defense fine-tuning")
    defenses: list[VariantConfig] = Field(
        default_factory=lambda: [VariantConfig(label="Multimodal", kind="clean")], description="table rows")
    attacks: list[AttackConfig] = Field(default_factory=list, description="measurements")
    tables: list[TableConfig] = Field(default_factory=list, description="paper-layout tables of the report")
    device: str = Field("cpu", description="'cpu', 'cuda', 'auto'")
    resources: Resources = Field(default_factory=Resources, description="per-cell resources (Ray)")

    @field_validator("models", mode="before")
    @classmethod
    def _model_names(cls, value: Any) -> Any:
        return [{"name": v} if isinstance(v, str) else v for v in value] if isinstance(value, list) else value

    @field_validator("train")
    @classmethod
    def _train(cls, value: dict[str, Any]) -> dict[str, Any]:
        return _check_train(value, "train")

    @model_validator(mode="after")
    def _cross_check(self) -> BenchmarkConfig:
        for what, names in (("defenses[].label", [v.label for v in self.defenses]),
                            ("attacks[].name", [a.name for a in self.attacks]),
                            ("tables[].name", [t.name for t in self.tables]), ("datasets", self.datasets),
                            ("seeds", self.seeds)):
            if len(set(names)) != len(names):
                raise ValueError(f"'{what}' must be unique; got {names}")
        if not self.seeds or not self.datasets or not self.models:
            raise ValueError("'datasets', 'models' and 'seeds' must not be empty")
        labels = [v.label for v in self.defenses]
        attacks = [a.name for a in self.attacks]
        for table in self.tables:
            if table.source is not None and table.source not in attacks:
                raise ValueError(f"table '{table.name}': source '{table.source}' is not an attack; "
                                 f"allowed: {', '.join(attacks) or 'none defined'}")
        for kind, entries in (("attack", self.attacks), ("table", self.tables)):
            for entry in entries:
                unknown = [v for v in entry.variants or [] if not _matches_any(v, labels)]
                if unknown:
                    raise ValueError(f"{kind} '{entry.name}': variants {unknown} are not defense labels; "
                                     f"allowed: {', '.join(labels)} (or their expansions)")
            if kind == "table":
                for entry in entries:
                    if entry.baseline is not None and not _matches_any(entry.baseline, labels):
                        raise ValueError(f"table '{entry.name}': baseline '{entry.baseline}' is not a defense label; "
                                         f"allowed: {', '.join(labels)}")
        return self

    def clean_label(self) -> str | None:
        return next((v.label for v in self.defenses if v.kind == "clean"), None)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def _matches_any(name: str, labels: list[str]) -> bool:
    """A variant label of the config or one of its expansions ('Unimodal-image', 'MB (lam=0.1)')."""
    return name in labels or any(name.startswith(label) for label in labels)


# ------------------------------------------------------------------- loading
def packaged_configs() -> dict[str, Path]:
    """The ready configs shipped in ``mmrobust/configs`` by name (``default``, ``amr``, ...)."""
    return {p.stem: p for p in sorted(CONFIG_DIR.glob("*.yaml"))}


def resolve_config_path(config: str | Path | None) -> Path:
    """A YAML path, or the name of a packaged config (None → ``default``)."""
    if config is None:
        return packaged_configs()["default"]
    path = Path(config)
    if path.is_file():
        return path
    known = packaged_configs()
    if str(config) in known:
        return known[str(config)]
    raise ConfigError(f"benchmark config '{config}' is neither a file nor a packaged config; "
                      f"packaged: {', '.join(known)}")


def merge(base: Any, patch: Any) -> Any:
    """Deep merge: mappings recursively; lists of named mappings (``name`` or ``label``) entry by
    entry (new names appended); anything else replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for key, value in patch.items():
            out[key] = merge(base[key], value) if key in base else copy.deepcopy(value)
        return out
    if isinstance(base, list) and isinstance(patch, list) and _named(base) and _named(patch):
        out = [copy.deepcopy(b) for b in base]
        index = {_key(b): i for i, b in enumerate(out)}
        for item in patch:
            drop, item = item.get("drop", False), {k: v for k, v in item.items() if k != "drop"}
            if drop:
                out = [b for b in out if _key(b) != _key(item)]
                index = {_key(b): i for i, b in enumerate(out)}
            elif _key(item) in index:
                out[index[_key(item)]] = merge(out[index[_key(item)]], item)
            else:
                out.append(copy.deepcopy(item))
                index[_key(item)] = len(out) - 1
        return out
    return copy.deepcopy(patch)


def _named(items: list) -> bool:
    return bool(items) and all(isinstance(i, dict) and ("name" in i or "label" in i) for i in items)


def _key(item: dict) -> str:
    return str(item.get("label", item.get("name")))


def set_override(data: dict[str, Any], item: str) -> dict[str, Any]:
    """Apply one ``a.b.c=value`` override; a segment may name an entry of a list of named
    mappings (``attacks.untargeted.budgets=[0.05]``)."""
    if "=" not in item:
        raise ConfigError(f"override '{item}' must look like key=value (e.g. seeds=[0] or finetune.epochs=5)")
    key, raw = item.split("=", 1)
    value = yaml.safe_load(raw) if raw else None
    data = copy.deepcopy(data)
    node: Any = data
    parts = key.split(".")
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        if isinstance(node, list):
            match = [entry for entry in node if isinstance(entry, dict) and _key(entry) == part]
            if not match:
                names = [_key(e) for e in node if isinstance(e, dict)]
                raise ConfigError(f"override '{key}': no entry named '{part}'; allowed: {', '.join(names)}")
            if last:
                raise ConfigError(f"override '{key}' must name a setting of the entry '{part}'")
            node = match[0]
        elif last:
            node[part] = value
        else:
            node = node.setdefault(part, {})
    return data


def select_models(data: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """Keep only the config's model entries named in ``names`` (with their settings)."""
    entries = [{"name": e} if isinstance(e, str) else e for e in data.get("models") or []]
    known = [str(e.get("name")) for e in entries]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"models {unknown} are not in the config; allowed: {', '.join(known)}")
    return {**data, "models": [e for e in entries if e.get("name") in names]}


def parse_benchmark(data: dict[str, Any], source: str = "benchmark config", preset: str | None = None,
                    overrides: list[str] | None = None, models: list[str] | None = None) -> BenchmarkConfig:
    """Validate a benchmark mapping (after its preset, overrides and model selection) into a
    :class:`BenchmarkConfig`."""
    data = dict(data)
    presets = data.pop("presets", None) or {}
    if preset is not None:
        if preset not in presets:
            raise ConfigError(f"{source}: unknown preset '{preset}'; allowed: {', '.join(presets) or 'none defined'}")
        data = merge(data, presets[preset] or {})
        data["preset"] = preset
    for item in overrides or []:
        data = set_override(data, item)
    if models:
        data = select_models(data, models)
    try:
        return BenchmarkConfig(**data)
    except ValidationError as exc:
        raise ConfigError(_format_error(exc, source)) from None
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def load_benchmark(config: str | Path | None = None, preset: str | None = None,
                   overrides: list[str] | None = None, models: list[str] | None = None) -> BenchmarkConfig:
    """Read a benchmark YAML (or a packaged config by name; None → ``default``)."""
    path = resolve_config_path(config)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of settings, not {type(data).__name__}")
    return parse_benchmark(data, str(path), preset, overrides, models)


def _format_error(exc: ValidationError, source: str) -> str:
    """Like ``format_validation_error``, but unknown keys come with the allowed ones."""
    parts = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            allowed = _allowed_keys(err["loc"][:-1])
            msg = "is not a known setting" + (f"; allowed: {', '.join(allowed)}" if allowed else "")
        parts.append(f"'{key}' {msg}" if key else msg)
    return f"{source}: " + "; ".join(parts)


def _allowed_keys(loc: tuple) -> list[str]:
    model: Any = BenchmarkConfig
    for part in loc:
        if isinstance(part, int) or model is None:
            continue
        info = model.model_fields.get(part)
        model = _model_in(info.annotation) if info else None
    return list(model.model_fields) if model is not None else []


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) is not None:
        for arg in get_args(annotation):
            found = _model_in(arg)
            if found is not None:
                return found
    return None


# --------------------------------------------------------------------- grid
@dataclass
class Cell:
    """One unit of work.  ``payload``: train/finetune → the run config (``init_from`` is the
    id of the clean cell, resolved to its directory at run time); eval → the measurement."""

    id: str
    kind: Literal["train", "finetune", "eval"]
    dataset: str
    title: str
    run_dir: str
    payload: dict[str, Any]
    needs: tuple[str, ...] = ()
    model: str = ""

    @property
    def level(self) -> int:
        return {"train": 0, "finetune": 1, "eval": 2}[self.kind]


@dataclass(frozen=True)
class Member:
    """A (dataset, model, variant, seed) of the tables: its run cell and its eval cells."""

    dataset: str
    model: str
    variant: str
    group: str
    kind: str
    setting: str
    seed: int
    run: str
    evals: tuple[tuple[str, str], ...]  # (eval cell id, attack entry name)


@dataclass
class Grid:
    cells: dict[str, Cell] = field(default_factory=dict)
    members: list[Member] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def rows(self) -> dict[str, str]:
        """Cell id → the table row (variant label of the config) it serves first; a clean model
        that is only fine-tuned from is not in it."""
        out: dict[str, str] = {}
        for member in self.members:
            for cid in (member.run, *(cid for cid, _ in member.evals)):
                out.setdefault(cid, member.group)
        return out

    def ordered(self) -> list[Cell]:
        """Cells with every dependency before its dependents: every training cell first, then
        table row by table row (the config's variant order) its fine-tunes and measurements,
        so that an interrupted long benchmark has finished whole rows rather than many runs
        and no numbers.  A cell shared by several rows goes with the first."""
        groups = list(dict.fromkeys(m.group for m in self.members))
        row = {cid: groups.index(group) for cid, group in self.rows().items()}
        return sorted(self.cells.values(), key=lambda c: (c.level > 0, row.get(c.id, len(groups)), c.level))

    def add(self, cell: Cell) -> str:
        self.cells.setdefault(cell.id, cell)
        return cell.id


def cell_id(identity: dict[str, Any]) -> str:
    text = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.=+-]+", "-", text).strip("-").lower() or "x"


def _identity(config: RunConfig) -> dict[str, Any]:
    data = config.model_dump(mode="json")
    data["train"] = {k: v for k, v in data["train"].items() if k not in NOT_IDENTITY}
    return data


def expand_grid(config: BenchmarkConfig, datasets: Mapping[str, Any]) -> Grid:
    """Expand the benchmark into cells and members.  ``datasets`` maps each dataset of the
    config to its loaded :class:`~mmrobust.data.Dataset` (or anything with ``name`` and
    ``modalities``): unimodal variants need the modalities."""
    grid = Grid()
    for dataset, entry, seed in itertools.product(config.datasets, config.models, config.seeds):
        params, train = entry.settings(dataset)
        run_train = {**config.train, **train, "seed": seed, "device": config.device, "progress": False}
        clean = RunConfig(dataset=dataset, model=entry.name, model_params=params, train=run_train)
        route = model_class(entry.name).route_of(model_class(entry.name).Config(**clean.model_params))
        name = datasets[dataset].name
        where = f"{name}/{entry.name}"
        clean_id = _train_cell(grid, clean, where, "clean", seed)
        for variant in config.defenses:
            for label, setting, concrete in variant.expand(tuple(datasets[dataset].modalities)):
                run_id = _variant_run(grid, config, concrete, clean, clean_id, where, label, seed, route)
                if run_id is None:
                    continue
                evals = _eval_cells(grid, config, run_id, (label, variant.label), seed, route, where)
                grid.members.append(Member(name, entry.name, label, variant.label, variant.kind,
                                           json.dumps(setting, sort_keys=True), seed, run_id, tuple(evals)))
    return grid


def _train_cell(grid: Grid, config: RunConfig, where: str, label: str, seed: int) -> str:
    cid = cell_id({"kind": "train", **_identity(config)})
    run_dir = f"runs/{where}/{slug(label)}-s{seed}-{cid[:8]}"
    return grid.add(Cell(cid, "train", config.dataset, f"{where}/{label}/s{seed}: train", run_dir,
                         {"config": config.model_dump(mode="json")}, model=config.model))


def _variant_run(grid: Grid, bench: BenchmarkConfig, variant: VariantConfig, clean: RunConfig, clean_id: str,
                 where: str, label: str, seed: int, route: str) -> str | None:
    if variant.kind == "clean":
        return clean_id
    if route in NO_FEATURE_ROUTES:
        grid.skipped.append(f"{where}/{label}: skipped (feature route '{route}': defenses and unimodal "
                            "variants need a model that reads item features)")
        return None
    if variant.kind == "unimodal":
        params = {**clean.model_params, "modalities": [variant.modality]}
        return _train_cell(grid, clean.model_copy(update={"model_params": params}), where, label, seed)
    ft = bench.finetune
    train = {**clean.train.model_dump(), "eval_every": ft.epochs, **ft.train, "lr": ft.lr, "epochs": ft.epochs,
             "restore": "last", **variant.finetune}
    if "epochs" in variant.finetune and "eval_every" not in variant.finetune:
        train["eval_every"] = train["epochs"]
    config = RunConfig(dataset=clean.dataset, model=clean.model, model_params=clean.model_params,
                       defenses=[d.model_dump() for d in variant.defenses], train=train)
    cid = cell_id({"kind": "finetune", "from": clean_id, **_identity(config)})
    run_dir = f"runs/{where}/{slug(label)}-s{seed}-{cid[:8]}"
    return grid.add(Cell(cid, "finetune", clean.dataset, f"{where}/{label}/s{seed}: fine-tune", run_dir,
                         {"config": config.model_dump(mode="json"), "init_from": clean_id,
                          "init_dir": grid.cells[clean_id].run_dir}, (clean_id,), clean.model))


def _eval_cells(grid: Grid, bench: BenchmarkConfig, run_id: str, labels: tuple[str, ...], seed: int, route: str,
                where: str) -> list[tuple[str, str]]:
    """[(eval cell id, attack entry name)] of one run; equal measurements share a cell."""
    run = grid.cells[run_id]
    out = []
    for attack in bench.attacks:
        if not attack.applies(labels, seed):
            continue
        if route in NO_FEATURE_ROUTES:
            grid.skipped.append(f"{where}/{labels[0]}: {attack.name} skipped (feature route '{route}': "
                                "feature attacks cannot reach the score)")
            continue
        for settings in attack.settings():
            settings = {**settings, "seed": seed if attack.seed is None else attack.seed}
            cid = cell_id({"kind": "eval", "run": run_id, **settings})
            title = f"{where}/{labels[0]}/s{seed}: {attack.name} {settings['attack']} r={settings['budget']:g}"
            if attack.kind == "promotion":
                title += f" β={settings['beta']:g}"
            grid.add(Cell(cid, "eval", run.dataset, title, run.run_dir, settings, (run_id,), run.model))
            out.append((cid, attack.name))
    return out
