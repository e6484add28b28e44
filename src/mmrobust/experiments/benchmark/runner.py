"""Running a benchmark: expand the grid, compute the cells not yet done (each recorded as
soon as it finishes), then build the results store and the report; and the plan of what a
re-run has left."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mmrobust.data import Dataset, load_dataset
from mmrobust.experiments.benchmark.cells import is_done, read_marker, write_marker
from mmrobust.experiments.benchmark.config import BenchmarkConfig
from mmrobust.experiments.benchmark.executors import (
    InProcessExecutor,
    Job,
    Outcome,
    RayExecutor,
    Work,
)
from mmrobust.experiments.benchmark.grid import Cell, Grid, expand_grid
from mmrobust.experiments.benchmark.report import write_report
from mmrobust.experiments.benchmark.store import ResultsStore, build_store
from mmrobust.experiments.benchmark.tracking import MlflowTracker
from mmrobust.experiments.benchmark.work import execute_cell
from mmrobust.utils import atomic_write_text


@dataclass
class BenchmarkResult:
    out: Path
    grid: Grid
    outcome: Outcome
    store: ResultsStore
    report: dict[str, Any]
    seconds: float

    @property
    def complete(self) -> bool:
        return not self.outcome.failed and not self.outcome.stopped


def load_datasets(names: Iterable[str]) -> dict[str, Dataset]:
    return {name: load_dataset(name) for name in names}


def run_benchmark(
    config: BenchmarkConfig,
    out: str | Path,
    executor: InProcessExecutor | RayExecutor | None = None,
    max_cells: int | None = None,
    progress: bool = True,
    report: bool = True,
    datasets: Mapping[str, Dataset] | None = None,
    work: Work = execute_cell,
) -> BenchmarkResult:
    """Run (or resume) a benchmark into ``out``: cells not yet done are computed (``work`` does
    one), each recorded as soon as it finishes; then the results store and the report are
    (re)built."""
    tick = time.perf_counter()
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "benchmark.yaml", config.to_yaml())
    datasets = dict(datasets) if datasets is not None else load_datasets(config.datasets)
    grid = expand_grid(config, datasets)
    todo = [c for c in grid.ordered() if not is_done(out, c.id)]
    tracker = MlflowTracker.maybe(config.name)
    executor = executor or InProcessExecutor()

    log_lines, finished = (
        progress and not sys.stderr.isatty(),
        [0],
    )  # a log line per cell where no bar shows

    def on_done(cell: Cell, result: dict[str, Any]) -> None:
        write_marker(out, cell, result)
        if tracker is not None:
            tracker.log(cell, result)
        finished[0] += 1
        if log_lines:
            print(
                f"[{finished[0]}/{len(todo)}] {cell.title}: {result.get('seconds', 0.0):.0f} s",
                file=sys.stderr,
                flush=True,
            )

    outcome = executor.run(Job(todo, datasets, out, work, on_done, max_cells, progress))
    seconds = time.perf_counter() - tick
    # again: another driver on this folder may have written its own config meanwhile, and the
    # report reads this one with the store built from this grid
    atomic_write_text(out / "benchmark.yaml", config.to_yaml())
    _write_status(out, config, grid, outcome, len(todo), seconds, executor.name)
    store = build_store(grid, out, config)
    paths = write_report(store, out) if report else {}
    return BenchmarkResult(out, grid, outcome, store, paths, seconds)


def plan_benchmark(
    config: BenchmarkConfig, out: str | Path, datasets: Mapping[str, Dataset] | None = None
) -> pd.DataFrame:
    """What a (re-)run of the benchmark into ``out`` has left, row by row of the tables: cells
    done and to do per (model, row, kind), the measured seconds per finished cell and, from
    them, the seconds still to go (NaN where no cell of that group has finished yet).
    ``attrs["skipped"]``: the combinations the grid skips, each with its reason."""
    out = Path(out)
    datasets = dict(datasets) if datasets is not None else load_datasets(config.datasets)
    grid = expand_grid(config, datasets)
    rows = grid.rows()
    records = []
    for cell in grid.ordered():
        done = is_done(out, cell.id)
        records.append(
            {
                "model": cell.model,
                "row": rows.get(cell.id, "(clean model fine-tuned from)"),
                "kind": cell.kind,
                "done": done,
                "seconds": float(read_marker(out, cell.id).get("seconds", np.nan))
                if done
                else np.nan,
            }
        )
    frame = pd.DataFrame(records)
    plan = (
        frame.groupby(["model", "row", "kind"], sort=False)
        .agg(cells=("done", "size"), done=("done", "sum"), s_per_cell=("seconds", "mean"))
        .reset_index()
    )
    plan["todo"] = plan.cells - plan.done
    plan["s_to_go"] = plan.todo * plan.s_per_cell.where(plan.todo > 0, 0.0)
    plan = plan[["model", "row", "kind", "cells", "done", "todo", "s_per_cell", "s_to_go"]]
    plan.attrs["skipped"] = list(grid.skipped)
    return plan


def _write_status(
    out: Path,
    config: BenchmarkConfig,
    grid: Grid,
    outcome: Outcome,
    todo: int,
    seconds: float,
    backend: str,
) -> None:
    done = sum(is_done(out, c) for c in grid.cells)
    status = {
        "name": config.name,
        "preset": config.preset,
        "backend": backend,
        "cells": len(grid.cells),
        "done": done,
        "computed_now": len(outcome.computed),
        "reused": len(grid.cells) - todo,
        "stopped_early": outcome.stopped,
        "failed": {grid.cells[c].title: msg for c, msg in outcome.failed.items()},
        "skipped": grid.skipped,
        "seconds": seconds,
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    atomic_write_text(out / "status.json", json.dumps(status, indent=2))
