"""Running a benchmark's cells: the work of each cell, done-markers, and two executors.

A cell is *done* when ``<out>/cells/<id>.json`` exists: it holds the cell's result rows
(and, for training cells, the per-epoch history) and is written atomically by the driver
only after the cell succeeded.  A re-run skips done cells, so an interrupted benchmark
resumes; an interrupted training cell also resumes from its run's checkpoint.

* :class:`InProcessExecutor` (default) runs the cells one after another in this process,
  datasets loaded once and shared.
* :class:`RayExecutor` runs every cell as a Ray task declaring its CPU/GPU needs; each
  dataset is put in the object store once (``ray.put``) and passed by reference.  Run
  directories are written by the tasks, so ``--out`` must be on storage every node sees;
  markers and the store are written by the driver, which submits a cell once the cells it
  needs are done.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from mmrobust.attacks import (
    Budget,
    PromotionAttack,
    PromotionConfig,
    make_attack,
    select_targets,
    split_users,
)
from mmrobust.data import Dataset, load_dataset
from mmrobust.evaluation import evaluate_sampled
from mmrobust.evaluation.modality import modality_analysis
from mmrobust.evaluation.promotion import PROMOTION_KS, promotion_report, target_hits
from mmrobust.evaluation.robustness import masking_check, untargeted_sweep
from mmrobust.experiments.benchmark import BenchmarkConfig, Cell, Grid, expand_grid
from mmrobust.experiments.config import RunConfig, load_run_config
from mmrobust.experiments.runs import Run, run_coordinates, tidy_rows, train_run
from mmrobust.models import build_model
from mmrobust.training import BEST, load_weights
from mmrobust.utils import atomic_write_text, resolve_device, seed_everything

OnDone = Callable[[Cell, dict[str, Any]], None]


# ------------------------------------------------------------- the cells' work
def execute_cell(cell: Cell, dataset: Dataset, out: str | Path, threads: int | None = None) -> dict[str, Any]:
    """Do one cell's work and return its result (rows, plus history for training cells)."""
    if threads:
        torch.set_num_threads(threads)
    out = Path(out)
    tick = time.perf_counter()
    result = _train(cell, dataset, out) if cell.kind in ("train", "finetune") else _measure(cell, dataset, out)
    result["seconds"] = time.perf_counter() - tick
    return result


def _train(cell: Cell, dataset: Dataset, out: Path) -> dict[str, Any]:
    data = dict(cell.payload["config"])
    if cell.payload.get("init_dir"):
        data["init_from"] = str(out / cell.payload["init_dir"])
    config = RunConfig(**data)
    run_dir = out / cell.run_dir
    _, result = train_run(config, run_dir, resume=True, dataset=dataset)
    coords = run_coordinates(config, dataset.name, run_dir)
    rows = tidy_rows(result.valid, "valid", coords) + tidy_rows(result.test, "test", coords)
    return {"rows": rows, "history": result.history, "notes": result.notes, "best_epoch": result.best_epoch}


def bind_run(run_dir: Path, dataset: Dataset, device: str | None = None) -> Run:
    """A finished run's model with its best weights, on an already loaded dataset (device:
    the run's own unless given)."""
    config = load_run_config(run_dir / "config.yaml")
    model = build_model(config.model, dataset, config.model_params)
    dev = resolve_device(device or config.train.device)
    load_weights(model, run_dir / BEST, dev)
    model.eval()
    return Run(run_dir, config, dataset, model.to(dev))


def _measure(cell: Cell, dataset: Dataset, out: Path) -> dict[str, Any]:
    spec = cell.payload
    run = bind_run(out / cell.run_dir, dataset)
    seed_everything(spec["seed"])
    rows = MEASURES[spec["kind"]](run, spec)
    return {"rows": rows}


def _row(run: Run, spec: dict[str, Any], **values: Any) -> dict[str, Any]:
    base = {**run_coordinates(run.config, run.dataset.name, run.path), "norm": spec["norm"], "point": spec["point"],
            "modalities": "+".join(run.model.modalities), "split": "test", "protocol": "full", "population": "all"}
    return {**base, **values}


def _params(spec: dict[str, Any], *keys: str, **extra: Any) -> str:
    return json.dumps({**{k: spec[k] for k in keys}, **extra, "seed": spec["seed"]}, sort_keys=True, default=str)


def measure_untargeted(run: Run, spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Attacked full-ranking test metrics (modality-balancing paper §3.1, Table 2/3, Figure 5)."""
    sweep = untargeted_sweep(run.model, run.dataset, [spec["attack"]], [spec["budget"]], None, spec["norm"],
                             spec["relative"], spec["point"], spec["pgd_steps"], spec["restarts"], spec["seed"],
                             spec["ks"])
    keys = ("relative",) + (("pgd_steps", "restarts") if spec["attack"] == "pgd" else ())
    return [_row(run, spec, attack=r.attack, attack_params=_params(spec, *keys), budget=r.budget, metric=r.metric,
                 k=int(r.k), value=float(r.attacked)) for r in sweep.itertuples()]


def measure_adaptive(run: Run, spec: dict[str, Any]) -> list[dict[str, Any]]:
    """FGSM vs PGD-steps×restarts and the gradient-masking flag (1 = PGD drop > factor × FGSM drop)."""
    sweep = untargeted_sweep(run.model, run.dataset, ["fgsm", "pgd"], [spec["budget"]], None, spec["norm"],
                             spec["relative"], spec["point"], spec["pgd_steps"], spec["restarts"], spec["seed"],
                             spec["ks"])
    params = _params(spec, "pgd_steps", "restarts", "factor", "relative")
    rows = [_row(run, spec, attack=r.attack, attack_params=params, budget=r.budget, metric=r.metric, k=int(r.k),
                 value=float(r.attacked)) for r in sweep.itertuples()]
    check = masking_check(sweep, spec["factor"])
    rows += [_row(run, spec, attack="adaptive-check", attack_params=params, budget=r.budget,
                  metric=f"{r.metric}_masking_flag", k=int(r.k), value=float(r.flagged)) for r in check.itertuples()]
    return rows


def measure_promotion(run: Run, spec: dict[str, Any]) -> list[dict[str, Any]]:
    """HR@K of the targets before/after one promotion attack, attack vs held-out users, RI
    (Band Together §5, Table 2 / Figure 5)."""
    config = PromotionConfig(**{"seed": spec["seed"], **spec["promotion"], "beta": spec["beta"]})
    model, ds = run.model, run.dataset
    targets, note = select_targets(ds, config.n_interactions, config.n_targets, config.selection, config.seed)
    users = dict(zip(("attack_users", "held_out_users"), split_users(ds, config.attack_share, config.seed), strict=True))
    features = ds.feature_tensors(model.device, model.modalities)
    attack = make_attack(spec["attack"], budget=Budget(eps=spec["budget"], norm=spec["norm"], relative=spec["relative"]),
                         point=spec["point"], **({"step_scale": 1.25, "steps": spec["pgd_steps"]} if spec["attack"] == "pgd" else {}))
    pert = PromotionAttack(attack, config).perturb(model, ds, targets, users["attack_users"], features)
    params = json.dumps({**config.model_dump(), "targets": len(targets), "target_note": note, "relative": spec["relative"],
                         **({"pgd_steps": spec["pgd_steps"]} if spec["attack"] == "pgd" else {})}, sort_keys=True)
    rows = []
    for population, group in users.items():
        before = _before_hits(run, targets, group, features)
        after = target_hits(model, ds, targets, group, pert, features, PROMOTION_KS)
        for k, report in promotion_report(before, after).items():
            rows += [_row(run, spec, attack=f"promotion-{spec['attack']}", attack_params=params, budget=spec["budget"],
                          split="train-masked", population=population, metric=metric, k=int(k), value=float(value))
                     for metric, value in report.items()]
    return rows


_BEFORE: dict[tuple, dict[int, np.ndarray]] = {}


def _before_hits(run: Run, targets: np.ndarray, users: np.ndarray, features: Mapping[str, torch.Tensor]
                 ) -> dict[int, np.ndarray]:
    """Un-attacked HR@K of the targets, memoised per (run weights, targets, users): every
    promotion cell of a run shares them, and on TikTok they cost as much as the attack."""
    key = (str(run.path), (run.path / BEST).stat().st_mtime_ns, targets.tobytes(), users.tobytes())
    if key not in _BEFORE:
        if len(_BEFORE) >= 16:
            _BEFORE.clear()
        _BEFORE[key] = target_hits(run.model, run.dataset, targets, users, None, features, PROMOTION_KS)
    return _BEFORE[key]


def measure_modality(run: Run, spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Mean per-modality score margins clean vs FGSM-L2 (modality-balancing paper §3.2, Fig. 1a/6a)."""
    result = modality_analysis(run.model, run.dataset, budget=spec["budget"], seed=spec["seed"])
    params = _params(spec, "relative", analysis="modality-margin", sensitive=result.sensitive)
    return [_row(run, spec, attack="fgsm", attack_params=params, budget=spec["budget"], protocol="margin",
                 population=r.part, metric=f"margin_{phase}", k=None, value=float(getattr(r, phase)))
            for r in result.margins.itertuples() for phase in ("clean", "attacked")]


def measure_sampled(run: Run, spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Sampled protocol (AMR paper §4.1: each test pair vs n sampled non-interacted items),
    clean or under an FGSM/PGD perturbation (AMR paper Table 3).  ``n_negatives`` is capped
    by the fewest non-interacted items a test user has; the count used is recorded."""
    model, ds = run.model, run.dataset
    interacted = (ds.train + ds.valid + ds.test).tocsr()
    users = np.unique(ds.test.tocoo().row)
    n_neg = int(min(spec["n_negatives"], (ds.n_items - interacted.getnnz(axis=1))[users].min()))
    features = ds.feature_tensors(model.device, model.modalities)
    feats, delta = features, None
    if spec["attack"] != "none":
        attack = make_attack(spec["attack"], budget=Budget(eps=spec["budget"], norm=spec["norm"], relative=spec["relative"]),
                             point=spec["point"], **({"steps": spec["pgd_steps"]} if spec["attack"] == "pgd" else {}))
        pert = attack.perturb(model, ds, features, seed=spec["seed"])
        with torch.no_grad():
            feats, delta = pert.inputs(model, features)
    metrics = evaluate_sampled(model, ds, "test", feats, spec["ks"], n_neg, spec["seed"], embedding_delta=delta)
    params = _params(spec, "relative", n_negatives=n_neg, requested_negatives=spec["n_negatives"])
    return [_row(run, spec, attack=spec["attack"], attack_params=params, budget=spec["budget"], protocol="sampled",
                 metric=key.partition("@")[0], k=int(key.partition("@")[2]), value=float(value))
            for key, value in metrics.items()]


MEASURES: dict[str, Callable[[Run, dict[str, Any]], list[dict[str, Any]]]] = {
    "untargeted": measure_untargeted, "adaptive": measure_adaptive, "promotion": measure_promotion,
    "modality": measure_modality, "sampled": measure_sampled}


# ------------------------------------------------------------------- markers
def marker_path(out: Path, cid: str) -> Path:
    return out / "cells" / f"{cid}.json"


def is_done(out: Path, cid: str) -> bool:
    return marker_path(out, cid).exists()


def write_marker(out: Path, cell: Cell, result: dict[str, Any]) -> None:
    """Record a finished cell (atomically); run directories are stored relative to ``out``."""
    for row in result.get("rows", []):
        row["run_dir"] = cell.run_dir
    record = {"id": cell.id, "kind": cell.kind, "title": cell.title, "dataset": cell.dataset, "run_dir": cell.run_dir,
              **result}
    atomic_write_text(marker_path(out, cell.id), json.dumps(record, default=_jsonable))
    error = out / "cells" / f"{cell.id}.error.txt"
    if error.exists():
        error.unlink()


def _jsonable(value: Any) -> Any:
    if isinstance(value, (np.generic,)):
        return value.item()
    return str(value)


def read_marker(out: Path, cid: str) -> dict[str, Any]:
    return json.loads(marker_path(out, cid).read_text(encoding="utf-8"))


# ----------------------------------------------------------------- executors
@dataclass
class Outcome:
    """What an executor did: cells computed, cells failed (id → message), whether it stopped early."""

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

    def run(self, cells: list[Cell], datasets: Mapping[str, Dataset], out: Path, on_done: OnDone,
            max_cells: int | None = None, progress: bool = True) -> Outcome:
        outcome, waiting = Outcome(), list(cells)
        bar = tqdm(total=len(cells), desc="benchmark cells", unit="cell", disable=None if progress else True,
                   dynamic_ncols=True)
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
                result = execute_cell(cell, datasets[cell.dataset], out)
            except Exception as exc:  # one failing cell must not stop the other cells
                outcome.failed[cell.id] = _failure(out, cell, exc)
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
            if any(d in outcome.failed or (d not in mine and not claimed_elsewhere(out, d)) for d in blocked):
                waiting.remove(cell)
                outcome.failed[cell.id] = f"skipped: a cell it needs failed ({', '.join(blocked)})"
                bar.update(1)
            elif not blocked and claim_cell(out, cell.id):
                waiting.remove(cell)
                return cell
        return None


def _claim_path(out: Path, cid: str) -> Path:
    return out / "cells" / f"{cid}.claim"


def claim_cell(out: Path, cid: str) -> bool:
    """Claim a cell for this process (True), unless another live driver holds it.  A claim left
    by a dead process on this host is stale and taken over."""
    path = _claim_path(out, cid)
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if claimed_elsewhere(out, cid):
                return False
            path.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as handle:
            json.dump({"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}, handle)
        return True
    return False


def claimed_elsewhere(out: Path, cid: str) -> bool:
    """Whether another driver holds the cell's claim: a live process on this host, or any
    process on another host (which this host cannot check)."""
    try:
        holder = json.loads(_claim_path(out, cid).read_text(encoding="utf-8") or "{}")
    except FileNotFoundError:
        return False
    except json.JSONDecodeError:  # being written right now
        return True
    if holder.get("host") != socket.gethostname():
        return True
    pid = int(holder.get("pid", -1))
    return pid != os.getpid() and _alive(pid)


def _alive(pid: int) -> bool:
    if pid <= 0:  # os.kill would address a process group
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def release_claim(out: Path, cid: str) -> None:
    _claim_path(out, cid).unlink(missing_ok=True)


def _failure(out: Path, cell: Cell, exc: BaseException) -> str:
    message = f"{type(exc).__name__}: {exc}"
    atomic_write_text(out / "cells" / f"{cell.id}.error.txt", f"{cell.title}\n{message}\n\n{traceback.format_exc()}")
    return message


def _ray_cell(cell: Cell, dataset: Dataset, out: str, threads: int) -> dict[str, Any]:
    """The Ray task (submitted only once the cells it needs are done)."""
    return execute_cell(cell, dataset, out, threads)


class RayExecutor:
    """Runs every cell as a Ray task (``num_cpus``/``num_gpus`` declared per task); datasets go
    to the object store once.  ``address`` None starts (or joins) a local Ray instance.

    The driver submits a cell only when the cells it needs are done, the earliest ready cell
    of the grid's order first, and keeps about as many tasks in flight as the cluster can
    run at once: Ray's own queue would otherwise run every fine-tune before any measurement
    of a finished one, and an interrupted run would hold runs but few numbers."""

    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: float = 1.0, num_gpus: float = 0.0,
                 init_kwargs: dict[str, Any] | None = None):
        self.address, self.num_cpus, self.num_gpus = address, num_cpus, num_gpus
        self.init_kwargs = init_kwargs or {}

    def _ray(self):
        try:
            import ray
        except ImportError:
            raise ValueError("the Ray backend needs ray: pip install 'mmrobust[ray]'") from None
        if not ray.is_initialized():
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False, **self.init_kwargs)
        return ray

    def _slots(self, ray) -> int:
        """Cells the cluster can run at once with the declared resources (at least one)."""
        total = ray.cluster_resources()
        fits = [total.get("CPU", 1.0) / self.num_cpus] + ([total.get("GPU", 0.0) / self.num_gpus] if self.num_gpus else [])
        return max(1, int(min(fits)))

    def run(self, cells: list[Cell], datasets: Mapping[str, Dataset], out: Path, on_done: OnDone,
            max_cells: int | None = None, progress: bool = True) -> Outcome:
        ray = self._ray()
        outcome = Outcome()
        if max_cells is not None:
            outcome.stopped = len(cells) > max_cells
            cells = cells[:max_cells]
        task = ray.remote(_ray_cell).options(num_cpus=self.num_cpus, num_gpus=self.num_gpus, max_retries=0)
        shipped = {key: ray.put(datasets[key]) for key in sorted({c.dataset for c in cells})}
        waiting, running, slots = list(cells), {}, self._slots(ray)
        bar = tqdm(total=len(cells), desc="benchmark cells (ray)", unit="cell", disable=None if progress else True)
        while waiting or running:
            for cell in list(waiting):  # in the grid's order: dependencies first
                if len(running) >= slots:
                    break
                if any(d in outcome.failed for d in cell.needs):
                    waiting.remove(cell)
                    outcome.failed[cell.id] = _failure(out, cell, RuntimeError("skipped: a cell it needs failed"))
                    bar.update(1)
                elif all(is_done(out, d) for d in cell.needs):
                    waiting.remove(cell)
                    ref = task.remote(cell, shipped[cell.dataset], str(out), max(1, int(self.num_cpus)))
                    running[ref] = cell
            if not running:  # nothing runs and nothing is ready: what waits can never start
                for cell in waiting:
                    outcome.failed[cell.id] = _failure(out, cell, RuntimeError("skipped: a cell it needs never ran"))
                break
            (ref,), _ = ray.wait(list(running), num_returns=1)
            cell = running.pop(ref)
            try:
                result = ray.get(ref)
            except Exception as exc:  # a failed task is recorded, the rest go on
                outcome.failed[cell.id] = _failure(out, cell, exc)
            else:
                on_done(cell, result)
                outcome.computed.append(cell.id)
            bar.update(1)
            bar.set_postfix_str(cell.title[-60:])
        bar.close()
        return outcome


def make_executor(backend: str = "local", address: str | None = None, num_cpus: float = 1.0,
                  num_gpus: float = 0.0, **ray_init: Any) -> InProcessExecutor | RayExecutor:
    if backend == "local":
        return InProcessExecutor()
    if backend == "ray":
        return RayExecutor(address, num_cpus, num_gpus, ray_init)
    raise ValueError(f"unknown backend '{backend}'; allowed: local, ray")


# -------------------------------------------------------------- orchestration
@dataclass
class BenchmarkResult:
    out: Path
    grid: Grid
    outcome: Outcome
    store: Any
    report: dict[str, Path]
    seconds: float

    @property
    def complete(self) -> bool:
        return not self.outcome.failed and not self.outcome.stopped


def load_datasets(names: Iterable[str]) -> dict[str, Dataset]:
    return {name: load_dataset(name) for name in names}


def run_benchmark(config: BenchmarkConfig, out: str | Path, executor: InProcessExecutor | RayExecutor | None = None,
                  max_cells: int | None = None, progress: bool = True, report: bool = True,
                  datasets: Mapping[str, Dataset] | None = None) -> BenchmarkResult:
    """Run (or resume) a benchmark into ``out``: cells not yet done are computed, each recorded
    as soon as it finishes; then the results store and the report are (re)built."""
    from mmrobust.experiments.report import write_report
    from mmrobust.experiments.store import build_store

    tick = time.perf_counter()
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "benchmark.yaml", config.to_yaml())
    datasets = dict(datasets) if datasets is not None else load_datasets(config.datasets)
    grid = expand_grid(config, datasets)
    todo = [c for c in grid.ordered() if not is_done(out, c.id)]
    tracker = MlflowTracker.maybe(config.name)
    executor = executor or InProcessExecutor()

    log_lines, finished = progress and not sys.stderr.isatty(), [0]  # a log line per cell where no bar shows

    def on_done(cell: Cell, result: dict[str, Any]) -> None:
        write_marker(out, cell, result)
        if tracker is not None:
            tracker.log(cell, result)
        finished[0] += 1
        if log_lines:
            print(f"[{finished[0]}/{len(todo)}] {cell.title}: {result.get('seconds', 0.0):.0f} s", file=sys.stderr,
                  flush=True)

    outcome = executor.run(todo, datasets, out, on_done, max_cells, progress)
    seconds = time.perf_counter() - tick
    # again: another driver on this folder may have written its own config meanwhile, and the
    # report reads this one with the store built from this grid
    atomic_write_text(out / "benchmark.yaml", config.to_yaml())
    _write_status(out, config, grid, outcome, len(todo), seconds, executor.name)
    store = build_store(grid, out, config)
    paths = write_report(out) if report else {}
    return BenchmarkResult(out, grid, outcome, store, paths, seconds)


def plan_benchmark(config: BenchmarkConfig, out: str | Path,
                   datasets: Mapping[str, Dataset] | None = None) -> pd.DataFrame:
    """What a (re-)run of the benchmark into ``out`` has left, row by row of the tables: cells
    done and to do per (model, row, kind), the measured seconds per finished cell and, from
    them, the seconds still to go (NaN where no cell of that group has finished yet)."""
    out = Path(out)
    datasets = dict(datasets) if datasets is not None else load_datasets(config.datasets)
    grid = expand_grid(config, datasets)
    rows = grid.rows()
    records = []
    for cell in grid.ordered():
        done = is_done(out, cell.id)
        records.append({"model": cell.model, "row": rows.get(cell.id, "(clean model fine-tuned from)"),
                        "kind": cell.kind, "done": done,
                        "seconds": float(read_marker(out, cell.id).get("seconds", np.nan)) if done else np.nan})
    frame = pd.DataFrame(records)
    plan = frame.groupby(["model", "row", "kind"], sort=False).agg(
        cells=("done", "size"), done=("done", "sum"), s_per_cell=("seconds", "mean")).reset_index()
    plan["todo"] = plan.cells - plan.done
    plan["s_to_go"] = plan.todo * plan.s_per_cell.where(plan.todo > 0, 0.0)
    return plan[["model", "row", "kind", "cells", "done", "todo", "s_per_cell", "s_to_go"]]


def _write_status(out: Path, config: BenchmarkConfig, grid: Grid, outcome: Outcome, todo: int, seconds: float,
                  backend: str) -> None:
    done = sum(is_done(out, c) for c in grid.cells)
    status = {"name": config.name, "preset": config.preset, "backend": backend, "cells": len(grid.cells), "done": done,
              "computed_now": len(outcome.computed), "reused": len(grid.cells) - todo, "stopped_early": outcome.stopped,
              "failed": {grid.cells[c].title: msg for c, msg in outcome.failed.items()}, "skipped": grid.skipped,
              "seconds": seconds, "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
    atomic_write_text(out / "status.json", json.dumps(status, indent=2))


# ------------------------------------------------------------------- tracking
class MlflowTracker:
    """Optional MLflow logging: one MLflow run per finished cell (its coordinates as params, its
    numbers as metrics), only when ``mlflow`` imports and ``MLFLOW_TRACKING_URI`` is set."""

    def __init__(self, mlflow: Any, experiment: str):
        self.mlflow = mlflow
        mlflow.set_experiment(experiment)

    @classmethod
    def maybe(cls, experiment: str) -> MlflowTracker | None:
        if not os.environ.get("MLFLOW_TRACKING_URI"):
            return None
        try:
            import mlflow
        except ImportError:
            return None
        return cls(mlflow, f"mmrobust-{experiment}")

    def log(self, cell: Cell, result: dict[str, Any]) -> None:
        rows = pd.DataFrame(result.get("rows", []))
        with self.mlflow.start_run(run_name=cell.title):
            self.mlflow.log_params({"cell": cell.id, "kind": cell.kind, "dataset": cell.dataset, "run_dir": cell.run_dir,
                                    **{k: str(v)[:500] for k, v in cell.payload.items() if k != "config"}})
            metrics = {}
            for r in rows.itertuples():
                key = "_".join(str(p) for p in (r.split, r.protocol, r.population, r.attack, f"r{r.budget:g}", r.metric,
                                                "" if pd.isna(r.k) else f"at{int(r.k)}") if p != "")
                if np.isfinite(r.value):
                    metrics[key.replace("@", "_").replace("+", "_")] = float(r.value)
            if metrics:
                self.mlflow.log_metrics(metrics)
