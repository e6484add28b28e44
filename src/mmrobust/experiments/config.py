"""Typed run configuration, read from and written to YAML."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mmrobust.data import DEFAULT_DATASET
from mmrobust.defenses import defense_class
from mmrobust.errors import UserError
from mmrobust.models import make_config, model_class
from mmrobust.training import TrainConfig


class ConfigError(UserError):
    """A configuration file or override that cannot be used; the message names the key."""


class DefenseSpec(BaseModel):
    """A defense plug-in and its settings (defaults filled in)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _resolve(self) -> DefenseSpec:
        cls = defense_class(self.name)
        self.name = cls.name
        try:
            self.params = cls.Config(**self.params).model_dump()
        except ValidationError as exc:
            raise ValueError(
                format_validation_error(
                    exc, f"{self.name} settings", prefix=f"defense.{self.name}."
                )
            ) from None
        return self


class RunConfig(BaseModel):
    """One training run: which dataset, which model with which settings, which defenses, how
    to train."""

    model_config = ConfigDict(extra="forbid")

    dataset: str = Field(DEFAULT_DATASET, description="dataset name or MMRec folder path")
    model: str = Field("vbpr", description="model name (pop, mf, lightgcn, vbpr, ...)")
    model_params: dict[str, Any] = Field(
        default_factory=dict, description="the model's typed config, defaults filled in"
    )
    defenses: list[DefenseSpec] = Field(
        default_factory=list, description="training-time defenses (they stack)"
    )
    init_from: str | None = Field(
        None, description="run directory whose best weights start the training (fine-tuning)"
    )
    train: TrainConfig = Field(default_factory=TrainConfig)

    @model_validator(mode="after")
    def _resolve_model(self) -> RunConfig:
        self.model = model_class(self.model).name
        try:
            self.model_params = make_config(self.model, self.model_params).model_dump()
        except ValidationError as exc:
            raise ValueError(
                format_validation_error(exc, f"{self.model} settings", prefix="model_params.")
            ) from None
        names = [d.name for d in self.defenses]
        if len(set(names)) != len(names):
            raise ValueError(f"a defense is listed twice in {names}")
        return self

    def defense_label(self) -> str:
        """'none', the defenses joined by '+', or 'unimodal-<m>' for a single-modality model."""
        labels = [d.name for d in self.defenses]
        if self.model_params.get("modalities"):
            labels.insert(0, "unimodal-" + "+".join(self.model_params["modalities"]))
        return "+".join(labels) or "none"

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def format_validation_error(exc: ValidationError, source: str = "config", prefix: str = "") -> str:
    """One line naming every offending key (``'train.lr' Input should be greater than 0``)."""
    parts = []
    for err in exc.errors():
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "is not a known setting"
        key = ".".join(str(p) for p in err["loc"])
        parts.append(f"'{prefix}{key}' {msg}" if key else msg)
    return f"{source}: " + "; ".join(parts)


def parse_run_config(data: dict[str, Any], source: str = "config") -> RunConfig:
    try:
        return RunConfig(**data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from None
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def read_settings(path: str | Path) -> dict[str, Any]:
    """The mapping of settings in a YAML file (safe loader; one sentence naming the file when
    it is missing, unreadable, not YAML or not a mapping)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        problem = str(exc).replace("\n", " ")
        raise ConfigError(f"{path} is not valid YAML ({problem})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} cannot be read ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of settings, not {type(data).__name__}")
    return data


def load_run_config(path: str | Path) -> RunConfig:
    return parse_run_config(read_settings(path), str(path))
