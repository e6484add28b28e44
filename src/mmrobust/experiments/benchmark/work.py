"""The work of one cell: train (or fine-tune) a run, or take one measurement of a run.

:func:`execute_cell` is what executors are given to run; it returns the cell's result:
``rows`` (result rows as plain dicts), the training history for training cells, and the
seconds it took.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from mmrobust.data import Dataset
from mmrobust.experiments.benchmark.grid import Cell
from mmrobust.experiments.measurements import make_measurement
from mmrobust.experiments.runs import fit_rows, load_run, train_run
from mmrobust.utils import tune_allocator


def execute_cell(
    cell: Cell, dataset: Dataset, out: str | Path, threads: int | None = None
) -> dict[str, Any]:
    """Do one cell's work in the results folder ``out`` and return its result."""
    tune_allocator()
    if threads:
        torch.set_num_threads(threads)
    out = Path(out)
    tick = time.perf_counter()
    result = (
        _train(cell, dataset, out)
        if cell.kind in ("train", "finetune")
        else _measure(cell, dataset, out)
    )
    result["seconds"] = time.perf_counter() - tick
    return result


def _train(cell: Cell, dataset: Dataset, out: Path) -> dict[str, Any]:
    config = cell.config
    if cell.init_dir is not None:
        config = config.model_copy(update={"init_from": str(out / cell.init_dir)})
    run_dir = out / cell.run_dir
    _, result = train_run(config, run_dir, resume=True, dataset=dataset)
    rows = fit_rows(config, dataset.name, run_dir, result)
    return {
        "rows": [r.as_dict() for r in rows],
        "history": result.history,
        "notes": result.notes,
        "best_epoch": result.best_epoch,
    }


def _measure(cell: Cell, dataset: Dataset, out: Path) -> dict[str, Any]:
    run = load_run(out / cell.run_dir, device=None, dataset=dataset)
    _, rows = make_measurement(cell.spec).measure(run)
    return {"rows": [r.as_dict() for r in rows]}
