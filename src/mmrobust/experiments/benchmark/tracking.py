"""Optional MLflow tracking of a benchmark's finished cells."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pandas as pd

from mmrobust.experiments.benchmark.grid import Cell


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
            self.mlflow.log_params(
                {
                    "cell": cell.id,
                    "kind": cell.kind,
                    "dataset": cell.dataset,
                    "run_dir": cell.run_dir,
                    **{k: str(v)[:500] for k, v in cell.describe().items()},
                }
            )
            metrics = {}
            for r in rows.itertuples():
                key = "_".join(
                    str(p)
                    for p in (
                        r.split,
                        r.protocol,
                        r.population,
                        r.attack,
                        f"r{r.budget:g}",
                        r.metric,
                        "" if pd.isna(r.k) else f"at{int(r.k)}",
                    )
                    if p != ""
                )
                if np.isfinite(r.value):
                    metrics[key.replace("@", "_").replace("+", "_")] = float(r.value)
            if metrics:
                self.mlflow.log_metrics(metrics)
