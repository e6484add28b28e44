"""Reading a benchmark config: a YAML file or a packaged config by name, its preset merged
in, ``--set`` overrides and ``--models`` applied, then validated into a
:class:`~mmrobust.experiments.benchmark.config.BenchmarkConfig`."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, get_args, get_origin

from pydantic import BaseModel, ValidationError

from mmrobust.experiments.benchmark.config import ENTRIES, BenchmarkConfig
from mmrobust.experiments.config import ConfigError, read_settings
from mmrobust.experiments.overrides import apply_override, named_key

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


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
    raise ConfigError(
        f"benchmark config '{config}' is neither a file nor a packaged config; "
        f"packaged: {', '.join(known)}"
    )


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
        index = {named_key(b): i for i, b in enumerate(out)}
        for item in patch:
            drop, item = item.get("drop", False), {k: v for k, v in item.items() if k != "drop"}
            if drop:
                out = [b for b in out if named_key(b) != named_key(item)]
                index = {named_key(b): i for i, b in enumerate(out)}
            elif named_key(item) in index:
                out[index[named_key(item)]] = merge(out[index[named_key(item)]], item)
            else:
                out.append(copy.deepcopy(item))
                index[named_key(item)] = len(out) - 1
        return out
    return copy.deepcopy(patch)


def select_models(data: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """Keep only the config's model entries named in ``names`` (with their settings)."""
    entries = [{"name": e} if isinstance(e, str) else e for e in data.get("models") or []]
    known = [str(e.get("name")) for e in entries]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"models {unknown} are not in the config; allowed: {', '.join(known)}")
    return {**data, "models": [e for e in entries if e.get("name") in names]}


def parse_benchmark(
    data: dict[str, Any],
    source: str = "benchmark config",
    preset: str | None = None,
    overrides: list[str] | None = None,
    models: list[str] | None = None,
) -> BenchmarkConfig:
    """Validate a benchmark mapping (after its preset, overrides and model selection) into a
    :class:`BenchmarkConfig`."""
    data = dict(data)
    presets = data.pop("presets", None) or {}
    if preset is not None:
        if preset not in presets:
            raise ConfigError(
                f"{source}: unknown preset '{preset}'; allowed: "
                f"{', '.join(presets) or 'none defined'}"
            )
        data = merge(data, presets[preset] or {})
        data["preset"] = preset
    for item in overrides or []:
        data = apply_override(data, item)
    if models:
        data = select_models(data, models)
    try:
        return BenchmarkConfig(**data)
    except ValidationError as exc:
        raise ConfigError(_format_error(exc, source)) from None
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def load_benchmark(
    config: str | Path | None = None,
    preset: str | None = None,
    overrides: list[str] | None = None,
    models: list[str] | None = None,
) -> BenchmarkConfig:
    """Read a benchmark YAML (or a packaged config by name; None → ``default``)."""
    path = resolve_config_path(config)
    return parse_benchmark(read_settings(path), str(path), preset, overrides, models)


def _format_error(exc: ValidationError, source: str) -> str:
    """Like ``format_validation_error``, but unknown keys come with the allowed ones."""
    parts = []
    for err in exc.errors():
        loc = err["loc"]  # without the tags of discriminated unions (attacks.0.untargeted.budgets)
        loc = tuple(
            p for i, p in enumerate(loc) if not (i and isinstance(loc[i - 1], int) and p in ENTRIES)
        )
        key = ".".join(str(p) for p in loc)
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            allowed = _allowed_keys(err["loc"][:-1])  # the tags name the entry class
            msg = "is not a known setting" + (f"; allowed: {', '.join(allowed)}" if allowed else "")
        elif err["type"] in ("union_tag_invalid", "union_tag_not_found"):
            key = f"{key}.kind"
            given = err.get("ctx", {}).get("tag")
            msg = (
                f"'{given}' is not a measurement kind" if given else "is missing"
            ) + f"; allowed: {', '.join(ENTRIES)}"
        parts.append(f"'{key}' {msg}" if key else msg)
    return f"{source}: " + "; ".join(parts)


def _allowed_keys(loc: tuple) -> list[str]:
    model: Any = BenchmarkConfig
    for part in loc:
        if isinstance(part, int) or model is None:
            continue
        info = model.model_fields.get(part)
        # a tag of a discriminated union (``attacks.0.promotion``) names the entry class
        model = _model_in(info.annotation) if info else ENTRIES.get(str(part))
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


def _named(items: list) -> bool:
    return bool(items) and all(named_key(i) is not None for i in items)
