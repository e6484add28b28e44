"""Matplotlib figures for attacks and analyses; each is readable without the text
(title, axis labels with units, legend) and written as a PNG."""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

CLEAN, ATTACKED = "#4C72B0", "#DD8452"


def _title(ax, text: str, width: int = 70) -> None:
    ax.set_title("\n".join(textwrap.wrap(text, width)), fontsize=10)


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def plot_margins(
    margins: pd.DataFrame, path: str | Path, title: str, sensitive: str | None = None
) -> Path:
    """Grouped bars: mean score margin s_ui − s_uj per modality (and fused), clean vs attacked
    (modality-balancing paper, Figure 1a)."""
    order = [p for p in margins.part if p not in ("rest", "fused")] + ["rest", "fused"]
    table = margins.set_index("part").loc[[p for p in order if p in set(margins.part)]]
    x = np.arange(len(table))
    fig, ax = plt.subplots(figsize=(1.6 * len(table) + 2.5, 4))
    ax.bar(x - 0.2, table["clean"], 0.4, label="clean", color=CLEAN)
    ax.bar(x + 0.2, table["attacked"], 0.4, label="attacked", color=ATTACKED)
    labels = [f"{p}\n(sensitive)" if p == sensitive else p for p in table.index]
    ax.set_xticks(x, labels)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_ylabel("mean score margin  s(u,i⁺) − s(u,j⁻)")
    ax.set_xlabel("score part (modality, ID/rest, fused)")
    _title(ax, title)
    ax.legend()
    return _save(fig, path)


def plot_case(case: pd.DataFrame, path: str | Path, title: str) -> Path:
    """Per-item scores of one user's positive and top negatives, per modality, clean vs attacked
    (modality-balancing paper, Figure 1b)."""
    parts = list(dict.fromkeys(case.part))
    fig, axes = plt.subplots(
        len(parts), 1, figsize=(10, 2.4 * len(parts)), sharex=True, squeeze=False
    )
    for ax, part in zip(axes[:, 0], parts, strict=True):
        sub = case[case.part == part]
        x = np.arange(len(sub))
        ax.bar(x - 0.2, sub["clean"], 0.4, color=CLEAN, label="clean")
        ax.bar(x + 0.2, sub["attacked"], 0.4, color=ATTACKED, label="attacked")
        ax.axhline(0, color="black", linewidth=0.6)
        ax.set_ylabel(f"{part} score")
        ax.axvspan(-0.5, 0.5, color="green", alpha=0.08)
    labels = [
        f"{r}\n(item {i})" if r == "positive" else f"neg {r.split()[-1]}\n(item {i})"
        for r, i in zip(sub["role"], sub["item"], strict=True)
    ]
    axes[-1, 0].set_xticks(np.arange(len(labels)), labels, fontsize=7)
    axes[-1, 0].set_xlabel("items: the test positive (shaded) and the user's top-scored negatives")
    axes[0, 0].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    _title(axes[0, 0], title, 110)
    return _save(fig, path)


def plot_jaccard(table: pd.DataFrame, path: str | Path, title: str) -> Path:
    """Histogram of Jaccard(U_a, U_b) over targets, one series per modality pair (Band Together
    Fig. 3)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    bins = np.linspace(0, 1, 21)
    for pair, sub in table.groupby("pair"):
        ax.hist(
            sub["jaccard"], bins=bins, alpha=0.7, label=f"{pair} (mean {sub['jaccard'].mean():.2f})"
        )
    ax.set_xlabel("Jaccard similarity of the top-k users of the two modalities")
    ax.set_ylabel("number of targets")
    _title(ax, title)
    ax.legend()
    return _save(fig, path)


def plot_robustness(
    sweep: pd.DataFrame, path: str | Path, title: str, metric: str = "recall", k: int = 20
) -> Path:
    """Attacked metric vs budget, one line per attack (and modality set), clean as a dashed line."""
    sub = sweep[(sweep.metric == metric) & (sweep.k == k)]
    fig, ax = plt.subplots(figsize=(6, 4))
    for (attack, mods), g in sub.groupby(["attack", "modalities"]):
        g = g.sort_values("budget")
        ax.plot(100 * g["budget"], g["attacked"], marker="o", label=f"{attack} ({mods})")
    ax.axhline(sub["clean"].iloc[0], color="black", linestyle="--", label="clean")
    ax.set_xlabel("budget r (% of each item row's norm)")
    ax.set_ylabel(f"{metric.capitalize()}@{k} on test")
    _title(ax, title)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_promotion(summary: pd.DataFrame, path: str | Path, title: str, k: int = 50) -> Path:
    """HR@K of the targets before and after each promotion attack, attack vs held-out users."""
    sub = summary[summary.k == k]
    labels = [
        f"{a}\nβ={b:g}\nr={100 * r:g}%"
        for a, b, r in zip(sub.attack, sub.beta, sub.budget, strict=True)
    ]
    x = np.arange(len(sub))
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(sub) + 2), 4))
    for offset, (pop, color) in zip(
        (-0.3, -0.1, 0.1, 0.3),
        (
            ("attack users, before", "#9ecae1"),
            ("attack users, after", CLEAN),
            ("held-out users, before", "#fdd0a2"),
            ("held-out users, after", ATTACKED),
        ),
        strict=True,
    ):
        column = {
            "attack users, before": "hr_before_attack",
            "attack users, after": "hr_after_attack",
            "held-out users, before": "hr_before_heldout",
            "held-out users, after": "hr_after_heldout",
        }[pop]
        ax.bar(x + offset, 100 * sub[column], 0.2, color=color, label=pop)
    ax.set_xticks(x, labels, fontsize=7)
    ax.set_ylabel(f"mean HR@{k} of the targets (%)")
    ax.set_xlabel("promotion attack")
    _title(ax, title)
    ax.legend(fontsize=7)
    return _save(fig, path)
