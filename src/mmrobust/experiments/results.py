"""Result rows: one measured number with every coordinate that says what it is.

Every path that measures (``mmrobust train|attack|analyze``, benchmark cells) writes
:class:`ResultRow` objects, and one normaliser turns them into the tidy table of a run
(``results.parquet``) or of a benchmark's store, so that any two tables can be joined.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import pandas as pd

from mmrobust.experiments.config import RunConfig
from mmrobust.models import model_class

#: metric → the short name tables use (``R@20``)
SHORT_METRIC = {"recall": "R", "ndcg": "N", "precision": "P", "map": "MAP", "hr": "HR"}
FLOAT_COLUMNS = ("budget", "value")
INT_COLUMNS = ("k", "seed")


@dataclass
class ResultRow:
    """One measured number.  ``attack_params``: the measurement's settings as sorted JSON;
    ``population``: which users (``all``, ``attack_users``, a score part for margins)."""

    dataset: str
    model: str
    feature_route: str
    defense: str
    defense_params: str
    seed: int
    run_dir: str
    split: str
    metric: str
    value: float
    k: int | None = None
    attack: str = "none"
    attack_params: str = "{}"
    budget: float = 0.0
    norm: str | None = None
    point: str | None = None
    modalities: str | None = None
    protocol: str = "full"
    population: str = "all"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


RESULT_COLUMNS = [
    "dataset",
    "model",
    "feature_route",
    "defense",
    "defense_params",
    "attack",
    "attack_params",
    "budget",
    "norm",
    "point",
    "modalities",
    "seed",
    "split",
    "protocol",
    "population",
    "metric",
    "k",
    "value",
    "run_dir",
]
COORDINATES = [c for c in RESULT_COLUMNS if c != "value"]
assert set(RESULT_COLUMNS) == {f.name for f in fields(ResultRow)}


def params_json(**params: Any) -> str:
    """Settings of a measurement as the ``attack_params`` JSON (sorted keys)."""
    return json.dumps(params, sort_keys=True, default=str)


def run_coordinates(config: RunConfig, dataset_name: str, run_dir: Path | str) -> dict[str, Any]:
    """The coordinates every result row of a run shares."""
    defense_params = json.dumps({d.name: d.params for d in config.defenses}, sort_keys=True)
    cls = model_class(config.model)
    route = cls.route_of(cls.Config(**config.model_params))
    return {
        "dataset": dataset_name,
        "model": config.model,
        "feature_route": route,
        "defense": config.defense_label(),
        "defense_params": defense_params,
        "seed": config.train.seed,
        "run_dir": str(run_dir),
    }


def metric_rows(
    metrics: dict[str, float], split: str, coords: dict[str, Any], **fields_: Any
) -> list[ResultRow]:
    """One row per ``name@K`` metric value, with the given coordinates."""
    rows = []
    for key, value in metrics.items():
        name, _, k = key.partition("@")
        rows.append(
            ResultRow(
                **coords,
                split=split,
                metric=name,
                k=int(k) if k else None,
                value=float(value),
                **fields_,
            )
        )
    return rows


def finite_or_nan(value: float) -> float:
    return float(value) if math.isfinite(value) else math.nan


def normalise(frame: pd.DataFrame, columns: list[str] = RESULT_COLUMNS) -> pd.DataFrame:
    """Column order and dtypes of a results table: floats, nullable integers, strings."""
    frame = frame.reindex(columns=columns)
    for col in FLOAT_COLUMNS:
        frame[col] = frame[col].astype(float)
    for col in INT_COLUMNS:
        frame[col] = frame[col].astype("Int64")
    for col in set(columns) - set(FLOAT_COLUMNS) - set(INT_COLUMNS):
        frame[col] = frame[col].astype(object).where(frame[col].notna(), None).astype("string")
    return frame.reset_index(drop=True)


def rows_frame(
    rows: list[ResultRow | dict[str, Any]], columns: list[str] = RESULT_COLUMNS
) -> pd.DataFrame:
    records = [r.as_dict() if isinstance(r, ResultRow) else r for r in rows]
    return normalise(pd.DataFrame(records, columns=columns), columns)
