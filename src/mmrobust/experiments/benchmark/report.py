"""The benchmark report: ``<out>/report.md`` and a self-contained ``<out>/report.html``
(PNGs inlined as base64), figures in ``<out>/plots/``.

It holds the paper-layout tables of the config (modality-balancing paper Table 2/3,
Band Together Table 2 and Tables 4–5, AMR paper Table 3), the figures of
``report_plots`` for every (dataset, model) whose data is in the store, the figures each
table's layout adds (``Layout.figures``), every paired test, and what was skipped or
failed.  ``mmrobust report OUT`` renders it again from ``results.parquet``,
``histories.parquet``, ``benchmark.yaml`` and ``status.json``.
"""

from __future__ import annotations

import base64
import html
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from mmrobust.experiments.benchmark.config import TableConfig
from mmrobust.experiments.benchmark.figures import (
    LONG_METRIC,
    plot_margin_bars,
    plot_robustness_curves,
    plot_sweep,
    plot_tradeoff,
    plot_training_curves,
)
from mmrobust.experiments.benchmark.grid import slug
from mmrobust.experiments.benchmark.store import ResultsStore
from mmrobust.experiments.benchmark.tables import (
    MbTable2,
    PaperTable,
    build_tables,
    clean_rows,
    json_param,
    layout_of,
    near,
)
from mmrobust.utils import atomic_write_text

CSS = ("body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;"
       "color:#222}\n"
       "table{border-collapse:collapse;margin:0.5em 0;font-size:13px}td,th{border:1px solid #ccc;"
       "padding:3px 7px}\n"
       "td{text-align:right}th{background:#f3f3f3}.caption{font-weight:bold;margin-top:1.5em}"
       ".legend{font-size:12px;\n"
       "color:#555;margin:0.2em 0}img{max-width:100%;border:1px solid #eee;margin:0.5em 0}"
       "code{background:#f6f6f6}")


@dataclass
class Block:
    """A piece of the report: heading, text, table, frame (a plain DataFrame) or image."""

    kind: str
    content: Any
    caption: str = ""


# --------------------------------------------------------------- the report
def write_report(store: ResultsStore, out: str | Path) -> dict[str, Any]:
    """Write ``report.md``, ``report.html`` and ``plots/*.png`` of ``store`` into ``out``."""
    out = Path(out)
    status_path = out / "status.json"
    status = json.loads(status_path.read_text(encoding="utf-8")) if status_path.exists() else {}
    tables = [t for t in build_tables(store) if not t.empty]
    plots = make_plots(store, tables, out / "plots")
    blocks = _header(store, status) + [Block("heading", "Tables")]
    blocks += [Block("table", t) for t in tables] or [Block("text", "No table has data yet.")]
    blocks += [Block("heading", "Figures")] + [Block("image", p, caption) for p, caption in plots]
    blocks += _tests(tables) + _notes(store, status)
    md_path, html_path = out / "report.md", out / "report.html"
    atomic_write_text(md_path, render_markdown(blocks, out))
    name = store.config.name if store.config else "benchmark"
    atomic_write_text(html_path, render_html(blocks, name))
    return {"markdown": md_path, "html": html_path, "plots": [p for p, _ in plots],
            "tables": tables}


def _header(store: ResultsStore, status: dict[str, Any]) -> list[Block]:
    config = store.config
    name = config.name if config else "benchmark"
    preset = f" (preset {config.preset})" if config and config.preset else ""
    lines = [config.description] if config and config.description else []
    if config:
        lines.append(f"Datasets: {', '.join(config.datasets)}; models: "
                     f"{', '.join(m.name for m in config.models)}; seeds: {config.seeds}; defenses "
                     f"fine-tuned for {config.finetune.epochs} epochs at lr "
                     f"{config.finetune.lr:g} from the clean model of the same seed.")
    if status:
        lines += _status_lines(status)
    lines.append(f"Results store: `results.parquet` ({len(store.frame)} rows, one per measured "
                 "number).")
    return [Block("title", f"Benchmark report: {name}{preset}")] + [Block("text", line)
                                                                    for line in lines]


def _status_lines(status: dict[str, Any]) -> list[str]:
    lines = [f"Cells: {status.get('done')} of {status.get('cells')} done "
             f"({status.get('computed_now')} computed in the last run, {status.get('reused')} "
             f"reused); last run {status.get('seconds', 0):.0f} s on the {status.get('backend')} "
             f"backend, finished {status.get('finished')}."]
    if status.get("done") != status.get("cells"):
        lines.append("**The benchmark is incomplete**: re-run the same command to finish it "
                     "(finished cells are reused).")
    return lines


def _tests(tables: list[PaperTable]) -> list[Block]:
    frames = [t.tests for t in tables if len(t.tests)]
    if not frames:
        return []
    tests = pd.concat(frames, ignore_index=True)
    text = ("Paired across seeds (seed k of a defense vs seed k of the other row). 'n/a' when "
            "fewer than three seeds are shared.")
    return [Block("heading", "Significance tests"), Block("text", text), Block("frame", tests)]


def _notes(store: ResultsStore, status: dict[str, Any]) -> list[Block]:
    lines = [f"Skipped: {s}" for s in status.get("skipped", [])]
    lines += [f"Failed: {title}: {msg}" for title, msg in status.get("failed", {}).items()]
    promo = store.frame[store.frame.attack.fillna("").str.startswith("promotion-")]
    notes = {json_param(p, "target_note", "") for p in promo.attack_params.dropna()} - {""}
    lines += [f"Promotion targets: {note}." for note in sorted(notes)]
    sampled = store.frame[(store.frame.protocol == "sampled")]
    used = sorted({(json_param(p, "n_negatives"), json_param(p, "requested_negatives"))
                   for p in sampled.attack_params.dropna()})
    for n, requested in used:
        if n != requested:
            lines.append(f"Sampled protocol: {n} negatives per test pair instead of {requested} "
                         "(the fewest non-interacted items a test user has).")
    return ([Block("heading", "Notes")] + [Block("text", line) for line in lines]) if lines else []


# ------------------------------------------------------------------- plots
def make_plots(store: ResultsStore, tables: list[PaperTable],
               folder: Path) -> list[tuple[Path, str]]:
    """Every figure whose data is in the store, then those the tables' layouts add:
    [(png path, caption)]."""
    plots: list[tuple[Path, str]] = []
    headline = _headline(store)
    for (dataset, model), block in store.frame.groupby(["dataset", "model"], sort=False):
        plots += _block_plots(store, block, dataset, model, folder, headline)
    for table in tables:
        plots += table.figures(store, folder)
    return plots


def _block_plots(store: ResultsStore, block: pd.DataFrame, dataset: str, model: str,
                 folder: Path, headline: TableConfig | None) -> list[tuple[Path, str]]:
    """The figures of one (dataset, model)."""
    where = f"{model} on {dataset}"
    name = f"{slug(dataset)}-{slug(model)}"
    plots = _robustness_plots(store, block, where, name, folder)
    plots += _margin_plot(block, where, name, folder)
    plots += _tradeoff_plot(store, block, where, name, folder, headline)
    plots += _sweep_plots(store, block, where, name, folder, headline)
    hist = store.histories
    if len(hist):
        hist = hist[(hist.dataset == dataset) & (hist.model == model)]
        if len(hist):
            path = plot_training_curves(hist, folder / f"{name}-training.png",
                                        f"{where}: training curves")
            plots.append((path, "Training curves (validation Recall@20 of runs from scratch; loss "
                                "of fine-tuning)."))
    return plots


def _headline(store: ResultsStore) -> TableConfig | None:
    """The attack the trade-off and sweep figures use: the first headline table's (layout
    ``MbTable2``), else the first untargeted attack at its budget nearest 5 %."""
    if store.config is None:
        return None
    for table in store.config.tables:
        if layout_of(table).headline:
            return table
    for attack in store.config.attacks:
        if attack.kind == "untargeted":
            return TableConfig(name="headline", layout=MbTable2.name, source=attack.name,
                               attack=attack.attacks[0],
                               budget=min(attack.budgets, key=lambda b: abs(b - 0.05)))
    return None


def _robustness_plots(store: ResultsStore, block: pd.DataFrame, where: str, name: str,
                      folder: Path) -> list:
    plots = []
    for attack in store.config.attacks if store.config else []:
        if attack.kind != "untargeted" or len(attack.budgets) < 2:
            continue
        rows = block[(block.spec == attack.name) & (block.metric == "recall") & (block.k == 20)]
        if rows.empty:
            continue
        clean = clean_rows(block[(block.metric == "recall") & (block.k == 20)
                                 & block.variant.isin(set(rows.variant))])
        path = plot_robustness_curves(
            clean, rows, folder / f"{name}-robustness-{slug(attack.name)}.png",
            f"{where}: test Recall@20 under untargeted {attack.norm.upper()} feature attacks "
            "vs budget, per defense")
        plots.append((path, f"Robustness vs budget per defense ('{attack.name}'; "
                            "modality-balancing paper Fig. 5)."))
    return plots


def _margin_plot(block: pd.DataFrame, where: str, name: str, folder: Path) -> list:
    margins = block[block.protocol == "margin"]
    if not len(margins):
        return []
    budget = float(margins.budget.iloc[0])
    path = plot_margin_bars(margins, folder / f"{name}-margins.png",
                            f"{where}: per-modality score margins before and after FGSM-L2 r = "
                            f"{100 * budget:g} % (test triples)")
    return [(path, "Modality margins before/after the attack (modality-balancing paper Fig. 1a "
                   "/ 6a).")]


def _tradeoff_plot(store: ResultsStore, block: pd.DataFrame, where: str, name: str, folder: Path,
                   headline: TableConfig | None) -> list:
    """Clean accuracy vs attack gain: the gain of the first trade-off table's promotion attack
    (layout ``BtTable2``), else the relative Recall@20 drop under the headline attack."""
    tables = store.config.tables if store.config else []
    promo = next((t for t in tables if layout_of(t).tradeoff), None)
    if promo is not None:
        gain, metric, k, x_label = _promotion_gain(store, block, promo)
    elif headline is not None:
        gain, metric, k, x_label = _drop_gain(store, block, headline)
    else:
        return []
    points = _points(clean_rows(block[(block.metric == metric) & (block.k == k)]), gain)
    if len(points) < 2:
        return []
    path = plot_tradeoff(points, folder / f"{name}-tradeoff.png",
                         f"{where}: clean accuracy vs attack gain per defense (up and left is "
                         "better)", x_label, f"clean test {LONG_METRIC[metric]}@{k}")
    return [(path, "Clean accuracy vs attack gain per defense (Band Together Fig. 6).")]


def _promotion_gain(store: ResultsStore, block: pd.DataFrame,
                    promo: TableConfig) -> tuple[pd.DataFrame, str, int, str]:
    """RI (%) of FGSM promotion without alignment at the table's budget; clean NDCG@10."""
    source = layout_of(promo).source(store, promo)
    gain = block[(block.spec == source) & (block.population == "attack_users") & (block.k == 50)
                 & (block.metric == "ri_percent") & (block.attack == "promotion-fgsm")
                 & near(block.budget, promo.budget)]
    gain = gain[[math.isclose(float(json_param(p, "beta", 0.0)), 0.0) for p in gain.attack_params]]
    x_label = (f"attack gain: RI (%) of HR@50 under FGSM promotion, r = "
               f"{100 * promo.budget:g} %")
    return gain, "ndcg", 10, x_label


def _drop_gain(store: ResultsStore, block: pd.DataFrame,
               headline: TableConfig) -> tuple[pd.DataFrame, str, int, str]:
    """Relative Recall@20 drop (%) under the headline attack; clean Recall@20."""
    source = layout_of(headline).source(store, headline)
    attacked = block[(block.spec == source) & (block.attack == headline.attack)
                     & near(block.budget, headline.budget) & (block.metric == "recall")
                     & (block.k == 20) & (block.population == "all")]
    clean = clean_rows(block[(block.metric == "recall") & (block.k == 20)])
    base = clean.set_index(["variant", "seed"])["value"]
    gain = attacked.assign(value=[100 * (1 - r.value / base.get((r.variant, r.seed), math.nan))
                                  for r in attacked.itertuples()])
    x_label = (f"attack gain: relative Recall@20 drop (%) under {headline.attack.upper()}, "
               f"r = {100 * headline.budget:g} %")
    return gain, "recall", 20, x_label


def _points(clean: pd.DataFrame, gain: pd.DataFrame) -> pd.DataFrame:
    y = clean.groupby("variant", sort=False)["value"].agg(["mean", "std"])
    x = gain.groupby("variant", sort=False)["value"].agg(["mean", "std"])
    both = x.add_suffix("_x").join(y.add_suffix("_y"), how="inner").fillna(0.0).reset_index()
    return both.rename(columns={"mean_x": "x", "std_x": "x_std", "mean_y": "y", "std_y": "y_std"})


def _sweep_plots(store: ResultsStore, block: pd.DataFrame, where: str, name: str, folder: Path,
                 headline: TableConfig | None) -> list:
    if headline is None:
        return []
    plots = []
    # a sweep group is measured by whichever untargeted entry lists it (the packaged configs
    # give the sweeps their own entry), not necessarily the headline table's source
    attacks = store.config.attacks if store.config else []
    untargeted = {a.name for a in attacks if a.kind == "untargeted"}
    for group, rows in block.groupby("group", sort=False):
        key = _swept_key(rows)
        if key is None:
            continue
        rows = rows.assign(x=rows.setting.map(lambda s, key=key: float(json.loads(s)[key])))
        wanted = (rows.metric == "recall") & (rows.k == 20)
        clean = clean_rows(rows[wanted])
        attacked = rows[wanted & rows.spec.isin(untargeted) & (rows.attack == headline.attack)
                        & near(rows.budget, headline.budget)]
        attacked = attacked.drop_duplicates(["variant", "seed", "x"])
        if clean.empty or attacked.empty:
            continue
        path = plot_sweep(clean, attacked, folder / f"{name}-sweep-{slug(group)}.png",
                          f"{where}: {group}: clean and {headline.attack.upper()} r = "
                          f"{100 * headline.budget:g} % Recall@20 vs {key}", key, "test Recall@20")
        plots.append((path, f"Sweep of {key} ('{group}'; modality-balancing paper Fig. 3–4)."))
    return plots


def _swept_key(rows: pd.DataFrame) -> str | None:
    """The one setting a sweep group varies (not a defense budget ε nor the modality)."""
    settings = rows.setting.dropna().map(json.loads)
    keys = {k for s in settings for k in s}
    if len(keys) != 1:
        return None
    key = next(iter(keys))
    if key.endswith(".eps") or key == "modality" or len({s[key] for s in settings}) < 2:
        return None
    return key


# ---------------------------------------------------------------- rendering
def render_markdown(blocks: list[Block], out: Path) -> str:
    parts = []
    for b in blocks:
        if b.kind == "title":
            parts.append(f"# {b.content}")
        elif b.kind == "heading":
            parts.append(f"## {b.content}")
        elif b.kind == "text":
            parts.append(b.content)
        elif b.kind == "table":
            parts.append(b.content.markdown())
        elif b.kind == "frame":
            parts.append(b.content.to_markdown(index=False, floatfmt=".3g"))
        elif b.kind == "image":
            link = b.content.relative_to(out).as_posix()
            parts.append(f"![{b.caption}]({link})\n\n*{b.caption}*")
    return "\n\n".join(parts) + "\n"


def render_html(blocks: list[Block], name: str) -> str:
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(name)}"
             f"</title><style>{CSS}</style></head><body>"]
    for b in blocks:
        if b.kind == "title":
            parts.append(f"<h1>{html.escape(b.content)}</h1>")
        elif b.kind == "heading":
            parts.append(f"<h2>{html.escape(b.content)}</h2>")
        elif b.kind == "text":
            parts.append(f"<p>{_inline(b.content)}</p>")
        elif b.kind == "table":
            parts.append(b.content.html())
        elif b.kind == "frame":
            parts.append(b.content.to_html(index=False, float_format=lambda v: f"{v:.3g}",
                                           border=0))
        elif b.kind == "image":
            data = base64.b64encode(Path(b.content).read_bytes()).decode("ascii")
            caption = html.escape(b.caption)
            parts.append(f"<figure><img alt='{caption}' src='data:image/png;base64,{data}'>"
                         f"<figcaption>{caption}</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _inline(text: str) -> str:
    """The little markdown the header uses (**bold**, `code`) as HTML."""
    escaped = html.escape(text)
    for mark, tag in (("**", "b"), ("`", "code")):
        pieces = escaped.split(mark)
        escaped = "".join(p if i % 2 == 0 else f"<{tag}>{p}</{tag}>"
                          for i, p in enumerate(pieces))
    return escaped
