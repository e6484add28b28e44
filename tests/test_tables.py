"""The paper-layout registry of the benchmark tables: one class per ``LayoutName``, its
metadata, and that no other module switches on a layout string."""

from __future__ import annotations

import re
from pathlib import Path
from typing import get_args

import pandas as pd
import pytest

from mmrobust.experiments.benchmark import ResultsStore, TableConfig, build_table, parse_benchmark
from mmrobust.experiments.benchmark.config import LayoutName
from mmrobust.experiments.benchmark.store import normalise_store
from mmrobust.experiments.benchmark.tables import (
    LAYOUTS,
    AmrTable3,
    BtTable2,
    BudgetGrid,
    Entry,
    Layout,
    MbTable2,
    PaperTable,
    Robustness,
)

BENCHMARK = Path(__file__).parents[1] / "src" / "mmrobust" / "experiments" / "benchmark"


def test_registry_matches_the_config_vocabulary():
    assert set(LAYOUTS) == set(get_args(LayoutName))
    assert all(issubclass(cls, Layout) and LAYOUTS[cls.name] is cls for cls in LAYOUTS.values())


@pytest.mark.parametrize("cls,index,digits,direction", [
    (MbTable2, ["dataset", "model", "defense"], 4, "higher is better"),
    (BtTable2, ["dataset", "model", "defense", "attack"], 3,
     "lower HR after and RI are better, higher clean accuracy is better; "
     "compared among defenses under the same attack"),
    (AmrTable3, ["dataset", "model"], 1, "a smaller drop is better"),
    (Robustness, ["dataset", "model", "defense"], 4, "higher is better"),
    (BudgetGrid, ["dataset", "model", "defense"], 1, "lower is better (a weaker attack)"),
])
def test_layout_metadata(cls, index, digits, direction):
    layout = cls()
    assert (layout.index, layout.digits, layout.direction) == (index, digits, direction)
    assert layout.__doc__ and re.search(r"Table|Figure", layout.__doc__)  # what it reproduces
    if cls is not BtTable2:
        assert layout.digits_for("anything") == digits


def test_bt_table2_digits_per_column():
    layout = BtTable2()
    assert [layout.digits_for(c) for c in ("HR@50 before (%)", "HR@50 after (%)", "RI (%)",
                                           "clean R@20", "clean N@20")] == [3, 3, 1, 4, 4]


def test_report_roles_and_default_sources():
    assert [c.name for c in LAYOUTS.values() if c.headline] == ["mb-table2"]
    assert [c.name for c in LAYOUTS.values() if c.tradeoff] == ["bt-table2"]
    sources = {name: cls.sources for name, cls in LAYOUTS.items()}
    assert sources == {"mb-table2": ("untargeted",), "bt-table2": ("promotion",),
                       "amr-table3": ("sampled",), "robustness": ("untargeted",),
                       "budget-grid": ("promotion", "untargeted")}


def test_no_module_switches_on_a_layout_string():
    names = "|".join(re.escape(n) for n in LAYOUTS)
    compared = re.compile(rf"""(==|!=|\bin\b)\s*\(?["']({names})["']|["']({names})["']\s*(==|!=)""")
    for path in BENCHMARK.glob("*.py"):
        assert not compared.search(path.read_text(encoding="utf-8")), path.name


def _store() -> ResultsStore:
    rows = []
    for variant, shift in (("Multimodal", 0.0), ("A", 0.01)):
        for seed in range(3):
            for metric, k in (("recall", 10), ("recall", 20), ("ndcg", 10), ("ndcg", 20)):
                base = {"dataset": "d", "model": "vbpr", "variant": variant, "group": variant,
                        "seed": seed, "split": "test", "protocol": "full", "population": "all",
                        "metric": metric, "k": k}
                rows.append({**base, "spec": "train", "attack": "none", "budget": 0.0,
                             "value": 0.3 + shift + 0.01 * seed})
                rows.append({**base, "spec": "untargeted", "attack": "fgsm", "budget": 0.05,
                             "value": 0.1 + 2 * shift + 0.01 * seed})
    config = parse_benchmark({"defenses": [{"label": "Multimodal", "kind": "clean"},
                                           {"label": "A", "defenses": [{"name": "amr"}]}],
                              "attacks": [{"kind": "untargeted"}]})
    return ResultsStore(normalise_store(pd.DataFrame(rows)), config)


def test_build_table_asks_its_layout():
    store = _store()
    table = build_table(store, TableConfig(name="t", layout="mb-table2"))
    assert isinstance(table.layout, MbTable2) and table.n_index == 3
    assert table.columns[:4] == ["dataset", "model", "defense", "Clean R@10"]
    assert "underlined (higher is better)." in table.legend[0]
    assert table.cell(("d", "vbpr", "A"), "Attack R@20").text() == "0.1300 ± 0.0100"
    assert table.figures(store, Path("/nonexistent")) == []  # only budget grids draw figures
    robust = build_table(store, TableConfig(name="r", layout="robustness"))
    assert robust.columns == ["dataset", "model", "defense", "clean", "FGSM r=5 %"]


def test_budget_grid_draws_a_heatmap_per_dataset_and_model(tmp_path):
    rows = [["d", "vbpr", "Multimodal", Entry({0: 12.0}, 1), Entry({0: 20.0}, 1)],
            ["", "", "defense r=5 %", Entry({0: 8.0}, 1), Entry({0: 15.0}, 1)]]
    table = PaperTable("grid", "Defense budget × attack budget: RI (%)",
                       ["dataset", "model", "defense", "attack r=5 %", "attack r=10 %"], 3, rows,
                       layout=BudgetGrid())
    ((path, caption),) = table.figures(ResultsStore(pd.DataFrame()), tmp_path)
    assert path == tmp_path / "d-vbpr-heatmap-grid.png" and path.exists()
    assert "Band Together Fig. 5" in caption
