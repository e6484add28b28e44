"""Grid search of model settings on the validation split (as MMRec's ``hyper_parameters``).

Every combination is trained with the same seed; the winner is the one with the best
validation metric.  The test split is evaluated for every run (it is reported, never used
to choose).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from mmrobust.data import Dataset, load_dataset
from mmrobust.experiments.config import ConfigError, RunConfig
from mmrobust.experiments.overrides import parse_override
from mmrobust.experiments.runs import train_run
from mmrobust.utils import atomic_path


@dataclass
class TuneResult:
    table: pd.DataFrame
    best: RunConfig
    best_settings: dict[str, Any]
    best_run_dir: Path


def parse_grid(items: list[str]) -> dict[str, list[Any]]:
    """``["reg_weight=1e-4,1e-2", "train.lr=[0.001, 0.005]"]`` → {"reg_weight": [...], ...}
    (the one ``key=value`` syntax of :mod:`~mmrobust.experiments.overrides`; a single value is
    a grid of one)."""
    grid: dict[str, list[Any]] = {}
    for item in items:
        path, value = parse_override(item, "reg_weight=1e-4,1e-2")
        values = value if isinstance(value, list) else [value]
        if not values or any(v is None for v in values):
            raise ConfigError(f"grid entry '{item}' has no values")
        grid[".".join(path)] = values
    return grid


def _with_settings(base: RunConfig, settings: dict[str, Any]) -> RunConfig:
    """``base`` with model settings (bare keys) and training settings (``train.`` keys) replaced."""
    data = base.model_dump()
    for key, value in settings.items():
        if key.startswith("train."):
            data["train"][key.removeprefix("train.")] = value
        else:
            data["model_params"][key.removeprefix("model.")] = value
    return RunConfig(**data)


def tune(
    base: RunConfig, grid: dict[str, list[Any]], root: str | Path, dataset: Dataset | None = None
) -> TuneResult:
    """Train every combination of ``grid`` on top of ``base``; pick by validation.

    Keys are model settings (``reg_weight``) or training settings (``train.lr``)."""
    dataset = dataset or load_dataset(base.dataset)
    root = Path(root)
    rows, configs, settings = [], [], []
    for values in itertools.product(*grid.values()):
        params = dict(zip(grid, values, strict=True))
        config = _with_settings(base, params)
        name = "-".join(f"{k}={v}" for k, v in params.items()) or "default"
        run_dir, result = train_run(config, root / name, dataset=dataset)
        metric = config.train.valid_metric
        rows.append(
            {
                **params,
                "best_epoch": result.best_epoch,
                f"valid_{metric}": result.valid[metric],
                "test_recall@20": result.test.get("recall@20"),
                "test_ndcg@20": result.test.get("ndcg@20"),
                "run_dir": str(run_dir),
            }
        )
        configs.append(config)
        settings.append(params)
    table = pd.DataFrame(rows)
    best = int(table[f"valid_{base.train.valid_metric}"].idxmax())
    with atomic_path(root / "tune.csv") as tmp:
        table.to_csv(tmp, index=False)
    return TuneResult(table, configs[best], settings[best], Path(rows[best]["run_dir"]))
