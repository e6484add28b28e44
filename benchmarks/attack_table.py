"""Attack measurements on real data (issue: attacks and diagnostics).

For each dataset, VBPR is trained with the validation-selected settings for seeds 0-2
(runs/attacks/<dataset>/seed<k>; finished runs are reused).  Then:

* untargeted: clean / random / FGSM-L2 / PGD Recall@20 and NDCG@20 for r ∈ {2.5, 5, 7.5,
  10} %, mean ± std over the 3 seeds;
* promotion (seed 0): FGSM and PGD, with and without alignment (β = 0, 1), every r, on
  100 targets with 5 training interactions: HR@50 before/after on attack and held-out
  users, RI; plus the ReLU+margin utility of the public code at r = 5 %;
* modality-imbalance and gradient-mismatch analyses (seed 0), with their plots.

    python benchmarks/attack_table.py [--datasets tiktok ml100k] [--out attack_tables.md]
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import pandas as pd

warnings.filterwarnings("ignore")

from mmrobust.attacks import PromotionConfig  # noqa: E402
from mmrobust.evaluation.mismatch import gain_summary  # noqa: E402
from mmrobust.experiments import RunConfig, train_run  # noqa: E402
from mmrobust.experiments.attack_runs import (  # noqa: E402
    mismatch_run,
    modality_run,
    promotion_run,
    untargeted_run,
)

TUNED = {"tiktok": {"reg_weight": 0.1, "lr": 5e-3}, "ml100k": {"reg_weight": 0.01, "lr": 5e-3}}
BUDGETS = (0.025, 0.05, 0.075, 0.1)
SEEDS = (0, 1, 2)


def trained_run(dataset: str, seed: int, root: Path) -> Path:
    run_dir = root / dataset / f"seed{seed}"
    if not (run_dir / "metrics.json").exists():
        tuned = TUNED[dataset]
        config = RunConfig(dataset=dataset, model="vbpr", model_params={"reg_weight": tuned["reg_weight"]},
                           train={"lr": tuned["lr"], "seed": seed, "progress": False})
        train_run(config, run_dir)
    return run_dir


def mean_std(values: pd.Series) -> str:
    return f"{values.mean():.4f} ± {values.std(ddof=1):.4f}" if len(values) > 1 else f"{values.mean():.4f}"


def untargeted_table(dataset: str, root: Path) -> pd.DataFrame:
    frames = []
    for seed in SEEDS:
        sweep = untargeted_run(trained_run(dataset, seed, root), budgets=BUDGETS, seed=seed, device="cpu")
        frames.append(sweep.assign(seed=seed))
    data = pd.concat(frames)
    data = data[(data.k == 20) & data.metric.isin(["recall", "ndcg"])]
    rows = []
    for (budget, metric), g in data.groupby(["budget", "metric"]):
        row = {"dataset": dataset, "r": f"{100 * budget:g}%", "metric": f"{metric}@20",
               "clean": mean_std(g[g.attack == "fgsm"].clean)}
        for attack in ("random", "fgsm", "pgd"):
            sub = g[g.attack == attack]
            row[attack] = mean_std(sub.attacked)
            row[f"{attack} drop"] = f"{100 * sub['drop'].mean():.1f}%"
        rows.append(row)
    return pd.DataFrame(rows)


def promotion_tables(dataset: str, root: Path) -> pd.DataFrame:
    run_dir = trained_run(dataset, 0, root)
    smooth = promotion_run(run_dir, ("fgsm", "pgd"), BUDGETS, (0.0, 1.0), PromotionConfig(), device="cpu")
    relu = promotion_run(run_dir, ("fgsm", "pgd"), (0.05,), (0.0, 1.0), PromotionConfig(surrogate="relu"),
                         device="cpu", name="promotion_relu")
    table = pd.concat([smooth, relu])
    table = table[table.k == 50]
    cols = {"hr_before_attack": "HR@50 A before", "hr_after_attack": "HR@50 A after", "ri_percent_attack": "RI A %",
            "hr_before_heldout": "HR@50 held-out before", "hr_after_heldout": "HR@50 held-out after",
            "ri_percent_heldout": "RI held-out %", "improved_share_attack": "targets improved (A)"}
    out = table[["surrogate", "attack", "budget", "beta", *cols]].rename(columns=cols)
    out.insert(0, "dataset", dataset)
    out["targets"] = table.target_note.iloc[0]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["tiktok", "ml100k"])
    parser.add_argument("--root", default="runs/attacks")
    parser.add_argument("--out", help="write the markdown tables here too")
    args = parser.parse_args()
    root = Path(args.root)
    sections = []
    for dataset in args.datasets:
        tick = time.perf_counter()
        untargeted = untargeted_table(dataset, root)
        sections.append(f"## {dataset}: untargeted (VBPR, seeds {SEEDS})\n\n" + untargeted.to_markdown(index=False))
        promotion = promotion_tables(dataset, root)
        sections.append(f"## {dataset}: promotion (seed 0)\n\n" + promotion.to_markdown(index=False, floatfmt=".5g"))
        run0 = trained_run(dataset, 0, root)
        modality = modality_run(run0, device="cpu")
        sections.append(f"## {dataset}: modality margins (FGSM r=5%, seed 0) — sensitive: "
                        f"{modality['sensitive_modality']}\n\n"
                        + pd.DataFrame(modality["margins"]).to_markdown(index=False, floatfmt=".4f")
                        + "\n\nplots: " + ", ".join(modality["plots"]))
        mismatch = mismatch_run(run0, device="cpu")
        jac = mismatch.groupby("pair").jaccard.describe()
        sections.append(f"## {dataset}: gradient mismatch (100 targets, top 10% users, seed 0)\n\n"
                        + jac.to_markdown(floatfmt=".3f") + "\n\n" + gain_summary(mismatch).to_markdown(index=False, floatfmt=".5g")
                        + f"\n\nplot: {run0 / 'analysis' / 'mismatch_jaccard.png'}")
        sections.append(f"({dataset}: {time.perf_counter() - tick:.0f} s in all)")
        print("\n\n".join(sections[-5:]), flush=True)
    text = "\n\n".join(sections)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(json.dumps({"done": True}))


if __name__ == "__main__":
    main()
