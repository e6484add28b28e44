"""A run is a directory: resolved config (``config.yaml``), environment and versions
(``versions.json``), resumable ``checkpoint.pt``, ``best.pt``, ``history.csv``,
``metrics.json`` and a tidy results table (``results.parquet`` / ``results.csv``: one row
per measured number with its coordinates)."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import mmrobust
from mmrobust.data import Dataset, load_dataset
from mmrobust.defenses import make_defense
from mmrobust.errors import UserError
from mmrobust.experiments.config import RunConfig, load_run_config
from mmrobust.experiments.results import (
    COORDINATES,
    ResultRow,
    metric_rows,
    normalise,
    rows_frame,
    run_coordinates,
)
from mmrobust.models import Recommender, build_model
from mmrobust.training import BEST, FitResult, fit, load_weights
from mmrobust.utils import (
    atomic_path,
    atomic_write_text,
    resolve_device,
    seed_everything,
    torch_save_atomic,
)


@dataclass
class Run:
    """A trained run loaded back: its config, dataset and model with the best weights."""

    path: Path
    config: RunConfig
    dataset: Dataset
    model: Recommender

    def write_results(self, rows: list[ResultRow]) -> pd.DataFrame:
        """Merge result rows into the run's tidy table (a row with the coordinates of an
        existing one replaces it)."""
        return write_results(self.path, rows, replace=False)


def default_run_dir(config: RunConfig, root: str | Path = "runs") -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name = Path(config.dataset).name
    defense = "" if config.defense_label() == "none" else f"-{config.defense_label()}"
    return Path(root) / f"{name}-{config.model}{defense}-s{config.train.seed}-{stamp}"


def environment() -> dict[str, str]:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {
        "mmrobust": mmrobust.__version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "platform": platform.platform(),
        "git_commit": commit or "unknown",
        "cuda": str(torch.cuda.is_available()),
    }


def write_results(run_dir: Path, rows: list[ResultRow], replace: bool = True) -> pd.DataFrame:
    """Write the run's tidy results; with ``replace`` False, merge into the existing table (a row
    with the same coordinates as an existing one replaces it)."""
    frame = rows_frame(rows)
    existing = run_dir / "results.parquet"
    if not replace and existing.exists():
        frame = pd.concat([normalise(pd.read_parquet(existing)), frame], ignore_index=True)
        frame = frame.drop_duplicates(subset=COORDINATES, keep="last").reset_index(drop=True)
    with atomic_path(run_dir / "results.parquet") as tmp:
        frame.to_parquet(tmp, index=False)
    with atomic_path(run_dir / "results.csv") as tmp:
        frame.to_csv(tmp, index=False)
    return frame


def fit_rows(
    config: RunConfig, dataset_name: str, run_dir: Path, result: FitResult
) -> list[ResultRow]:
    """The validation and test metrics of a finished training, as result rows."""
    coords = run_coordinates(config, dataset_name, run_dir)
    return metric_rows(result.valid, "valid", coords) + metric_rows(result.test, "test", coords)


def train_run(
    config: RunConfig,
    run_dir: str | Path | None = None,
    resume: bool = True,
    dataset: Dataset | None = None,
) -> tuple[Path, FitResult]:
    """Train one run end to end and write its directory; returns (run_dir, result)."""
    dataset = dataset or load_dataset(config.dataset)
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir(config)
    run_dir.mkdir(parents=True, exist_ok=True)
    existing = run_dir / "config.yaml"
    if resume and existing.exists() and load_run_config(existing) != config:
        raise UserError(
            f"{run_dir} holds a run with a different config; pick another --run-dir or pass "
            "--no-resume"
        )
    atomic_write_text(existing, config.to_yaml())
    atomic_write_text(run_dir / "versions.json", json.dumps(environment(), indent=2))
    seed_everything(config.train.seed)
    model = build_model(config.model, dataset, config.model_params)
    if config.init_from:
        start = Path(config.init_from) / BEST
        if not start.exists():
            raise FileNotFoundError(f"init_from {config.init_from} has no {BEST} to start from")
        load_weights(model, start)
    plugins = [make_defense(spec.name, **spec.params) for spec in config.defenses]
    result = fit(model, dataset, config.train, plugins=plugins, run_dir=run_dir, resume=resume)
    if not model.trainable:
        torch_save_atomic(model.state_dict(), run_dir / BEST)
    pd.DataFrame(result.history).to_csv(run_dir / "history.csv", index=False)
    epoch_seconds = [h["train_seconds"] for h in result.history]
    metrics = {
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history),
        "stopped_early": result.stopped_early,
        "seconds": result.seconds,
        "seconds_per_epoch": sum(epoch_seconds) / max(1, len(epoch_seconds)),
        "resumed_from_epoch": result.resumed_from,
        "valid": result.valid,
        "test": result.test,
        "defense_notes": result.notes,
        "model_route": model.route_note,
        "dataset": dataset.summary(),
    }
    atomic_write_text(run_dir / "metrics.json", json.dumps(metrics, indent=2, default=str))
    write_results(run_dir, fit_rows(config, dataset.name, run_dir, result))
    return run_dir, result


def load_run(
    run_dir: str | Path, device: str | None = "auto", dataset: Dataset | None = None
) -> Run:
    """A finished run's dataset and model with its best weights (``weights_only=True``);
    ``device`` None: the run's own; ``dataset``: an already loaded copy of the run's dataset."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").exists():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no config.yaml)")
    if not (run_dir / BEST).exists():
        raise FileNotFoundError(
            f"{run_dir} has no {BEST}; the run has not finished an evaluation yet"
        )
    config = load_run_config(run_dir / "config.yaml")
    dataset = dataset if dataset is not None else load_dataset(config.dataset)
    model = build_model(config.model, dataset, config.model_params)
    dev = resolve_device(config.train.device if device is None else device)
    load_weights(model, run_dir / BEST, dev)
    model.eval()
    return Run(run_dir, config, dataset, model.to(dev))
