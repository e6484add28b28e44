"""The model zoo on real data: accuracy over 3 seeds, seconds per epoch, and FGSM robustness.

Popularity, MF-BPR, LightGCN and VBPR are the validation-tuned runs of
benchmarks/foundation_table.py (runs/foundation, reused).  Every other model is trained with
its typed defaults and lr 5e-3 (the rate the validation search chose for every foundation
model, and the helpers' validation probes for LATTICE/FREEDOM/MMGCL; ``--lrs 1e-3 5e-3`` picks
it on validation instead), epoch cap ``--epochs`` with early stopping on validation
Recall@20 (``--patience``), seeds 0, 1, 2.  Reported: test Recall@10/20 and NDCG@10/20 at the
best validation epoch (mean ± std), median seconds per training epoch, epochs run, and for
seed 0 the clean vs FGSM-L2 r = 5 % Recall@20 with the model's feature route.  Runs go to
runs/zoo/ and are reused when finished.

    python benchmarks/zoo_table.py [--datasets tiktok ml100k] [--models ...] [--out zoo.md]
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
from mmrobust.evaluation.robustness import untargeted_sweep  # noqa: E402
from mmrobust.experiments import RunConfig, load_run, train_run  # noqa: E402
from mmrobust.models import MODELS  # noqa: E402

FOUNDATION_MODELS = ("pop", "mf", "lightgcn", "vbpr")
SEEDS = (0, 1, 2)


def run(config: RunConfig, run_dir: Path, dataset) -> dict:
    if not (run_dir / "metrics.json").exists():
        train_run(config, run_dir, dataset=dataset)
    return json.loads((run_dir / "metrics.json").read_text())


def seconds_per_epoch(run_dir: Path) -> float:
    try:
        history = pd.read_csv(run_dir / "history.csv")
    except (FileNotFoundError, pd.errors.EmptyDataError):  # popularity: no training epochs
        return 0.0
    return float(history["train_seconds"].median()) if "train_seconds" in history else 0.0


def seed_dirs(name: str, model: str, ds, root: Path, args) -> tuple[list[Path], float | None]:
    """The three seed runs of ``model`` (foundation runs when they exist) and the learning rate."""
    foundation = Path(args.foundation) / name / model
    if model in FOUNDATION_MODELS and (foundation / "seed0" / "metrics.json").exists():
        return [foundation / f"seed{seed}" for seed in SEEDS], None
    train = {"seed": 0, "progress": False, "epochs": args.epochs, "patience": args.patience}
    base = dict(dataset=name, model=model)
    lrs = args.lrs if MODELS[model].trainable else args.lrs[:1]
    best_lr, best_valid = lrs[0], -1.0
    for lr in lrs if len(lrs) > 1 else ():
        metrics = run(RunConfig(**base, train={**train, "lr": lr}), root / f"lr{lr}-seed0", ds)
        if metrics["valid"]["recall@20"] > best_valid:
            best_lr, best_valid = lr, metrics["valid"]["recall@20"]
    dirs = [root / f"lr{best_lr}-seed{seed}" for seed in SEEDS]
    for seed, run_dir in zip(SEEDS, dirs, strict=True):
        run(RunConfig(**base, train={**train, "lr": best_lr, "seed": seed}), run_dir, ds)
    return dirs, best_lr


def model_rows(name: str, model: str, ds, root: Path, args) -> dict:
    dirs, lr = seed_dirs(name, model, ds, root, args)
    metrics = [json.loads((d / "metrics.json").read_text()) for d in dirs]
    tests = [m["test"] for m in metrics]
    secs = [seconds_per_epoch(d) for d in dirs]
    row = {"dataset": name, "model": model, "lr": lr if lr is not None else "tuned (foundation)"}
    for key in ("recall@10", "recall@20", "ndcg@10", "ndcg@20"):
        values = np.array([t[key] for t in tests])
        row[key] = f"{values.mean():.4f} ± {values.std(ddof=1):.4f}"
    row["s/epoch"] = f"{np.mean(secs):.2f}"
    row["epochs"] = f"{np.mean([m.get('epochs_run', 0) for m in metrics]):.0f}"
    cls = MODELS[model]
    loaded = load_run(dirs[0], "cpu")
    route = cls.route_of(loaded.model.config)
    if route != "none":
        sweep = untargeted_sweep(loaded.model, loaded.dataset, ("fgsm",), (0.05,), ks=(20,))
        recall = sweep[sweep.metric == "recall"].iloc[0]
        row["R@20 clean → FGSM 5%"] = f"{recall.clean:.4f} → {recall.attacked:.4f} ({100 * recall['drop']:.0f}%)"
    else:
        row["R@20 clean → FGSM 5%"] = "no features"
    row["feature route"] = route
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["tiktok", "ml100k"])
    parser.add_argument("--models", nargs="+", default=sorted(MODELS))
    parser.add_argument("--root", default="runs/zoo")
    parser.add_argument("--foundation", default="runs/foundation", help="runs of benchmarks/foundation_table.py")
    parser.add_argument("--lrs", nargs="+", type=float, default=[5e-3], help="several: chosen on validation (seed 0)")
    parser.add_argument("--epochs", type=int, default=150, help="epoch cap")
    parser.add_argument("--patience", type=int, default=10, help="early-stopping patience (validation checks)")
    parser.add_argument("--out", help="write the markdown table here too")
    args = parser.parse_args()
    rows = []
    for name in args.datasets:
        ds = load_dataset(name)
        for model in args.models:
            rows.append(model_rows(name, model, ds, Path(args.root) / name / model, args))
            print(rows[-1], flush=True)
    table = pd.DataFrame(rows).to_markdown(index=False)
    print(table)
    if args.out:
        Path(args.out).write_text(table + "\n")


if __name__ == "__main__":
    main()
