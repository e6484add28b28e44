"""Experiments layer: typed run configs, runs and their directories, the measurement
registry (every number measured on a run), grid search, and the one-command benchmark
(:mod:`mmrobust.experiments.benchmark`)."""

from mmrobust.experiments.config import (
    ConfigError,
    RunConfig,
    load_run_config,
    parse_run_config,
)
from mmrobust.experiments.measurements import (
    MEASUREMENTS,
    Measurement,
    evaluate_run,
    make_measurement,
    record,
)
from mmrobust.experiments.overrides import apply_overrides
from mmrobust.experiments.results import RESULT_COLUMNS, ResultRow
from mmrobust.experiments.runs import Run, load_run, train_run
from mmrobust.experiments.tune import TuneResult, parse_grid, tune

__all__ = [
    "MEASUREMENTS",
    "RESULT_COLUMNS",
    "ConfigError",
    "Measurement",
    "ResultRow",
    "Run",
    "RunConfig",
    "TuneResult",
    "apply_overrides",
    "evaluate_run",
    "load_run",
    "load_run_config",
    "make_measurement",
    "parse_grid",
    "parse_run_config",
    "record",
    "train_run",
    "tune",
]
