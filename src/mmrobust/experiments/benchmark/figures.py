"""The benchmark report's figures (matplotlib, PNG), drawn from the results store.

Each is readable without the text: a title naming model, dataset and setting, axis labels
with units, a legend.  Means over seeds, error bars = std over seeds.

* robustness vs budget, one line per defense (modality-balancing paper Figure 5);
* per-modality score margins before/after the attack, one panel per defense
  (modality-balancing paper Figure 1a vs 6a);
* defense budget × attack budget heatmap (Band Together Figure 5; drawn for each table of
  the ``budget-grid`` layout by ``tables.BudgetGrid.figures``);
* clean accuracy vs attack gain, one point per defense (Band Together Figure 6);
* defense-setting sweeps, clean and attacked (modality-balancing paper Figures 3–4);
* training curves (validation Recall@20 per epoch; fine-tuning loss per epoch).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from mmrobust.experiments.plots import ATTACKED, CLEAN  # noqa: E402
from mmrobust.utils import atomic_path  # noqa: E402

BUDGET_AXIS = "attack budget r (% of each item row's ‖x‖₂)"
#: long metric names of axis labels (the short ones of tables: ``results.SHORT_METRIC``)
LONG_METRIC = {"recall": "Recall", "ndcg": "NDCG", "precision": "Precision", "map": "MAP",
               "hr": "HR"}


def _title(ax, text: str, width: int = 60, size: int = 10) -> None:
    ax.set_title("\n".join(textwrap.wrap(text, width)), fontsize=size)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def _stats(frame: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    return frame.groupby(by, sort=False)["value"].agg(["mean", "std"]).fillna(0.0).reset_index()


def _colors(labels: list[str]) -> dict[str, tuple]:
    cmap = plt.get_cmap("tab10" if len(labels) <= 10 else "tab20")
    return {label: cmap(i % cmap.N) for i, label in enumerate(labels)}


def _metric(metric: str, k: int) -> str:
    return f"{LONG_METRIC.get(metric, metric)}@{k}"


def plot_robustness_curves(clean: pd.DataFrame, attacked: pd.DataFrame, path: Path, title: str,
                           metric: str = "recall", k: int = 20) -> Path:
    """Attacked metric vs budget (0 = clean), one line per defense, one panel per attack."""
    attacks = list(dict.fromkeys(attacked.attack))
    variants = list(dict.fromkeys(list(clean.variant) + list(attacked.variant)))
    colors = _colors(variants)
    fig, axes = plt.subplots(1, len(attacks), figsize=(5.2 * len(attacks) + 1.8, 4.2),
                             squeeze=False, sharey=True)
    base = _stats(clean, ["variant"]).set_index("variant")
    for ax, attack in zip(axes[0], attacks, strict=True):
        points = _stats(attacked[attacked.attack == attack], ["variant", "budget"])
        for variant in variants:
            g = _from_clean(points[points.variant == variant].sort_values("budget"), base, variant)
            if len(g):
                ax.errorbar(100 * g["budget"], g["mean"], yerr=g["std"], marker="o", capsize=3,
                            label=variant, color=colors[variant])
        ax.set_xlabel(BUDGET_AXIS)
        ax.set_ylabel(f"test {_metric(metric, k)} (0 % = clean)")
        _title(ax, f"{attack.upper()}")
        ax.grid(alpha=0.3)
    axes[0, -1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), title="defense")
    fig.suptitle("\n".join(textwrap.wrap(title, 90)), fontsize=11)
    return _save(fig, path)


def _from_clean(points: pd.DataFrame, base: pd.DataFrame, variant: str) -> pd.DataFrame:
    """A defense's points per budget, preceded by its clean value at budget 0."""
    if variant not in base.index:
        return points
    start = pd.DataFrame({"variant": [variant], "budget": [0.0],
                          "mean": [base.loc[variant, "mean"]], "std": [base.loc[variant, "std"]]})
    return pd.concat([start, points])


def plot_margin_bars(margins: pd.DataFrame, path: Path, title: str) -> Path:
    """Mean score margin s(u,i⁺) − s(u,j⁻) per score part, clean vs attacked, one panel per
    defense."""
    variants = list(dict.fromkeys(margins.variant))
    fig, axes = plt.subplots(1, len(variants), figsize=(3.6 * len(variants) + 1.5, 4.2),
                             squeeze=False, sharey=True)
    for ax, variant in zip(axes[0], variants, strict=True):
        sub = margins[margins.variant == variant]
        parts = [p for p in dict.fromkeys(sub.population) if p not in ("rest", "fused")]
        parts += [p for p in ("rest", "fused") if p in set(sub.population)]
        stats = _stats(sub, ["population", "metric"]).set_index(["population", "metric"])
        x = np.arange(len(parts))
        for offset, phase, color in ((-0.2, "clean", CLEAN), (0.2, "attacked", ATTACKED)):
            means = [stats.loc[(p, f"margin_{phase}"), "mean"] for p in parts]
            stds = [stats.loc[(p, f"margin_{phase}"), "std"] for p in parts]
            ax.bar(x + offset, means, 0.4, yerr=stds, capsize=3, color=color, label=phase)
        ax.set_xticks(x, ["ID/rest" if p == "rest" else p for p in parts])
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_xlabel("score part (modality, ID/rest, fused)")
        _title(ax, variant, 40)
        ax.grid(axis="y", alpha=0.3)
    axes[0, 0].set_ylabel("mean score margin s(u,i⁺) − s(u,j⁻)")
    axes[0, -1].legend(fontsize=8, title="features")
    fig.suptitle("\n".join(textwrap.wrap(title, 90)), fontsize=11)
    return _save(fig, path)


def plot_budget_heatmap(grid: pd.DataFrame, path: Path, title: str, value_label: str) -> Path:
    """Defense budget (rows) × attack budget (columns) heatmap with the values written in."""
    fig, ax = plt.subplots(figsize=(1.5 * grid.shape[1] + 3.5, 0.7 * grid.shape[0] + 2.2))
    values = grid.to_numpy(dtype=float)
    image = ax.imshow(values, cmap="Blues", aspect="auto")
    finite = values[np.isfinite(values)]
    middle = (finite.max() + finite.min()) / 2 if finite.size else 0.0
    for (i, j), v in np.ndenumerate(values):
        text = f"{v:.1f}" if np.isfinite(v) else ("∞ (HR before = 0)" if v > 0 else "n/a")
        ax.text(j, i, text, ha="center", va="center", fontsize=9,
                color="white" if np.isfinite(v) and v > middle else "black")
    ax.set_xticks(np.arange(grid.shape[1]), grid.columns, rotation=0)
    ax.set_yticks(np.arange(grid.shape[0]), grid.index)
    ax.set_xlabel(BUDGET_AXIS)
    ax.set_ylabel("defense (training budget r, % of ‖x‖₂)")
    fig.colorbar(image, ax=ax, label=value_label)
    _title(ax, title, 70)
    return _save(fig, path)


def plot_tradeoff(points: pd.DataFrame, path: Path, title: str, x_label: str, y_label: str) -> Path:
    """Clean accuracy vs attack gain, one marker per defense (mean ± std over seeds)."""
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    colors = _colors(list(points.variant))
    for r in points.itertuples():
        ax.errorbar(r.x, r.y, xerr=r.x_std, yerr=r.y_std, fmt="o", capsize=3,
                    color=colors[r.variant], label=r.variant)
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), title="defense")
    _title(ax, title, 60)
    return _save(fig, path)


def plot_sweep(clean: pd.DataFrame, attacked: pd.DataFrame, path: Path, title: str, setting: str,
               y_label: str) -> Path:
    """Clean and attacked metric vs one defense setting (x = ``value_x``)."""
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for frame, label, color in ((clean, "clean", CLEAN), (attacked, "attacked", ATTACKED)):
        g = frame.groupby("x")["value"].agg(["mean", "std"]).fillna(0.0).reset_index()
        g = g.sort_values("x")
        ax.errorbar(g["x"], g["mean"], yerr=g["std"], marker="o", capsize=3, color=color,
                    label=label)
    xs = pd.concat([clean.x, attacked.x]).astype(float)
    if len(xs) and xs.min() > 0 and xs.max() / xs.min() >= 100:
        ax.set_xscale("log")
    log = " (log scale)" if ax.get_xscale() == "log" else ""
    ax.set_xlabel(f"defense setting {setting}{log}")
    ax.set_ylabel(y_label)
    ax.grid(alpha=0.3)
    ax.legend(title="features")
    _title(ax, title, 60)
    return _save(fig, path)


def _line_styles(frame: pd.DataFrame) -> dict[str, tuple[tuple, str]]:
    """Variant → (colour, line style): single variants solid in distinct colours; the variants
    of one sweep share a dashed or dotted style and go light to dark in sweep order."""
    groups = frame.groupby("group", sort=False).variant.unique()
    tab10 = plt.get_cmap("tab10")
    hues = [tab10(i) for i in (0, 1, 2, 3, 5, 8, 9)]  # not purple, pink, grey: the sweeps' shades
    styles, singles, sweeps = {}, 0, 0
    for variants in groups:
        if len(variants) == 1:
            styles[variants[0]] = (hues[singles % len(hues)], "-")
            singles += 1
            continue
        cmap = plt.get_cmap(("Purples", "Greys", "RdPu")[sweeps % 3])
        for variant, shade in zip(variants, np.linspace(0.45, 0.95, len(variants)), strict=True):
            styles[variant] = (cmap(shade), ("--", ":", "-.")[sweeps % 3])
        sweeps += 1
    return styles


def _one_curve_per_run(histories: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, list[str]]]:
    """A run shared by several rows (e.g. modality balancing and the sweep point with the same
    settings) is drawn once, under its first label; the others are named in the legend."""
    if histories.empty:
        return histories, {}
    labels = histories.groupby("cell", sort=False).variant.unique()
    shared: dict[str, dict[str, None]] = {}
    for variants in labels[labels.map(len) > 1]:
        shared.setdefault(variants[0], {}).update(dict.fromkeys(variants[1:]))
    first = histories.cell.map(labels.str[0])
    return histories[histories.variant == first], {v: list(others) for v, others in shared.items()}


def plot_training_curves(histories: pd.DataFrame, path: Path, title: str,
                         metric: str = "valid_recall@20") -> Path:
    """Left: validation metric per epoch of the runs trained from scratch; right: training loss
    per epoch of the fine-tuned defenses (mean over seeds)."""
    histories, shared = _one_curve_per_run(histories)
    scratch = histories[(histories.kind == "train") & histories[metric].notna()] \
        if metric in histories else histories[:0]
    tuned = histories[histories.kind == "finetune"]
    panels = [p for p in (("scratch", scratch), ("finetune", tuned)) if len(p[1])]
    n_lines = max(frame.variant.nunique() for _, frame in panels) if panels else 1
    size = (6.2 * len(panels) + 1.5, 4.2 + 0.25 * n_lines)
    fig, axes = plt.subplots(1, len(panels), figsize=size, squeeze=False)
    for ax, (kind, frame) in zip(axes[0], panels, strict=True):
        _training_panel(ax, kind, frame, metric, shared)
    fig.suptitle("\n".join(textwrap.wrap(title, 90)), fontsize=11)
    return _save(fig, path)


def _training_panel(ax, kind: str, frame: pd.DataFrame, metric: str,
                    shared: dict[str, list[str]]) -> None:
    """One panel: a curve per run (mean ± std over seeds) of the validation metric (runs from
    scratch) or of the training loss (fine-tuned defenses)."""
    if kind == "scratch":
        y, label = metric, "validation " + metric.removeprefix("valid_").replace("recall", "Recall")
    else:
        y, label = "loss", "training loss per batch\n(model loss + defense terms)"
    styles = _line_styles(frame)
    for variant, g in frame.groupby("variant", sort=False):
        curve = g.groupby("epoch")[y].agg(["mean", "std"]).fillna(0.0).reset_index()
        color, style = styles[variant]
        others = "".join(f"\n   = {other}" for other in shared.get(variant, []))
        ax.plot(curve["epoch"] + 1, curve["mean"], marker="." if len(curve) < 30 else None,
                color=color, linestyle=style, label=f"{variant} ({g.seed.nunique()} seeds){others}")
        ax.fill_between(curve["epoch"] + 1, curve["mean"] - curve["std"],
                        curve["mean"] + curve["std"], color=color, alpha=0.15)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if frame.epoch.nunique() == 1:  # one epoch: an integer axis around it, not 0.945…1.05
        ax.set_xlim(frame.epoch.iloc[0] + 0.5, frame.epoch.iloc[0] + 1.5)
        ax.set_xticks([frame.epoch.iloc[0] + 1])
    ax.set_ylabel(label)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, title="run (mean ± std over seeds)", loc="upper left",
              bbox_to_anchor=(0.0, -0.18), ncol=2)
    _title(ax, "trained from scratch" if kind == "scratch"
           else "defenses fine-tuned from the clean model")
