"""Experiments layer: typed configs, runs and their directories."""

from mmrobust.experiments.config import (
    ConfigError,
    RunConfig,
    apply_overrides,
    load_run_config,
    parse_run_config,
)
from mmrobust.experiments.runs import RESULT_COLUMNS, Run, evaluate_run, load_run, train_run
from mmrobust.experiments.tune import TuneResult, parse_grid, tune

__all__ = [
    "RESULT_COLUMNS",
    "ConfigError",
    "Run",
    "RunConfig",
    "TuneResult",
    "apply_overrides",
    "evaluate_run",
    "load_run",
    "load_run_config",
    "parse_grid",
    "parse_run_config",
    "train_run",
    "tune",
]
