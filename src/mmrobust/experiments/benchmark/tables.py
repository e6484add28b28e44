"""Paper-layout tables built from a results store: mean ± std over seeds, best in bold,
second best underlined, paired tests across seeds marked (``stats``).

* ``mb-table2``: modality-balancing paper Table 2/3 (rows: defenses; columns: clean and
  attacked Recall/NDCG@10/20); with a sweep group as rows, its Figure 3–4 numbers;
* ``bt-table2``: Band Together Table 2 (rows: defense × promotion attack with/without
  alignment; HR@50 before/after on the attack users, RI, clean Recall/NDCG@20);
* ``amr-table3``: AMR paper Table 3 (relative NDCG@10 drop under attack, sampled protocol,
  per ε and model variant);
* ``robustness``: the attacked metric per attack and budget (modality-balancing Figure 5);
* ``budget-grid``: defense budget × attack budget (Band Together Figure 5 / Tables 4–5).
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from mmrobust.experiments.benchmark.config import TableConfig
from mmrobust.experiments.benchmark.stats import ALPHA, PairedTest, legend, paired_test
from mmrobust.experiments.benchmark.store import ResultsStore
from mmrobust.experiments.results import SHORT_METRIC as SHORT


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
        return float(np.std(list(self.values.values()), ddof=1)) if len(self.values) > 1 else 0.0

    def text(self) -> str:
        if not self.values:
            return "–"
        if not math.isfinite(self.mean):
            return "∞" if self.mean > 0 else ("−∞" if self.mean < 0 else "n/a")
        body = f"{self.mean:.{self.digits}f}"
        return body + (f" ± {self.std:.{self.digits}f}" if len(self.values) > 1 else "")


@dataclass
class PaperTable:
    name: str
    title: str
    columns: list[str]
    n_index: int
    rows: list[list[Any]]
    legend: list[str] = field(default_factory=list)
    tests: pd.DataFrame = field(default_factory=pd.DataFrame)

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

    def _render(self, entry: Any, bold: tuple[str, str], under: tuple[str, str], escape: Callable[[str], str]) -> str:
        if not isinstance(entry, Entry):
            return escape(str(entry))
        text = escape(entry.text())
        if entry.rank == 1:
            text = f"{bold[0]}{text}{bold[1]}"
        elif entry.rank == 2:
            text = f"{under[0]}{text}{under[1]}"
        return text + entry.marks

    def markdown(self) -> str:
        lines = [f"**{self.title}**", "", "| " + " | ".join(self.columns) + " |",
                 "|" + "|".join("---" if i < self.n_index else "---:" for i in range(len(self.columns))) + "|"]
        for r in self.rows:
            lines.append("| " + " | ".join(self._render(v, ("**", "**"), ("<u>", "</u>"), _md_escape) for v in r) + " |")
        return "\n".join(lines + [""] + [f"{line}  " for line in self.legend])

    def html(self) -> str:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in self.columns)
        body = "".join("<tr>" + "".join(f"<td>{self._render(v, ('<b>', '</b>'), ('<u>', '</u>'), html.escape)}</td>"
                                         for v in r) + "</tr>" for r in self.rows)
        legend_html = "".join(f"<p class='legend'>{html.escape(line)}</p>" for line in self.legend)
        return (f"<p class='caption'>{html.escape(self.title)}</p><table><thead><tr>{head}</tr></thead>"
                f"<tbody>{body}</tbody></table>{legend_html}")

    def rich_rows(self) -> list[list[str]]:
        """Rows for a rich table: best in bold, second best underlined."""
        return [[self._render(v, ("[bold]", "[/bold]"), ("[underline]", "[/underline]"), _rich_escape) for v in r]
                for r in self.rows]


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
    return frame[(frame.spec == "train") & (frame.attack == "none") & (frame.protocol == "full") & (frame.split == "test")]


def _source(store: ResultsStore, spec: TableConfig, *kinds: str) -> str | None:
    return spec.source or store.first_source(*kinds)


def near(column: pd.Series, value: float) -> pd.Series:
    return pd.Series(np.isclose(column.to_numpy(dtype=float), value), index=column.index)


def json_param(text: str | None, key: str, default: Any = None) -> Any:
    try:
        return json.loads(text or "{}").get(key, default)
    except json.JSONDecodeError:
        return default


def _pct(budget: float) -> str:
    return f"{100 * budget:g} %"


def _long(frame: pd.DataFrame, row: Callable, col: Callable, group: Callable, better: str,
          value: Callable | None = None) -> list[dict[str, Any]]:
    out = []
    for r in frame.itertuples():
        out.append({"row": row(r), "col": col(r), "group": group(r), "variant": r.variant, "seed": int(r.seed),
                    "value": float(value(r) if value else r.value), "better": better})
    return out


def mb_table2(store: ResultsStore, spec: TableConfig) -> tuple[list[dict], list[str], str]:
    frame = _variants(store.frame, spec.variants)
    keys = [(m, k) for m in ("recall", "ndcg") for k in (10, 20)]
    wanted = frame.metric.isin(["recall", "ndcg"]) & frame.k.isin([10, 20])
    source = _source(store, spec, "untargeted")
    attacked = frame[wanted & (frame.spec == source) & (frame.attack == spec.attack) & near(frame.budget, spec.budget)
                     & (frame.protocol == "full") & (frame.population == "all")]
    cols = [f"{scenario} {SHORT[m]}@{k}" for scenario in ("Clean", "Attack") for m, k in keys]
    long = []
    for scenario, part in (("Clean", clean_rows(frame[wanted])), ("Attack", attacked)):
        long += _long(part, lambda r: (r.dataset, r.model, r.variant),
                      lambda r, s=scenario: f"{s} {SHORT[r.metric]}@{r.k}",
                      lambda r, s=scenario: (r.dataset, r.model, f"{s} {SHORT[r.metric]}@{r.k}"), "high")
    norms = attacked.norm.dropna()
    norm = norms.iloc[0].upper() if len(norms) else "L2"
    title = spec.title or (f"Modality-balancing paper Table 2 layout: clean and attacked "
                           f"({spec.attack.upper()}-{norm}, r = {_pct(spec.budget)}) test metrics")
    return long, cols, title


def bt_table2(store: ResultsStore, spec: TableConfig) -> tuple[list[dict], list[str], str]:
    frame = _variants(store.frame, spec.variants)
    source = _source(store, spec, "promotion")
    promo = frame[(frame.spec == source) & (frame.population == "attack_users") & (frame.k == 50)
                  & near(frame.budget, spec.budget) & frame.metric.isin(["hr_before", "hr_after", "ri_percent"])]
    label = {"hr_before": "HR@50 before (%)", "hr_after": "HR@50 after (%)", "ri_percent": "RI (%)"}
    better = {"hr_before": "none", "hr_after": "low", "ri_percent": "low"}
    long = []
    attacks: dict[tuple, str] = {}
    for r in promo.itertuples():
        beta = float(json_param(r.attack_params, "beta", 0.0))
        name = r.attack.removeprefix("promotion-").upper() + (f" w/ L_align (β={beta:g})" if beta > 0 else "")
        attacks[(r.dataset, r.model, r.variant, r.seed, name)] = name
        scale = 1.0 if r.metric == "ri_percent" else 100.0
        long.append({"row": (r.dataset, r.model, r.variant, name), "col": label[r.metric],
                     "group": (r.dataset, r.model, name, label[r.metric]), "variant": r.variant, "seed": int(r.seed),
                     "value": scale * float(r.value), "better": better[r.metric]})
    clean = clean_rows(frame[frame.metric.isin(["recall", "ndcg"]) & (frame.k == 20)])
    for (dataset, model, variant, seed, name) in attacks:
        rows = clean[(clean.dataset == dataset) & (clean.model == model) & (clean.variant == variant) & (clean.seed == seed)]
        for r in rows.itertuples():
            col = f"clean {SHORT[r.metric]}@20"
            long.append({"row": (dataset, model, variant, name), "col": col, "group": (dataset, model, name, col),
                         "variant": variant, "seed": int(seed), "value": float(r.value), "better": "high"})
    cols = list(label.values()) + ["clean R@20", "clean N@20"]
    title = spec.title or (f"Band Together Table 2 layout: promotion attacks at r = {_pct(spec.budget)} "
                           "(HR@50 of the targets on the attack users, RI) and clean accuracy")
    return long, cols, title


def amr_table3(store: ResultsStore, spec: TableConfig) -> tuple[list[dict], list[str], str]:
    frame = _variants(store.frame, spec.variants)
    source = _source(store, spec, "sampled")
    rows = frame[(frame.spec == source) & (frame.protocol == "sampled") & (frame.metric == spec.metric)
                 & (frame.k == spec.k)]
    clean = rows[rows.attack == "none"].set_index(["dataset", "model", "variant", "seed"])["value"]
    attacked = rows[rows.attack == spec.attack]
    long = []
    for r in attacked.itertuples():
        base = clean.get((r.dataset, r.model, r.variant, r.seed))
        if base is None or not base:
            continue
        col = f"ε={r.budget:g} {r.variant}"
        long.append({"row": (r.dataset, r.model), "col": col, "group": (r.dataset, r.model, float(r.budget)),
                     "variant": r.variant, "seed": int(r.seed), "value": 100.0 * (r.value / base - 1.0),
                     "better": "high"})
    budgets = sorted(attacked.budget.unique())
    variants = list(dict.fromkeys(attacked.variant))
    cols = [f"ε={b:g} {v}" for b in budgets for v in variants]
    title = spec.title or (f"AMR paper Table 3 layout: relative change of {SHORT.get(spec.metric, spec.metric)}@{spec.k} "
                           f"(%) under {spec.attack.upper()} at each ε, sampled protocol (lower drop is better)")
    return long, cols, title


def robustness(store: ResultsStore, spec: TableConfig) -> tuple[list[dict], list[str], str]:
    frame = _variants(store.frame, spec.variants)
    source = _source(store, spec, "untargeted")
    wanted = (frame.metric == spec.metric) & (frame.k == spec.k)
    attacked = frame[wanted & (frame.spec == source) & (frame.protocol == "full") & (frame.population == "all")]
    col = lambda r: "clean" if r.attack == "none" else f"{r.attack.upper()} r={_pct(r.budget)}"  # noqa: E731
    clean = clean_rows(frame[wanted])
    if len(attacked):
        clean = clean[clean.variant.isin(set(attacked.variant))]
    long = []
    for part in (clean, attacked):
        long += _long(part, lambda r: (r.dataset, r.model, r.variant), col,
                      lambda r: (r.dataset, r.model, col(r)), "high")
    pairs = sorted({(r.attack, float(r.budget)) for r in attacked.itertuples()}, key=lambda p: (p[0], p[1]))
    cols = ["clean"] + [f"{a.upper()} r={_pct(b)}" for a, b in pairs]
    title = spec.title or (f"Robustness vs budget: test {SHORT.get(spec.metric, spec.metric)}@{spec.k} per attack and "
                           "budget r (modality-balancing paper Figure 5 layout)")
    return long, cols, title


def budget_grid(store: ResultsStore, spec: TableConfig) -> tuple[list[dict], list[str], str]:
    frame = _variants(store.frame, spec.variants)
    source = _source(store, spec, "promotion", "untargeted")
    if store.attack_kind(source) == "promotion":
        rows = frame[(frame.spec == source) & (frame.attack == f"promotion-{spec.attack}") & (frame.k == 50)
                     & (frame.population == "attack_users") & (frame.metric == "ri_percent")]
        rows = rows[[math.isclose(float(json_param(p, "beta", 0.0)), spec.beta) for p in rows.attack_params]]
        value, what = (lambda r: r.value), f"RI (%) of {spec.attack.upper()} promotion (HR@50, attack users)"
    else:
        rows = frame[(frame.spec == source) & (frame.attack == spec.attack) & (frame.metric == spec.metric)
                     & (frame.k == spec.k) & (frame.population == "all")]
        clean = clean_rows(frame[(frame.metric == spec.metric) & (frame.k == spec.k)])
        base = clean.set_index(["dataset", "model", "variant", "seed"])["value"]
        value = lambda r: 100.0 * (1.0 - r.value / base.get((r.dataset, r.model, r.variant, r.seed), math.nan))  # noqa: E731
        what = f"relative {SHORT.get(spec.metric, spec.metric)}@{spec.k} drop (%) under {spec.attack.upper()}"
    col = lambda r: f"attack r={_pct(r.budget)}"  # noqa: E731
    long = _long(rows, lambda r: (r.dataset, r.model, _defense_budget(r)), col,
                 lambda r: (r.dataset, r.model, col(r)), "low", value)
    cols = [f"attack r={_pct(b)}" for b in sorted(rows.budget.unique())]
    title = spec.title or f"Defense budget × attack budget: {what} (Band Together Figure 5 / Tables 4–5 layout)"
    return long, cols, title


def _defense_budget(r: Any) -> str:
    setting = json.loads(r.setting or "{}")
    eps = [v for k, v in setting.items() if k.endswith(".eps")]
    return f"{r.variant}" if not eps else f"defense r={_pct(float(eps[0]))}"


LAYOUT_BUILDERS: dict[str, Callable[[ResultsStore, TableConfig], tuple[list[dict], list[str], str]]] = {
    "mb-table2": mb_table2, "bt-table2": bt_table2, "amr-table3": amr_table3, "robustness": robustness,
    "budget-grid": budget_grid}
INDEX = {"mb-table2": ["dataset", "model", "defense"], "bt-table2": ["dataset", "model", "defense", "attack"],
         "amr-table3": ["dataset", "model"], "robustness": ["dataset", "model", "defense"],
         "budget-grid": ["dataset", "model", "defense"]}
DIGITS = {"mb-table2": 4, "robustness": 4, "amr-table3": 1, "budget-grid": 1}


def build_table(store: ResultsStore, spec: TableConfig) -> PaperTable:
    """A paper-layout table: mean ± std over seeds, ranks and paired tests per comparison group."""
    long, cols, title = LAYOUT_BUILDERS[spec.layout](store, spec)
    baseline = spec.baseline or (store.config.clean_label() if store.config else None)
    entries = _entries(long, spec.layout)
    tests = _mark(long, entries, baseline)
    row_keys = list(dict.fromkeys(d["row"] for d in long))
    index = INDEX[spec.layout]
    rows, last = [], None
    for key in row_keys:
        labels = list(key)
        shown = [("" if last is not None and last[:i + 1] == key[:i + 1] and i < len(key) - 1 else v)
                 for i, v in enumerate(labels)]
        rows.append(shown + [entries.get((key, c), Entry({})) for c in cols])
        last = key
    seeds = sorted({d["seed"] for d in long})
    lines = [f"Mean ± std over seeds {seeds} (n = {len(seeds)}). Best per comparison in bold, second best "
             f"underlined ({_direction(spec.layout)})."] + legend(len(seeds), baseline)
    frame = pd.DataFrame(tests)
    if len(frame):
        frame.insert(0, "table", spec.name)
    return PaperTable(spec.name, title, index + cols, len(index), rows, lines, frame)


def _direction(layout: str) -> str:
    return {"mb-table2": "higher is better", "robustness": "higher is better",
            "amr-table3": "a smaller drop is better", "budget-grid": "lower is better (a weaker attack)",
            "bt-table2": "lower HR after and RI are better, higher clean accuracy is better; "
                         "compared among defenses under the same attack"}[layout]


def _entries(long: list[dict], layout: str) -> dict[tuple, Entry]:
    entries: dict[tuple, Entry] = {}
    for d in long:
        entry = entries.setdefault((d["row"], d["col"]), Entry({}, _digits(layout, d["col"])))
        entry.values[d["seed"]] = d["value"]
    return entries


def _digits(layout: str, col: str) -> int:
    if layout == "bt-table2":
        return 4 if col.startswith("clean") else (1 if col.startswith("RI") else 3)
    return DIGITS.get(layout, 2)


def _mark(long: list[dict], entries: dict[tuple, Entry], baseline: str | None) -> list[dict[str, Any]]:
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
        if baseline in members:
            base = entries[members[baseline]]
            for variant, key in members.items():
                if variant != baseline:
                    test = paired_test(entries[key].values, base.values)
                    entries[key].marks += ("†" if test.t_significant else "") + ("‡" if test.w_significant else "")
                    tests.append(_test_row(group, variant, baseline, test))
        if len(ranked) > 1:
            (v1, k1), (v2, k2) = ranked[0], ranked[1]
            test = paired_test(entries[k1].values, entries[k2].values)
            if test.t_significant:
                entries[k1].marks += "§"
            tests.append(_test_row(group, v1, v2, test, "best vs second"))
    return tests


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


def _test_row(group: Any, a: str, b: str, test: PairedTest, kind: str = "vs undefended") -> dict[str, Any]:
    return {"comparison": kind, "group": " / ".join(str(g) for g in group), "a": a, "b": b, "n": test.n,
            "mean difference (a − b)": test.diff, "t-test p": test.t_p, "Wilcoxon p": test.w_p,
            f"significant (t, p < {ALPHA})": test.t_significant, "note": test.note}


def build_tables(store: ResultsStore) -> list[PaperTable]:
    """Every table of the store's benchmark config."""
    return [build_table(store, t) for t in (store.config.tables if store.config else [])]
