"""Executors run a benchmark's cells, given the work of a cell as a function.

* :class:`InProcessExecutor` (default) runs the cells one after another in this process,
  datasets loaded once and shared; it claims each cell first (``cells.claim_cell``), so
  several drivers can share one results folder.
* :class:`RayExecutor` runs every cell as a Ray task declaring its CPU/GPU needs; each
  dataset is put in the object store once (``ray.put``) and passed by reference.  Run
  directories are written by the tasks, so ``--out`` must be on storage every node sees;
  markers and the store are written by the driver, which submits a cell once the cells it
  needs are done.

``work(cell, dataset, out, threads)`` does one cell and returns its result
(:func:`~mmrobust.experiments.benchmark.work.execute_cell` in a benchmark; tests pass their
own); ``on_done(cell, result)`` records it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from mmrobust.data import Dataset
from mmrobust.errors import UserError
from mmrobust.experiments.benchmark.cells import (
    claim_cell,
    claimed_elsewhere,
    is_done,
    record_failure,
    release_claim,
)
from mmrobust.experiments.benchmark.grid import Cell

OnDone = Callable[[Cell, dict[str, Any]], None]
Work = Callable[[Cell, Dataset, Path, int | None], dict[str, Any]]


@dataclass
class Job:
    """What an executor is given: the cells to compute (dependencies first), the loaded
    datasets by name, the results folder, the work of one cell, what to do with a finished
    cell's result, an optional cap on the cells computed, and whether to show progress."""

    cells: list[Cell]
    datasets: Mapping[str, Dataset]
    out: Path
    work: Work
    on_done: OnDone
    max_cells: int | None = None
    progress: bool = True


@dataclass
class Outcome:
    """What an executor did: cells computed, cells failed (id → message), whether it stopped
    early."""

    computed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    stopped: bool = False


class InProcessExecutor:
    """Runs cells one after another in this process (dependencies first).

    Several drivers may share one results folder (one per model, or one per machine on shared
    storage): a driver claims a cell before computing it (``cells/<id>.claim``, created
    exclusively), leaves cells claimed by another live driver to it, and at the end waits for
    them, so that every driver finishes with the whole grid's store and report."""

    name = "local"

    def __init__(self, poll_seconds: float = 10.0):
        self.poll_seconds = poll_seconds

    def run(self, job: Job) -> Outcome:
        cells, datasets, out = job.cells, job.datasets, job.out
        work, on_done, max_cells, progress = job.work, job.on_done, job.max_cells, job.progress
        outcome, waiting = Outcome(), list(cells)
        bar = tqdm(
            total=len(cells),
            desc="benchmark cells",
            unit="cell",
            disable=None if progress else True,
            dynamic_ncols=True,
        )
        while waiting:
            if max_cells is not None and len(outcome.computed) >= max_cells:
                outcome.stopped = True
                break
            cell = self._next(waiting, out, outcome, bar)
            if cell is None:
                if waiting:  # what is left waits on cells other drivers are computing
                    time.sleep(self.poll_seconds)
                continue
            bar.set_postfix_str(cell.title[-60:])
            try:
                result = work(cell, datasets[cell.dataset], out, None)
            except Exception as exc:  # one failing cell must not stop the other cells
                outcome.failed[cell.id] = record_failure(out, cell, exc)
            else:
                on_done(cell, result)
                outcome.computed.append(cell.id)
            finally:
                release_claim(out, cell.id)
            bar.update(1)
        bar.close()
        return outcome

    @staticmethod
    def _next(waiting: list[Cell], out: Path, outcome: Outcome, bar: Any) -> Cell | None:
        """The first cell of ``waiting`` this driver can claim (removed from it), settling on the
        way the cells finished or failed elsewhere; None when the rest waits on other drivers."""
        mine = {c.id for c in waiting}
        for cell in list(waiting):
            if is_done(out, cell.id):  # finished meanwhile by another driver on the same folder
                waiting.remove(cell)
                bar.update(1)
                continue
            blocked = [d for d in cell.needs if not is_done(out, d)]
            if any(
                d in outcome.failed or (d not in mine and not claimed_elsewhere(out, d))
                for d in blocked
            ):
                waiting.remove(cell)
                outcome.failed[cell.id] = f"skipped: a cell it needs failed ({', '.join(blocked)})"
                bar.update(1)
            elif not blocked and claim_cell(out, cell.id):
                waiting.remove(cell)
                return cell
        return None


class RayExecutor:
    """Runs every cell as a Ray task (``num_cpus``/``num_gpus`` declared per task); datasets go
    to the object store once.  ``address`` None starts (or joins) a local Ray instance.

    The driver submits a cell only when the cells it needs are done, the earliest ready cell
    of the grid's order first, and keeps about as many tasks in flight as the cluster can
    run at once: Ray's own queue would otherwise run every fine-tune before any measurement
    of a finished one, and an interrupted run would hold runs but few numbers."""

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        num_cpus: float = 1.0,
        num_gpus: float = 0.0,
        init_kwargs: dict[str, Any] | None = None,
    ):
        self.address, self.num_cpus, self.num_gpus = address, num_cpus, num_gpus
        self.init_kwargs = init_kwargs or {}

    def _ray(self):
        try:
            import ray
        except ImportError:
            raise UserError("the Ray backend needs ray: pip install 'mmrobust[ray]'") from None
        if not ray.is_initialized():
            ray.init(
                address=self.address,
                include_dashboard=False,
                log_to_driver=False,
                **self.init_kwargs,
            )
        return ray

    def _slots(self, ray) -> int:
        """Cells the cluster can run at once with the declared resources (at least one)."""
        total = ray.cluster_resources()
        fits = [total.get("CPU", 1.0) / self.num_cpus] + (
            [total.get("GPU", 0.0) / self.num_gpus] if self.num_gpus else []
        )
        return max(1, int(min(fits)))

    def run(self, job: Job) -> Outcome:
        cells, datasets, out = job.cells, job.datasets, job.out
        work, on_done, max_cells, progress = job.work, job.on_done, job.max_cells, job.progress
        ray = self._ray()
        outcome = Outcome()
        if max_cells is not None:
            outcome.stopped = len(cells) > max_cells
            cells = cells[:max_cells]
        task = ray.remote(work).options(
            num_cpus=self.num_cpus, num_gpus=self.num_gpus, max_retries=0
        )
        shipped = {key: ray.put(datasets[key]) for key in sorted({c.dataset for c in cells})}
        waiting, running, slots = list(cells), {}, self._slots(ray)
        bar = tqdm(
            total=len(cells),
            desc="benchmark cells (ray)",
            unit="cell",
            disable=None if progress else True,
        )
        while waiting or running:
            for cell in list(waiting):  # in the grid's order: dependencies first
                if len(running) >= slots:
                    break
                if any(d in outcome.failed for d in cell.needs):
                    waiting.remove(cell)
                    outcome.failed[cell.id] = record_failure(
                        out, cell, RuntimeError("skipped: a cell it needs failed")
                    )
                    bar.update(1)
                elif all(is_done(out, d) for d in cell.needs):
                    waiting.remove(cell)
                    ref = task.remote(cell, shipped[cell.dataset], out, max(1, int(self.num_cpus)))
                    running[ref] = cell
            if not running:  # nothing runs and nothing is ready: what waits can never start
                for cell in waiting:
                    outcome.failed[cell.id] = record_failure(
                        out, cell, RuntimeError("skipped: a cell it needs never ran")
                    )
                break
            (ref,), _ = ray.wait(list(running), num_returns=1)
            cell = running.pop(ref)
            try:
                result = ray.get(ref)
            except Exception as exc:  # a failed task is recorded, the rest go on
                outcome.failed[cell.id] = record_failure(out, cell, exc)
            else:
                on_done(cell, result)
                outcome.computed.append(cell.id)
            bar.update(1)
            bar.set_postfix_str(cell.title[-60:])
        bar.close()
        return outcome


def make_executor(
    backend: str = "local",
    address: str | None = None,
    num_cpus: float = 1.0,
    num_gpus: float = 0.0,
    **ray_init: Any,
) -> InProcessExecutor | RayExecutor:
    if backend == "local":
        return InProcessExecutor()
    if backend == "ray":
        return RayExecutor(address, num_cpus, num_gpus, ray_init)
    raise UserError(f"unknown backend '{backend}'; allowed: local, ray")
