"""Experiments layer: typed configs, runs and their directories, the one-command benchmark
(grid, executors, results store, report)."""

from mmrobust.experiments.benchmark import BenchmarkConfig, load_benchmark
from mmrobust.experiments.config import (
    ConfigError,
    RunConfig,
    apply_overrides,
    load_run_config,
    parse_run_config,
)
from mmrobust.experiments.executors import RayExecutor, run_benchmark
from mmrobust.experiments.runs import RESULT_COLUMNS, Run, evaluate_run, load_run, train_run
from mmrobust.experiments.store import ResultsStore
from mmrobust.experiments.tune import TuneResult, parse_grid, tune

__all__ = [
    "RESULT_COLUMNS",
    "BenchmarkConfig",
    "ConfigError",
    "RayExecutor",
    "ResultsStore",
    "Run",
    "RunConfig",
    "TuneResult",
    "apply_overrides",
    "evaluate_run",
    "load_benchmark",
    "load_run",
    "load_run_config",
    "parse_grid",
    "parse_run_config",
    "run_benchmark",
    "train_run",
    "tune",
]
