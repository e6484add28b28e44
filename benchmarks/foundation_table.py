"""Foundation accuracy table: Popularity, MF-BPR, LightGCN and VBPR on real datasets.

For each dataset and model, ``reg_weight`` and the learning rate are chosen on the
validation split (seed 0, grid below, as MMRec's hyper-parameter search does); the chosen setting is then trained
with seeds 0, 1, 2 and the test Recall@20 / NDCG@20 at the best validation epoch are
reported as mean ± std.  Runs go to ``runs/foundation``; finished runs are reused.

    python benchmarks/foundation_table.py [--datasets tiktok ml100k] [--out table.md]
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

warnings.filterwarnings("ignore")

from mmrobust.data import load_dataset  # noqa: E402
from mmrobust.experiments import RunConfig, train_run, tune  # noqa: E402

GRID = {"reg_weight": [1e-4, 1e-3, 1e-2, 1e-1], "train.lr": [1e-3, 5e-3]}
SEEDS = (0, 1, 2)


def finished(run_dir: Path) -> dict | None:
    path = run_dir / "metrics.json"
    return json.loads(path.read_text()) if path.exists() else None


def run_seed(config: RunConfig, run_dir: Path, dataset) -> dict:
    done = finished(run_dir)
    if done is None:
        train_run(config, run_dir, dataset=dataset)
        done = finished(run_dir)
    return done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["tiktok", "ml100k"])
    parser.add_argument("--models", nargs="+", default=["pop", "mf", "lightgcn", "vbpr"])
    parser.add_argument("--root", default="runs/foundation")
    parser.add_argument("--out", help="write the markdown table here too")
    args = parser.parse_args()
    rows = []
    for name in args.datasets:
        ds = load_dataset(name)
        for model in args.models:
            base = RunConfig(dataset=name, model=model, train={"progress": False})
            root = Path(args.root) / name / model
            chosen = {}
            if model != "pop":
                outcome = tune(base, GRID, root / "tune", dataset=ds)
                base = outcome.best
                chosen = {"reg_weight": base.model_params["reg_weight"], "lr": base.train.lr}
            results, seconds, epochs = [], [], []
            for seed in SEEDS:
                config = RunConfig(**{**base.model_dump(), "train": {**base.train.model_dump(), "seed": seed}})
                metrics = run_seed(config, root / f"seed{seed}", ds)
                results.append(metrics["test"])
                seconds.append(metrics["seconds"])
                epochs.append(metrics["epochs_run"])
            r20 = np.array([r["recall@20"] for r in results])
            n20 = np.array([r["ndcg@20"] for r in results])
            rows.append({"dataset": name, "model": model, **chosen,
                         "recall@20": f"{r20.mean():.4f} ± {r20.std(ddof=1):.4f}",
                         "ndcg@20": f"{n20.mean():.4f} ± {n20.std(ddof=1):.4f}",
                         "epochs": f"{np.mean(epochs):.0f}", "s/run": f"{np.mean(seconds):.0f}"})
            print(rows[-1], flush=True)
    table = pd.DataFrame(rows).to_markdown(index=False)
    print(table)
    if args.out:
        Path(args.out).write_text(table + "\n")


if __name__ == "__main__":
    main()
