"""The results store of a benchmark: ``<out>/results.parquet`` (and ``.csv``), one tidy table
of every measured number with its full coordinates — the run's columns (dataset, model,
feature route, defense and its settings as JSON, attack and its settings as JSON, budget,
norm, point, modalities, seed, split, protocol, population, metric, K, value, run
directory relative to ``<out>``) plus the benchmark's: ``variant`` (the table row),
``group`` (the config entry it expands), ``setting`` (its sweep values as JSON),
``training`` (scratch or fine-tuned, lr, epochs), ``spec`` (the attack entry, ``train`` for
the run's own clean metrics) and ``cell`` (the id of the cell that measured it).  It is
rebuilt from the cell markers after every run; training histories go to
``histories.parquet``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mmrobust.errors import UserError
from mmrobust.experiments.benchmark.cells import is_done, read_marker
from mmrobust.experiments.benchmark.config import BenchmarkConfig, TableConfig
from mmrobust.experiments.benchmark.grid import Cell, Grid
from mmrobust.experiments.benchmark.loading import parse_benchmark
from mmrobust.experiments.config import read_settings
from mmrobust.experiments.results import RESULT_COLUMNS, normalise
from mmrobust.utils import atomic_path

BENCH_COLUMNS = ["variant", "group", "setting", "training", "spec", "cell"]
STORE_COLUMNS = RESULT_COLUMNS + BENCH_COLUMNS


def build_store(grid: Grid, out: Path, config: BenchmarkConfig | None = None) -> ResultsStore:
    """Collect the rows of every finished cell of the grid into ``<out>/results.parquet`` (and
    the training histories into ``<out>/histories.parquet``)."""
    markers: dict[str, dict[str, Any]] = {}

    def marker(cid: str) -> dict[str, Any] | None:
        if cid not in markers and is_done(out, cid):
            markers[cid] = read_marker(out, cid)
        return markers.get(cid)

    rows, histories = [], []
    for m in grid.members:
        run = marker(m.run)
        if run is None:
            continue
        labels = {
            "variant": m.variant,
            "group": m.group,
            "setting": m.setting,
            "training": _training(grid.cells[m.run]),
        }
        rows += [{**r, **labels, "spec": "train", "cell": m.run} for r in run["rows"]]
        histories += [
            {
                "dataset": m.dataset,
                "model": m.model,
                "variant": m.variant,
                "group": m.group,
                "seed": m.seed,
                "kind": grid.cells[m.run].kind,
                "cell": m.run,
                **h,
            }
            for h in run.get("history", [])
        ]
        for cid, spec in m.evals:
            found = marker(cid)
            if found is not None:
                rows += [{**r, **labels, "spec": spec, "cell": cid} for r in found["rows"]]
    frame = normalise_store(pd.DataFrame(rows, columns=STORE_COLUMNS))
    _write_frame(frame, out / "results.parquet", csv=True)
    _write_frame(pd.DataFrame(histories), out / "histories.parquet")
    return ResultsStore(frame, config, pd.DataFrame(histories), out)


def _training(cell: Cell) -> str:
    train = cell.config.train
    init = "fine-tuned from the clean run" if cell.kind == "finetune" else "from scratch"
    return json.dumps(
        {"init": init, "lr": train.lr, "epochs": train.epochs, "restore": train.restore}
    )


def normalise_store(frame: pd.DataFrame) -> pd.DataFrame:
    return normalise(frame, STORE_COLUMNS)


def _write_frame(frame: pd.DataFrame, path: Path, csv: bool = False) -> None:
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)
    if csv:
        with atomic_path(path.with_suffix(".csv")) as tmp:
            frame.to_csv(tmp, index=False)


@dataclass
class ResultsStore:
    """The tidy results of a benchmark with its config; query it or build its tables."""

    frame: pd.DataFrame
    config: BenchmarkConfig | None = None
    histories: pd.DataFrame = field(default_factory=pd.DataFrame)
    path: Path | None = None

    @classmethod
    def load(cls, path: str | Path) -> ResultsStore:
        """Open ``<out>`` (or its ``results.parquet``) written by ``mmrobust benchmark``."""
        path = Path(path)
        folder = path.parent if path.suffix == ".parquet" else path
        if not (folder / "results.parquet").exists():
            raise FileNotFoundError(
                f"{folder} holds no results.parquet; run 'mmrobust benchmark' with --out {folder}"
            )
        config = None
        if (folder / "benchmark.yaml").exists():
            config = parse_benchmark(
                read_settings(folder / "benchmark.yaml"), str(folder / "benchmark.yaml")
            )
        hist_path = folder / "histories.parquet"
        histories = pd.read_parquet(hist_path) if hist_path.exists() else pd.DataFrame()
        return cls(
            normalise_store(pd.read_parquet(folder / "results.parquet")), config, histories, folder
        )

    def query(self, **where: Any) -> pd.DataFrame:
        """Rows whose columns equal the given values (a list means any of them)."""
        frame = self.frame
        for key, value in where.items():
            if key not in frame.columns:
                raise UserError(
                    f"unknown column '{key}' in the query; allowed: {', '.join(frame.columns)}"
                )
            values = value if isinstance(value, (list, tuple, set)) else [value]
            frame = frame[_matches(frame[key], values)]
        return frame

    def summary(self, by: list[str], **where: Any) -> pd.DataFrame:
        """Mean, std and number of seeds of ``value`` per ``by`` (after ``query(**where)``)."""
        unknown = [b for b in by if b not in self.frame.columns]
        if unknown:
            raise UserError(
                f"unknown column(s) {unknown} to group by; allowed: {', '.join(self.frame.columns)}"
            )
        rows = self.query(**where)
        grouped = rows.groupby(by, dropna=False, sort=False)["value"]
        return grouped.agg(mean="mean", std="std", seeds="count").reset_index()

    def table_spec(self, name: str) -> TableConfig:
        """The config of table ``name`` of this benchmark."""
        specs = {t.name: t for t in (self.config.tables if self.config else [])}
        if name not in specs:
            raise UserError(
                f"unknown table '{name}'; allowed: {', '.join(specs) or 'none in this benchmark'}"
            )
        return specs[name]

    def attack_kind(self, name: str | None) -> str | None:
        if self.config is None:
            return None
        return next((a.kind for a in self.config.attacks if a.name == name), None)

    def first_source(self, *kinds: str) -> str | None:
        if self.config is None:
            return None
        return next((a.name for a in self.config.attacks if a.kind in kinds), None)


def _matches(column: pd.Series, values: list[Any]) -> pd.Series:
    if pd.api.types.is_float_dtype(column):
        arr = column.to_numpy(dtype=float)
        return pd.Series(
            np.any([np.isclose(arr, float(v)) for v in values], axis=0), index=column.index
        )
    if pd.api.types.is_integer_dtype(column):
        return column.isin([int(v) for v in values]).fillna(False).astype(bool)
    return column.isin([str(v) for v in values]).fillna(False).astype(bool)
