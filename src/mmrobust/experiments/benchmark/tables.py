"""Paper-layout tables built from a results store: mean ± std over seeds, best in bold,
second best underlined, paired tests across seeds marked (``stats``).

Every layout of the config vocabulary (``config.LayoutName``) is one :class:`Layout`
subclass, its metadata as class attributes, collected in the registry ``LAYOUTS``:

* ``mb-table2`` (:class:`MbTable2`): modality-balancing paper Table 2/3 (rows: defenses;
  columns: clean and attacked Recall/NDCG@10/20); with a sweep group as rows, its
  Figure 3–4 numbers;
* ``bt-table2`` (:class:`BtTable2`): Band Together Table 2 (rows: defense × promotion
  attack with/without alignment; HR@50 before/after on the attack users, RI, clean
  Recall/NDCG@20);
* ``amr-table3`` (:class:`AmrTable3`): AMR paper Table 3 (relative NDCG@10 change under
  attack, sampled protocol, per ε and model variant);
* ``robustness`` (:class:`Robustness`): the attacked metric per attack and budget
  (modality-balancing paper Figure 5);
* ``budget-grid`` (:class:`BudgetGrid`): defense budget × attack budget (Band Together
  Figure 5 / Tables 4–5), with its heatmaps.

``build_table`` looks the layout up once and asks it for the long-form values, the digits of
each column, the legend's direction of "better" and the figures it adds to the report.
"""

from __future__ import annotations

import html
import json
import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, get_args

import numpy as np
import pandas as pd

from mmrobust.experiments.benchmark.config import LayoutName, TableConfig
from mmrobust.experiments.benchmark.figures import plot_budget_heatmap
from mmrobust.experiments.benchmark.grid import slug
from mmrobust.experiments.benchmark.stats import ALPHA, PairedTest, legend, paired_test
from mmrobust.experiments.benchmark.store import ResultsStore
from mmrobust.experiments.results import SHORT_METRIC as SHORT

#: long-form values: one dict per seed and table cell (see :meth:`Layout.build`)
Long = list[dict[str, Any]]
#: what a layout builds: long-form values, value columns, title
Built = tuple[Long, list[str], str]


@dataclass
class Entry:
    """One table cell: per-seed values, rank in its comparison group, significance marks."""

    values: dict[int, float]
    digits: int = 4
    rank: int = 0
    marks: str = ""

    @property
    def mean(self) -> float:
        return float(np.mean(list(self.values.values()))) if self.values else math.nan

    @property
    def std(self) -> float:
        if len(self.values) < 2:
            return 0.0
        return float(np.std(list(self.values.values()), ddof=1))

    def text(self) -> str:
        if not self.values:
            return "–"
        if not math.isfinite(self.mean):
            return "∞" if self.mean > 0 else ("−∞" if self.mean < 0 else "n/a")
        body = f"{self.mean:.{self.digits}f}"
        return body + (f" ± {self.std:.{self.digits}f}" if len(self.values) > 1 else "")


@dataclass
class PaperTable:
    """A built paper layout: index columns then value columns (index labels left blank where
    they repeat the row above), legend lines, every paired test, and the layout it came from."""

    name: str
    title: str
    columns: list[str]
    n_index: int
    rows: list[list[Any]]
    legend: list[str] = field(default_factory=list)
    tests: pd.DataFrame = field(default_factory=pd.DataFrame)
    layout: Layout | None = field(default=None, compare=False, repr=False)

    @property
    def empty(self) -> bool:
        return not self.rows

    def cell(self, row: tuple[str, ...], column: str) -> Entry | None:
        """The entry at the row whose index labels are ``row`` (blanks filled) and ``column``."""
        j = self.columns.index(column)
        for labels, values in zip(self._labels(), self.rows, strict=True):
            if tuple(labels) == tuple(row):
                return values[j]
        return None

    def _labels(self) -> list[list[str]]:
        out, last = [], [""] * self.n_index
        for r in self.rows:
            labels = [str(v) if v != "" else last[i] for i, v in enumerate(r[:self.n_index])]
            out.append(labels)
            last = labels
        return out

    def means(self) -> pd.DataFrame:
        """Means as a frame (index labels filled in), for comparisons and tests."""
        data = [labels + [v.mean if isinstance(v, Entry) else v for v in r[self.n_index:]]
                for labels, r in zip(self._labels(), self.rows, strict=True)]
        return pd.DataFrame(data, columns=self.columns)

    def figures(self, store: ResultsStore, folder: Path) -> list[tuple[Path, str]]:
        """The report figures of this table's layout: [(png path, caption)]."""
        return self.layout.figures(store, self, folder) if self.layout else []

    def _render(self, entry: Any, bold: tuple[str, str], under: tuple[str, str],
                escape: Callable[[str], str]) -> str:
        if not isinstance(entry, Entry):
            return escape(str(entry))
        text = escape(entry.text())
        if entry.rank == 1:
            text = f"{bold[0]}{text}{bold[1]}"
        elif entry.rank == 2:
            text = f"{under[0]}{text}{under[1]}"
        return text + entry.marks

    def markdown(self) -> str:
        align = ["---" if i < self.n_index else "---:" for i in range(len(self.columns))]
        lines = [f"**{self.title}**", "", "| " + " | ".join(self.columns) + " |",
                 "|" + "|".join(align) + "|"]
        for r in self.rows:
            cells = [self._render(v, ("**", "**"), ("<u>", "</u>"), _md_escape) for v in r]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines + [""] + [f"{line}  " for line in self.legend])

    def html(self) -> str:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in self.columns)
        body = "".join("<tr>" + "".join(f"<td>{self._html_cell(v)}</td>" for v in r) + "</tr>"
                       for r in self.rows)
        legend_html = "".join(f"<p class='legend'>{html.escape(line)}</p>" for line in self.legend)
        return (f"<p class='caption'>{html.escape(self.title)}</p><table><thead><tr>{head}</tr>"
                f"</thead><tbody>{body}</tbody></table>{legend_html}")

    def _html_cell(self, entry: Any) -> str:
        return self._render(entry, ("<b>", "</b>"), ("<u>", "</u>"), html.escape)

    def rich_rows(self) -> list[list[str]]:
        """Rows for a rich table: best in bold, second best underlined."""
        marks = ("[bold]", "[/bold]"), ("[underline]", "[/underline]")
        return [[self._render(v, *marks, _rich_escape) for v in r] for r in self.rows]


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def _rich_escape(text: str) -> str:
    return text.replace("[", "\\[")


# ---------------------------------------------------------- long-form values
LONG = ["row", "col", "group", "variant", "seed", "value", "better"]


def _variants(frame: pd.DataFrame, wanted: list[str] | None) -> pd.DataFrame:
    if wanted is None:
        return frame
    return frame[frame["variant"].isin(wanted) | frame["group"].isin(wanted)]


def clean_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """The runs' own clean test metrics (full ranking)."""
    return frame[(frame.spec == "train") & (frame.attack == "none") & (frame.protocol == "full")
                 & (frame.split == "test")]


def near(column: pd.Series, value: float) -> pd.Series:
    return pd.Series(np.isclose(column.to_numpy(dtype=float), value), index=column.index)


def json_param(text: str | None, key: str, default: Any = None) -> Any:
    try:
        return json.loads(text or "{}").get(key, default)
    except json.JSONDecodeError:
        return default


def _pct(budget: float) -> str:
    return f"{100 * budget:g} %"


def _metric(spec: TableConfig) -> str:
    return f"{SHORT.get(spec.metric, spec.metric)}@{spec.k}"


def _long(frame: pd.DataFrame, row: Callable, col: Callable, better: str,
          value: Callable | None = None) -> Long:
    """One value per result row; rows compared within (dataset, model, column)."""
    return [{"row": row(r), "col": col(r), "group": (r.dataset, r.model, col(r)),
             "variant": r.variant, "seed": int(r.seed),
             "value": float(value(r) if value else r.value), "better": better}
            for r in frame.itertuples()]


def _by_variant(r: Any) -> tuple:
    return (r.dataset, r.model, r.variant)


# ------------------------------------------------------------------- layouts
class Layout(ABC):
    """A paper layout (metadata as class attributes, registered in ``LAYOUTS``).

    ``build`` returns the long-form values — one dict per seed and cell with ``row`` (the
    index labels), ``col``, ``group`` (the rows compared with each other), ``variant``,
    ``seed``, ``value`` and ``better`` (``high``, ``low`` or ``none``) — the value columns
    and the title; ``build_table`` ranks, tests and renders them.
    """

    #: the ``layout:`` of a config table (one of ``config.LayoutName``)
    name: ClassVar[str]
    #: the index columns (the labels of a row)
    index: ClassVar[list[str]]
    #: digits of the entries (``digits_for`` may choose per column)
    digits: ClassVar[int]
    #: which way is better, shown in the legend's "(… )"
    direction: ClassVar[str]
    #: measurement kinds read when the table names no ``source`` (the first entry of these)
    sources: ClassVar[tuple[str, ...]] = ("untargeted",)
    #: the report's trade-off and sweep figures use the attack of the first such table
    headline: ClassVar[bool] = False
    #: the report's trade-off figure takes its attack gain from the first such table
    tradeoff: ClassVar[bool] = False

    def digits_for(self, column: str) -> int:
        return self.digits

    def source(self, store: ResultsStore, spec: TableConfig) -> str | None:
        """The attack entry the table reads: its ``source``, else the first of ``sources``."""
        return spec.source or store.first_source(*self.sources)

    @abstractmethod
    def build(self, store: ResultsStore, spec: TableConfig) -> Built:
        """The long-form values, the value columns and the title."""

    def figures(self, store: ResultsStore, table: PaperTable,
                folder: Path) -> list[tuple[Path, str]]:
        """Figures the layout adds to the report: [(png path, caption)]."""
        return []


class MbTable2(Layout):
    """Modality-balancing paper (Shang et al., ACM MM'23) Table 2/3: clean and attacked test
    Recall/NDCG@10/20 per defense; with a sweep group as rows, the numbers of its Figures
    3–4.  Its attack is the report's headline attack."""

    name = "mb-table2"
    index = ["dataset", "model", "defense"]
    digits = 4
    direction = "higher is better"
    headline = True

    def build(self, store: ResultsStore, spec: TableConfig) -> Built:
        frame = _variants(store.frame, spec.variants)
        wanted = frame.metric.isin(["recall", "ndcg"]) & frame.k.isin([10, 20])
        attacked = frame[wanted & (frame.spec == self.source(store, spec))
                         & (frame.attack == spec.attack) & near(frame.budget, spec.budget)
                         & (frame.protocol == "full") & (frame.population == "all")]
        long: Long = []
        for scenario, part in (("Clean", clean_rows(frame[wanted])), ("Attack", attacked)):
            long += _long(part, _by_variant, self._column(scenario), "high")
        cols = [f"{scenario} {SHORT[m]}@{k}" for scenario in ("Clean", "Attack")
                for m in ("recall", "ndcg") for k in (10, 20)]
        return long, cols, spec.title or self._title(spec, attacked)

    @staticmethod
    def _column(scenario: str) -> Callable[[Any], str]:
        return lambda r: f"{scenario} {SHORT[r.metric]}@{r.k}"

    @staticmethod
    def _title(spec: TableConfig, attacked: pd.DataFrame) -> str:
        norms = attacked.norm.dropna()
        norm = norms.iloc[0].upper() if len(norms) else "L2"
        return (f"Modality-balancing paper Table 2 layout: clean and attacked "
                f"({spec.attack.upper()}-{norm}, r = {_pct(spec.budget)}) test metrics")


class BtTable2(Layout):
    """Band Together Table 2: per defense and promotion attack (FGSM/PGD, with and without
    the alignment loss), HR@50 of the targets on the attack users before and after the
    attack, its relative increase RI and clean Recall/NDCG@20.  Its attack gain is the x
    axis of the report's trade-off figure (Band Together Figure 6)."""

    name = "bt-table2"
    index = ["dataset", "model", "defense", "attack"]
    digits = 3
    direction = ("lower HR after and RI are better, higher clean accuracy is better; "
                 "compared among defenses under the same attack")
    sources = ("promotion",)
    tradeoff = True
    labels: ClassVar[dict[str, str]] = {"hr_before": "HR@50 before (%)",
                                        "hr_after": "HR@50 after (%)", "ri_percent": "RI (%)"}
    better: ClassVar[dict[str, str]] = {"hr_before": "none", "hr_after": "low",
                                        "ri_percent": "low"}

    def digits_for(self, column: str) -> int:
        if column.startswith("clean"):
            return 4
        return 1 if column.startswith("RI") else self.digits

    def build(self, store: ResultsStore, spec: TableConfig) -> Built:
        frame = _variants(store.frame, spec.variants)
        promo = frame[(frame.spec == self.source(store, spec))
                      & (frame.population == "attack_users") & (frame.k == 50)
                      & near(frame.budget, spec.budget) & frame.metric.isin(list(self.labels))]
        long = [self._promotion(r) for r in promo.itertuples()]
        long += self._clean(frame, dict.fromkeys((d["row"], d["seed"]) for d in long))
        cols = list(self.labels.values()) + ["clean R@20", "clean N@20"]
        title = spec.title or (f"Band Together Table 2 layout: promotion attacks at r = "
                               f"{_pct(spec.budget)} (HR@50 of the targets on the attack "
                               "users, RI) and clean accuracy")
        return long, cols, title

    def _promotion(self, r: Any) -> dict[str, Any]:
        beta = float(json_param(r.attack_params, "beta", 0.0))
        attack = r.attack.removeprefix("promotion-").upper()
        attack += f" w/ L_align (β={beta:g})" if beta > 0 else ""
        label = self.labels[r.metric]
        scale = 1.0 if r.metric == "ri_percent" else 100.0
        return {"row": (r.dataset, r.model, r.variant, attack), "col": label,
                "group": (r.dataset, r.model, attack, label), "variant": r.variant,
                "seed": int(r.seed), "value": scale * float(r.value),
                "better": self.better[r.metric]}

    @staticmethod
    def _clean(frame: pd.DataFrame, attacked: dict[tuple, None]) -> Long:
        """Clean Recall/NDCG@20 of each (defense, seed) next to each of its attacks."""
        clean = clean_rows(frame[frame.metric.isin(["recall", "ndcg"]) & (frame.k == 20)])
        long = []
        for (dataset, model, variant, attack), seed in attacked:
            rows = clean[(clean.dataset == dataset) & (clean.model == model)
                         & (clean.variant == variant) & (clean.seed == seed)]
            for r in rows.itertuples():
                col = f"clean {SHORT[r.metric]}@20"
                long.append({"row": (dataset, model, variant, attack), "col": col,
                             "group": (dataset, model, attack, col), "variant": variant,
                             "seed": int(seed), "value": float(r.value), "better": "high"})
        return long


class AmrTable3(Layout):
    """AMR paper (Tang et al., TKDE) Table 3: the relative change (%) of a metric (NDCG@10)
    under an attack at each ε, per model variant (VBPR vs AMR), sampled protocol."""

    name = "amr-table3"
    index = ["dataset", "model"]
    digits = 1
    direction = "a smaller drop is better"
    sources = ("sampled",)

    def build(self, store: ResultsStore, spec: TableConfig) -> Built:
        frame = _variants(store.frame, spec.variants)
        rows = frame[(frame.spec == self.source(store, spec)) & (frame.protocol == "sampled")
                     & (frame.metric == spec.metric) & (frame.k == spec.k)]
        clean = rows[rows.attack == "none"].set_index(["dataset", "model", "variant", "seed"])
        attacked = rows[rows.attack == spec.attack]
        long = [self._change(r, clean["value"]) for r in attacked.itertuples()]
        budgets = sorted(attacked.budget.unique())
        variants = list(dict.fromkeys(attacked.variant))
        cols = [f"ε={b:g} {v}" for b in budgets for v in variants]
        title = spec.title or (f"AMR paper Table 3 layout: relative change of {_metric(spec)} "
                               f"(%) under {spec.attack.upper()} at each ε, sampled protocol "
                               "(lower drop is better)")
        return [d for d in long if d], cols, title

    @staticmethod
    def _change(r: Any, clean: pd.Series) -> dict[str, Any]:
        """The relative change (%) of the same run's clean value; empty without one."""
        base = clean.get((r.dataset, r.model, r.variant, r.seed))
        if base is None or not base:
            return {}
        return {"row": (r.dataset, r.model), "col": f"ε={r.budget:g} {r.variant}",
                "group": (r.dataset, r.model, float(r.budget)), "variant": r.variant,
                "seed": int(r.seed), "value": 100.0 * (r.value / base - 1.0), "better": "high"}


class Robustness(Layout):
    """Modality-balancing paper Figure 5 as a table: the attacked test metric per attack and
    budget r (first column: clean), one row per defense."""

    name = "robustness"
    index = ["dataset", "model", "defense"]
    digits = 4
    direction = "higher is better"

    def build(self, store: ResultsStore, spec: TableConfig) -> Built:
        frame = _variants(store.frame, spec.variants)
        wanted = (frame.metric == spec.metric) & (frame.k == spec.k)
        attacked = frame[wanted & (frame.spec == self.source(store, spec))
                         & (frame.protocol == "full") & (frame.population == "all")]
        clean = clean_rows(frame[wanted])
        if len(attacked):
            clean = clean[clean.variant.isin(set(attacked.variant))]
        long: Long = []
        for part in (clean, attacked):
            long += _long(part, _by_variant, self._column, "high")
        pairs = sorted({(r.attack, float(r.budget)) for r in attacked.itertuples()})
        cols = ["clean"] + [f"{a.upper()} r={_pct(b)}" for a, b in pairs]
        title = spec.title or (f"Robustness vs budget: test {_metric(spec)} per attack and "
                               "budget r (modality-balancing paper Figure 5 layout)")
        return long, cols, title

    @staticmethod
    def _column(r: Any) -> str:
        return "clean" if r.attack == "none" else f"{r.attack.upper()} r={_pct(r.budget)}"


class BudgetGrid(Layout):
    """Band Together Figure 5 / Tables 4–5: defense training budget (rows) × attack budget
    (columns); entries: RI (%) of a promotion attack, or the relative drop (%) of a metric
    under an untargeted attack.  Adds a heatmap per (dataset, model) to the report."""

    name = "budget-grid"
    index = ["dataset", "model", "defense"]
    digits = 1
    direction = "lower is better (a weaker attack)"
    sources = ("promotion", "untargeted")

    def build(self, store: ResultsStore, spec: TableConfig) -> Built:
        frame = _variants(store.frame, spec.variants)
        source = self.source(store, spec)
        measure = self._promotion if store.attack_kind(source) == "promotion" else self._drop
        rows, value, what = measure(frame, source, spec)
        long = _long(rows, self._row, self._column, "low", value)
        cols = [f"attack r={_pct(b)}" for b in sorted(rows.budget.unique())]
        title = spec.title or (f"Defense budget × attack budget: {what} "
                               "(Band Together Figure 5 / Tables 4–5 layout)")
        return long, cols, title

    @staticmethod
    def _promotion(frame: pd.DataFrame, source: str | None,
                   spec: TableConfig) -> tuple[pd.DataFrame, Callable | None, str]:
        rows = frame[(frame.spec == source) & (frame.attack == f"promotion-{spec.attack}")
                     & (frame.k == 50) & (frame.population == "attack_users")
                     & (frame.metric == "ri_percent")]
        betas = [float(json_param(p, "beta", 0.0)) for p in rows.attack_params]
        rows = rows[[math.isclose(beta, spec.beta) for beta in betas]]
        return rows, None, f"RI (%) of {spec.attack.upper()} promotion (HR@50, attack users)"

    @staticmethod
    def _drop(frame: pd.DataFrame, source: str | None,
              spec: TableConfig) -> tuple[pd.DataFrame, Callable | None, str]:
        wanted = (frame.metric == spec.metric) & (frame.k == spec.k)
        rows = frame[wanted & (frame.spec == source) & (frame.attack == spec.attack)
                     & (frame.population == "all")]
        clean = clean_rows(frame[wanted]).set_index(["dataset", "model", "variant", "seed"])
        base = clean["value"]

        def drop(r: Any) -> float:
            return 100.0 * (1.0 - r.value / base.get((r.dataset, r.model, r.variant, r.seed),
                                                     math.nan))

        return rows, drop, f"relative {_metric(spec)} drop (%) under {spec.attack.upper()}"

    @staticmethod
    def _row(r: Any) -> tuple:
        setting = json.loads(r.setting or "{}")
        eps = [v for k, v in setting.items() if k.endswith(".eps")]
        defense = f"{r.variant}" if not eps else f"defense r={_pct(float(eps[0]))}"
        return (r.dataset, r.model, defense)

    @staticmethod
    def _column(r: Any) -> str:
        return f"attack r={_pct(r.budget)}"

    def figures(self, store: ResultsStore, table: PaperTable,
                folder: Path) -> list[tuple[Path, str]]:
        """A heatmap per (dataset, model) with two defense rows or more (Band Together Fig. 5)."""
        means = table.means()
        plots = []
        for (dataset, model), grid in means.groupby(["dataset", "model"], sort=False):
            grid = grid.set_index("defense")[table.columns[table.n_index:]]
            if grid.shape[0] >= 2 and grid.shape[1] >= 1:
                plots.append(self._heatmap(grid, table, dataset, model, folder))
        return plots

    @staticmethod
    def _heatmap(grid: pd.DataFrame, table: PaperTable, dataset: str, model: str,
                 folder: Path) -> tuple[Path, str]:
        grid.columns = [c.removeprefix("attack r=") for c in grid.columns]
        value_label = "RI (%) of the targets' HR@50" if "RI" in table.title else "relative drop (%)"
        path = folder / f"{slug(dataset)}-{slug(model)}-heatmap-{slug(table.name)}.png"
        plot_budget_heatmap(grid, path, f"{model} on {dataset}: {table.title}",
                            value_label + " (lower = more robust)")
        return path, "Defense budget × attack budget (Band Together Fig. 5)."


LAYOUTS: dict[str, type[Layout]] = {
    cls.name: cls for cls in (MbTable2, BtTable2, AmrTable3, Robustness, BudgetGrid)}
if set(LAYOUTS) != set(get_args(LayoutName)):
    raise RuntimeError(f"table layouts {sorted(LAYOUTS)} differ from config.LayoutName "
                       f"{sorted(get_args(LayoutName))}")


def layout_of(spec: TableConfig) -> Layout:
    """The layout of a config table."""
    return LAYOUTS[spec.layout]()


# -------------------------------------------------------------------- tables
def build_table(store: ResultsStore, spec: TableConfig) -> PaperTable:
    """A paper-layout table: mean ± std over seeds, ranks and paired tests per comparison group."""
    layout = layout_of(spec)
    long, cols, title = layout.build(store, spec)
    baseline = spec.baseline or (store.config.clean_label() if store.config else None)
    entries = _entries(long, layout)
    tests = pd.DataFrame(_mark(long, entries, baseline))
    if len(tests):
        tests.insert(0, "table", spec.name)
    seeds = sorted({d["seed"] for d in long})
    lines = [f"Mean ± std over seeds {seeds} (n = {len(seeds)}). Best per comparison in bold, "
             f"second best underlined ({layout.direction})."] + legend(len(seeds), baseline)
    return PaperTable(spec.name, title, layout.index + cols, len(layout.index),
                      _rows(long, entries, cols), lines, tests, layout)


def _rows(long: Long, entries: dict[tuple, Entry], cols: list[str]) -> list[list[Any]]:
    """One row per distinct ``row`` key; index labels repeating the row above left blank."""
    rows, last = [], None
    for key in dict.fromkeys(d["row"] for d in long):
        shown = [("" if last is not None and last[:i + 1] == key[:i + 1] and i < len(key) - 1
                  else v) for i, v in enumerate(key)]
        rows.append(shown + [entries.get((key, c), Entry({})) for c in cols])
        last = key
    return rows


def _entries(long: Long, layout: Layout) -> dict[tuple, Entry]:
    entries: dict[tuple, Entry] = {}
    for d in long:
        entry = entries.setdefault((d["row"], d["col"]), Entry({}, layout.digits_for(d["col"])))
        entry.values[d["seed"]] = d["value"]
    return entries


def _mark(long: Long, entries: dict[tuple, Entry], baseline: str | None) -> list[dict[str, Any]]:
    """Rank each comparison group, test every row against the baseline and the top two against
    each other; marks go into the entries, every test into the returned rows."""
    groups: dict[Any, dict[str, tuple]] = {}
    better: dict[Any, str] = {}
    for d in long:
        groups.setdefault(d["group"], {})[d["variant"]] = (d["row"], d["col"])
        better[d["group"]] = d["better"]
    tests = []
    for group, members in groups.items():
        if better[group] == "none":
            continue
        sign = 1.0 if better[group] == "high" else -1.0
        ranked = sorted(members.items(), key=lambda kv: -sign * entries[kv[1]].mean)
        _rank([entries[key] for _, key in ranked])
        tests += _vs_baseline(group, members, entries, baseline)
        if len(ranked) > 1:
            tests.append(_best_vs_second(group, ranked, entries))
    return tests


def _vs_baseline(group: Any, members: dict[str, tuple], entries: dict[tuple, Entry],
                 baseline: str | None) -> list[dict[str, Any]]:
    """Test every row of the group against the baseline row (marks † and ‡)."""
    if baseline not in members:
        return []
    base = entries[members[baseline]]
    tests = []
    for variant, key in members.items():
        if variant != baseline:
            test = paired_test(entries[key].values, base.values)
            entries[key].marks += ("†" if test.t_significant else "")
            entries[key].marks += ("‡" if test.w_significant else "")
            tests.append(_test_row(group, variant, baseline, test))
    return tests


def _best_vs_second(group: Any, ranked: list[tuple[str, tuple]],
                    entries: dict[tuple, Entry]) -> dict[str, Any]:
    """Test the best row against the second (mark § on the best)."""
    (v1, k1), (v2, k2) = ranked[0], ranked[1]
    test = paired_test(entries[k1].values, entries[k2].values)
    if test.t_significant:
        entries[k1].marks += "§"
    return _test_row(group, v1, v2, test, "best vs second")


def _rank(ordered: list[Entry]) -> None:
    """Rank 1 for every entry showing the best value (as displayed: ties share the rank), rank 2
    for those showing the next value; nothing when the group has a single row."""
    shown = [round(e.mean, e.digits) for e in ordered if not math.isnan(e.mean)]
    if len(ordered) < 2 or not shown:
        return
    levels = list(dict.fromkeys(shown))[:2]
    for entry in ordered:
        value = round(entry.mean, entry.digits) if not math.isnan(entry.mean) else None
        entry.rank = levels.index(value) + 1 if value in levels else 0


def _test_row(group: Any, a: str, b: str, test: PairedTest,
              kind: str = "vs undefended") -> dict[str, Any]:
    return {"comparison": kind, "group": " / ".join(str(g) for g in group), "a": a, "b": b,
            "n": test.n, "mean difference (a − b)": test.diff, "t-test p": test.t_p,
            "Wilcoxon p": test.w_p, f"significant (t, p < {ALPHA})": test.t_significant,
            "note": test.note}


def build_tables(store: ResultsStore) -> list[PaperTable]:
    """Every table of the store's benchmark config."""
    return [build_table(store, t) for t in (store.config.tables if store.config else [])]
