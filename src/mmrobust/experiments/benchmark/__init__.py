"""The one-command benchmark, its files in the order the data flows:

``config`` (typed schema) → ``loading`` (YAML, presets, overrides) → ``grid`` (cells and
table members; combinations a component cannot serve are skipped with the reason) →
``cells`` (done-markers, claims) → ``work`` (train or measure one cell) → ``executors``
(in-process, Ray) → ``tracking`` (MLflow) → ``store`` (the tidy results) → ``tables``
(paper layouts) → ``figures`` and ``report`` → ``runner`` (run and plan a benchmark).
"""

from mmrobust.experiments.benchmark.config import BenchmarkConfig, TableConfig, VariantConfig
from mmrobust.experiments.benchmark.executors import InProcessExecutor, RayExecutor, make_executor
from mmrobust.experiments.benchmark.grid import Cell, Grid, expand_grid
from mmrobust.experiments.benchmark.loading import load_benchmark, packaged_configs, parse_benchmark
from mmrobust.experiments.benchmark.report import write_report
from mmrobust.experiments.benchmark.runner import BenchmarkResult, plan_benchmark, run_benchmark
from mmrobust.experiments.benchmark.store import ResultsStore
from mmrobust.experiments.benchmark.tables import PaperTable, build_table, build_tables

__all__ = [
    "BenchmarkConfig",
    "BenchmarkResult",
    "Cell",
    "Grid",
    "InProcessExecutor",
    "PaperTable",
    "RayExecutor",
    "ResultsStore",
    "TableConfig",
    "VariantConfig",
    "build_table",
    "build_tables",
    "expand_grid",
    "load_benchmark",
    "make_executor",
    "packaged_configs",
    "parse_benchmark",
    "plan_benchmark",
    "run_benchmark",
    "write_report",
]
