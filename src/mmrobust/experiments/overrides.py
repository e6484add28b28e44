"""The one ``key=value`` syntax of the command line (``--set``, ``--grid``, ``--where``).

``a.b.c=value``: a dotted path and a YAML value (``0.01``, ``true``, ``[0, 1]``, ``{a: 1}``);
an unquoted value with top-level commas is a list (``seeds=0,1`` = ``seeds=[0, 1]``); an
empty value is null.  A path segment may name an entry of a list of named mappings
(``attacks.untargeted.budgets=[0.05]`` reaches the entry whose ``name`` or ``label`` is
``untargeted``).

Examples:
    >>> parse_override("train.lr=0.01")
    (['train', 'lr'], 0.01)
    >>> parse_override("seeds=0,1")
    (['seeds'], [0, 1])
    >>> apply_override({"attacks": [{"name": "u", "budgets": [0.1]}]}, "attacks.u.budgets=[0.05]")
    {'attacks': [{'name': 'u', 'budgets': [0.05]}]}
"""

from __future__ import annotations

import copy
from typing import Any

import yaml

from mmrobust.defenses import defense_class
from mmrobust.experiments.config import ConfigError, RunConfig
from mmrobust.training import TrainConfig


def parse_value(raw: str, where: str = "value") -> Any:
    """A YAML value; unquoted top-level commas make a list."""
    text = raw.strip()
    if text == "":
        return None
    if "," in text and text[0] not in "[{\"'":
        text = f"[{text}]"
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        problem = str(exc).splitlines()[0]
        raise ConfigError(f"{where}: '{raw}' is not a valid value ({problem})") from None


def parse_override(item: str, example: str = "train.lr=0.01") -> tuple[list[str], Any]:
    """``a.b=value`` → (["a", "b"], value)."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip() or any(not part for part in key.split(".")):
        raise ConfigError(f"'{item}' must look like key=value (e.g. {example})")
    return key.strip().split("."), parse_value(raw, f"'{key.strip()}'")


def named_key(entry: Any) -> str | None:
    """The name of an entry of a list of named mappings (``label`` or ``name``)."""
    if isinstance(entry, dict) and ("label" in entry or "name" in entry):
        return str(entry.get("label", entry.get("name")))
    return None


def apply_override(data: dict[str, Any], item: str) -> dict[str, Any]:
    """A copy of ``data`` with one ``a.b.c=value`` override applied."""
    path, value = parse_override(item, "seeds=[0] or finetune.epochs=5")
    key = ".".join(path)
    data = copy.deepcopy(data)
    node: Any = data
    for depth, part in enumerate(path):
        last = depth == len(path) - 1
        if isinstance(node, list):
            match = [entry for entry in node if named_key(entry) == part]
            if not match:
                names = [n for n in map(named_key, node) if n is not None]
                raise ConfigError(
                    f"override '{key}': no entry named '{part}'; allowed: {', '.join(names)}"
                )
            if last:
                raise ConfigError(f"override '{key}' must name a setting of the entry '{part}'")
            node = match[0]
        elif not isinstance(node, dict):
            parent = ".".join(path[:depth])
            raise ConfigError(
                f"override '{key}': '{parent}' is a single value ({node!r}), not a group of "
                "settings"
            )
        elif last:
            node[part] = value
        else:
            node = node.setdefault(part, {})
    return data


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key=value`` overrides: ``train.lr=0.01``, ``model_params.reg_weight=0.1``,
    ``defense.amr.eps=0.1`` (the defense must be listed), or a bare key, which goes to
    ``train`` if it is a training setting and to ``model_params`` otherwise."""
    data = {
        **data,
        "train": dict(data.get("train", {})),
        "model_params": dict(data.get("model_params", {})),
        "defenses": [dict(d) for d in data.get("defenses", [])],
    }
    for item in overrides:
        path, value = parse_override(item)
        key = ".".join(path)
        if key.startswith("defense."):
            _override_defense(data["defenses"], key, value)
            continue
        section, _, name = key.rpartition(".")
        section = {"model": "model_params"}.get(section, section)
        if not section:
            section = (
                "train"
                if name in TrainConfig.model_fields
                else ("" if name in RunConfig.model_fields else "model_params")
            )
        if section:
            if section not in ("train", "model_params"):
                raise ConfigError(
                    f"override '{key}': unknown section '{section}' (use train. or model.)"
                )
            data[section][name] = value
        else:
            data[name] = value
    return data


def _override_defense(defenses: list[dict[str, Any]], key: str, value: Any) -> None:
    parts = key.split(".")
    if len(parts) != 3:
        raise ConfigError(f"override '{key}' must look like defense.<name>.<setting>=value")
    name = defense_class(parts[1]).name
    for spec in defenses:
        if defense_class(spec["name"]).name == name:
            spec.setdefault("params", {})[parts[2]] = value
            return
    raise ConfigError(
        f"override '{key}': defense '{name}' is not in the run (add --defense {name})"
    )
