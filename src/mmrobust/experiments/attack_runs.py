"""Attacks and analyses on a trained run: craft, evaluate, write tables, plots and result rows.

Everything lands in ``RUN_DIR/attacks/`` and ``RUN_DIR/analysis/``, and every measured
number is merged into the run's tidy results table with its attack coordinates.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from mmrobust.attacks import (
    Budget,
    PromotionAttack,
    PromotionConfig,
    make_attack,
    select_targets,
    split_users,
)
from mmrobust.evaluation.mismatch import gain_summary, mismatch_analysis
from mmrobust.evaluation.modality import modality_analysis
from mmrobust.evaluation.promotion import (
    PROMOTION_KS,
    promotion_report,
    promotion_table,
    target_hits,
)
from mmrobust.evaluation.robustness import UNTARGETED_ATTACKS, masking_check, untargeted_sweep
from mmrobust.experiments.plots import (
    plot_case,
    plot_jaccard,
    plot_margins,
    plot_promotion,
    plot_robustness,
)
from mmrobust.experiments.runs import Run, load_run, run_coordinates, write_results
from mmrobust.utils import atomic_path, atomic_write_text


def _write_csv(frame: pd.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
    return path


def _coords(run: Run) -> dict[str, object]:
    return run_coordinates(run.config, run.dataset.name, run.path)


def untargeted_run(run_dir: str | Path | Run, attacks: Sequence[str] = UNTARGETED_ATTACKS,
                   budgets: Sequence[float] = (0.025, 0.05, 0.075, 0.1),
                   modality_sets: Sequence[Sequence[str]] | None = None, norm: str = "l2", point: str = "raw",
                   pgd_steps: int = 10, pgd_restarts: int = 1, seed: int = 0, device: str = "auto",
                   relative: bool = True, name: str = "untargeted") -> pd.DataFrame:
    """Clean vs attacked test metrics for every attack × budget × modality set of a trained run;
    written as ``attacks/<name>.csv`` and its plot.  ``run_dir`` may be an already loaded run."""
    run = run_dir if isinstance(run_dir, Run) else load_run(run_dir, device)
    sweep = untargeted_sweep(run.model, run.dataset, attacks, budgets, modality_sets, norm=norm, relative=relative,
                             point=point, pgd_steps=pgd_steps, pgd_restarts=pgd_restarts, seed=seed,
                             ks=run.config.train.ks)
    out = run.path / "attacks"
    _write_csv(sweep, out / f"{name}.csv")
    plot_robustness(sweep, out / f"{name}_recall20.png",
                    f"{run.config.model} on {run.dataset.name}: untargeted feature attacks ({norm}, {point})")
    rows = []
    for _, r in sweep.iterrows():
        params = {"steps": pgd_steps, "restarts": pgd_restarts} if r.attack == "pgd" else {}
        rows.append({**_coords(run), "attack": r.attack, "attack_params": json.dumps({**params, "seed": seed,
                     "relative": relative}), "budget": r.budget, "norm": norm, "point": point,
                     "modalities": r.modalities, "split": "test", "protocol": "full", "population": "all",
                     "metric": r.metric, "k": r.k, "value": r.attacked})
    write_results(run.path, rows, replace=False)
    return sweep


def adaptive_run(run_dir: str | Path, budgets: Sequence[float] = (0.05,), steps: int = 50, restarts: int = 5,
                 factor: float = 2.0, seed: int = 0, device: str = "auto") -> pd.DataFrame:
    """The gradient-masking check of a (defended) run: FGSM vs PGD with ``steps`` × ``restarts``;
    the attacked metrics and a ``masking_flag`` row (1 = PGD drop > factor × FGSM drop) per
    budget and metric@K go into the run's results, the check into ``attacks/adaptive_check.csv``."""
    run = load_run(run_dir, device)
    sweep = untargeted_run(run, ("fgsm", "pgd"), budgets, pgd_steps=steps, pgd_restarts=restarts, seed=seed,
                           name="adaptive")
    check = masking_check(sweep, factor)
    _write_csv(check, run.path / "attacks" / "adaptive_check.csv")
    params = json.dumps({"steps": steps, "restarts": restarts, "factor": factor, "seed": seed})
    rows = [{**_coords(run), "attack": "adaptive-check", "attack_params": params, "budget": r.budget, "norm": "l2",
             "point": "raw", "modalities": r.modalities, "split": "test", "protocol": "full", "population": "all",
             "metric": f"{r.metric}_masking_flag", "k": r.k, "value": float(r.flagged)} for _, r in check.iterrows()]
    write_results(run.path, rows, replace=False)
    return check


def promotion_run(run_dir: str | Path, attacks: Sequence[str] = ("fgsm", "pgd"),
                  budgets: Sequence[float] = (0.025, 0.05, 0.075, 0.1), betas: Sequence[float] = (0.0, 1.0),
                  config: PromotionConfig | None = None, norm: str = "l2", point: str = "raw",
                  ks: Sequence[int] = PROMOTION_KS, device: str = "auto", name: str = "promotion") -> pd.DataFrame:
    """Promotion attacks on a run's targets: HR@K before/after on attack and held-out users, RI.
    Tables and the plot are written as ``attacks/<name>*.csv|png``."""
    config = config or PromotionConfig()
    run = load_run(run_dir, device)
    model, ds = run.model, run.dataset
    targets, note = select_targets(ds, config.n_interactions, config.n_targets, config.selection, config.seed)
    attack_users, held_out = split_users(ds, config.attack_share, config.seed)
    features = ds.feature_tensors(model.device, model.modalities)
    before = {"attack": target_hits(model, ds, targets, attack_users, None, features, ks),
              "heldout": target_hits(model, ds, targets, held_out, None, features, ks)}
    per_target = {f"before/{p}": h for p, h in before.items()}
    summary = []
    settings = [(a, b, beta) for a in attacks for b in budgets for beta in betas]
    for attack_name, eps, beta in tqdm(settings, desc="promotion attacks", disable=None):
        attack = make_attack(attack_name, budget=Budget(eps=eps, norm=norm), point=point,
                             **({"step_scale": 1.25} if attack_name == "pgd" else {}))
        promo = PromotionAttack(attack, config.model_copy(update={"beta": beta}))
        pert = promo.perturb(model, ds, targets, attack_users, features)
        after = {p: target_hits(model, ds, targets, users, pert, features, ks)
                 for p, users in (("attack", attack_users), ("heldout", held_out))}
        label = f"{attack_name}/r={eps}/beta={beta}"
        per_target.update({f"{label}/{p}": h for p, h in after.items()})
        reports = {p: promotion_report(before[p], after[p]) for p in after}
        for k in ks:
            row = {"attack": attack_name, "budget": eps, "beta": beta, "norm": norm, "point": point, "k": k,
                   "surrogate": config.surrogate, "targets": len(targets), "target_note": note}
            for p, rep in reports.items():
                row.update({f"{m}_{p}": v for m, v in rep[k].items()})
            summary.append(row)
    table = pd.DataFrame(summary)
    out = run.path / "attacks"
    _write_csv(table, out / f"{name}.csv")
    _write_csv(promotion_table(targets, per_target), out / f"{name}_per_target.csv")
    plot_promotion(table, out / f"{name}_hr50.png",
                   f"{run.config.model} on {ds.name}: promotion of {note} ({config.surrogate} utility)")
    _record_promotion(run, table, config)
    return table


def _record_promotion(run: Run, table: pd.DataFrame, config: PromotionConfig) -> None:
    rows = []
    population = {"attack": "attack_users", "heldout": "held_out_users"}
    for _, r in table.iterrows():
        params = json.dumps({**config.model_dump(), "beta": r.beta, "goal": "promotion"})
        for pop, label in population.items():
            for metric in ("hr_before", "hr_after", "ri_percent", "improved_share"):
                rows.append({**_coords(run), "attack": f"promotion-{r.attack}", "attack_params": params,
                             "budget": r.budget, "norm": r.norm, "point": r.point, "modalities": "+".join(run.model.modalities),
                             "split": "train-masked", "protocol": "full", "population": label, "metric": metric,
                             "k": r.k, "value": r[f"{metric}_{pop}"]})
    write_results(run.path, rows, replace=False)


def modality_run(run_dir: str | Path, budget: float = 0.05, seed: int = 0, device: str = "auto",
                 case: tuple[int, int] | None = None) -> dict[str, object]:
    """Modality margins clean vs FGSM-attacked, the sensitive modality, the case view, two plots."""
    run = load_run(run_dir, device)
    result = modality_analysis(run.model, run.dataset, budget=budget, seed=seed, case=case)
    out = run.path / "analysis"
    _write_csv(result.margins, out / "modality_margins.csv")
    _write_csv(result.case, out / "modality_case.csv")
    title = f"{run.config.model} on {run.dataset.name}, FGSM-L2 r={100 * budget:g}%"
    plots = [plot_margins(result.margins, out / "modality_margins.png", f"Score margins: {title}", result.sensitive),
             plot_case(result.case, out / "modality_case.png",
                       f"User {result.case_user}, test item {result.case_item}: scores before/after ({title})")]
    summary = {"sensitive_modality": result.sensitive, "budget": budget, "case": [result.case_user, result.case_item],
               "margins": result.margins.to_dict(orient="records"), "plots": [str(p) for p in plots]}
    atomic_write_text(out / "modality.json", json.dumps(summary, indent=2))
    rows = [{**_coords(run), "attack": "fgsm", "attack_params": json.dumps({"analysis": "modality-margin"}),
             "budget": budget, "norm": "l2", "point": "raw", "modalities": "+".join(run.model.modalities),
             "split": "test", "protocol": "margin", "population": r.part, "metric": f"margin_{phase}", "k": None,
             "value": r[phase]} for _, r in result.margins.iterrows() for phase in ("clean", "attacked")]
    write_results(run.path, rows, replace=False)
    return summary


def mismatch_run(run_dir: str | Path, n_targets: int = 100, budget: float = 0.05, top_share: float = 0.1,
                 config: PromotionConfig | None = None, device: str = "auto", gains: bool = True) -> pd.DataFrame:
    """Jaccard of the top users per modality over targets, and the attack gain per loss user set."""
    config = (config or PromotionConfig()).model_copy(update={"n_targets": n_targets})
    run = load_run(run_dir, device)
    targets, note = select_targets(run.dataset, config.n_interactions, config.n_targets, config.selection, config.seed)
    attack_users, _ = split_users(run.dataset, config.attack_share, config.seed)
    table = mismatch_analysis(run.model, run.dataset, targets, attack_users, budget=budget, top_share=top_share,
                              config=config, gains=gains)
    out = run.path / "analysis"
    _write_csv(table, out / "mismatch.csv")
    plot_jaccard(table, out / "mismatch_jaccard.png",
                 f"{run.config.model} on {run.dataset.name}: top-{int(100 * top_share)}% user overlap ({note})")
    if gains:
        _write_csv(gain_summary(table), out / "mismatch_gains.csv")
    return table
