"""The one-command benchmark: configs and presets, grid expansion and reuse, resume after an
interruption, the results store and its paper tables, statistics, the report, the CLI,
optional MLflow tracking, and (real data) the quick presets of the three paper configs."""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import requires_shared_data, write_synthetic_folder
from mmrobust.cli.main import app
from mmrobust.data import DEFAULT_DATASET, build_dataset
from mmrobust.experiments.benchmark import (
    BenchmarkConfig,
    InProcessExecutor,
    ResultsStore,
    TableConfig,
    build_table,
    expand_grid,
    load_benchmark,
    packaged_configs,
    parse_benchmark,
    plan_benchmark,
    run_benchmark,
)
from mmrobust.experiments.benchmark import cells as cellstate
from mmrobust.experiments.benchmark.stats import legend, paired_test, wilcoxon_floor
from mmrobust.experiments.benchmark.store import STORE_COLUMNS, normalise_store
from mmrobust.experiments.benchmark.tracking import MlflowTracker
from mmrobust.experiments.benchmark.work import execute_cell
from mmrobust.experiments.config import ConfigError

runner = CliRunner()
SMALL = ["models.vbpr.params.embedding_size=16", "train.batch_size=256", "finetune.epochs=2"]


@pytest.fixture(scope="module")
def synth_folder(tmp_path_factory):
    return write_synthetic_folder(tmp_path_factory.mktemp("data"))


def tiny(folder, seeds=(0, 1, 2), extra=()) -> BenchmarkConfig:
    """The default benchmark's quick preset on the synthetic folder (a few seconds)."""
    return load_benchmark(
        "default", "quick", [f"datasets=[{folder}]", f"seeds={list(seeds)}", *SMALL, *extra]
    )


@pytest.fixture(scope="module")
def finished(synth_folder, tmp_path_factory):
    """An uninterrupted run of the tiny benchmark (shared by several tests)."""
    out = tmp_path_factory.mktemp("bench") / "uninterrupted"
    return run_benchmark(tiny(synth_folder), out, progress=False)


# ------------------------------------------------------------------- configs
@pytest.mark.parametrize("name", ["default", "modality-balancing", "band-together", "amr"])
def test_packaged_configs_and_presets(name):
    assert name in packaged_configs()
    base, quick, full = (load_benchmark(name, p) for p in (None, "quick", "full"))
    assert quick.preset == "quick" and full.preset == "full"
    assert len(quick.seeds) == 1 and quick.train["epochs"] <= 3 and quick.finetune.epochs <= 2
    assert len(full.seeds) >= 3 and full.tables and full.attacks
    if name != "default":
        assert full.datasets == ["tiktok", "ml100k"] and quick.datasets == ["tiktok", "ml100k"]
        assert full == base.model_copy(update={"preset": "full"})
    else:
        assert base.datasets == ["ml100k-meta"] and len(base.seeds) == 3


def test_paper_layouts_present():
    layouts = {
        n: {t.layout for t in load_benchmark(n).tables}
        for n in ("modality-balancing", "band-together", "amr")
    }
    assert (
        "mb-table2" in layouts["modality-balancing"]
        and "robustness" in layouts["modality-balancing"]
    )
    assert {"bt-table2", "budget-grid"} <= layouts["band-together"]
    assert "amr-table3" in layouts["amr"]
    amr = load_benchmark("amr")
    assert amr.attacks[0].kind == "sampled" and amr.attacks[0].budgets == [0.05, 0.1, 0.2]
    mb = {v.label: v for v in load_benchmark("modality-balancing").defenses}
    assert mb["MB λ sweep"].sweep == {"modality-balancing.lam": [0.001, 0.01, 0.1, 1.0, 10.0]}
    assert mb["MB N sweep"].sweep == {"modality-balancing.n_samples": [10, 20, 30, 50, 100]}


@pytest.mark.parametrize(
    "data,preset,message",
    [
        (
            {"seed": 1},
            None,
            "'seed' is not a known setting; allowed: name, description, preset, datasets",
        ),
        (
            {"attacks": [{"kind": "bogus"}]},
            None,
            "'attacks.0.kind' 'bogus' is not a measurement kind; allowed: untargeted, adaptive, "
            "promotion, modality",
        ),
        (
            {"tables": [{"name": "t", "layout": "nope"}]},
            None,
            "'tables.0.layout' Input should be 'mb-table2'",
        ),
        (
            {"defenses": [{"label": "x", "kind": "finetune", "defenses": [{"name": "fgsm"}]}]},
            None,
            "unknown defense 'fgsm'; available: amr, modality-balancing, uat, uat-mc",
        ),
        (
            {
                "defenses": [
                    {"label": "x", "defenses": [{"name": "amr"}], "sweep": {"amr.gamma": [1]}}
                ]
            },
            None,
            "'gamma' is not a setting of amr; allowed: eps, budget, lam, point, modalities",
        ),
        ({"train": {"lr": -1}}, None, "'train.lr' Input should be greater than 0"),
        ({"models": ["vbpr", {"name": "nope"}]}, None, "unknown model 'nope'; available:"),
        (
            {"attacks": [{"kind": "untargeted", "budgets": [0]}]},
            None,
            "'attacks.0.budgets.0' Input should be greater than 0",
        ),
        (
            {"tables": [{"name": "t", "layout": "robustness", "source": "x"}]},
            None,
            "source 'x' is not an attack",
        ),
        (
            {"presets": {"quick": {}, "full": {}}},
            "fast",
            "unknown preset 'fast'; allowed: quick, full",
        ),
        (
            {"attacks": [{"kind": "sampled", "negatives": 5}]},
            None,
            "'attacks.0.negatives' is not a known setting; allowed: kind, seed, norm, point, "
            "relative, pgd_steps",
        ),
        (
            {"tables": [{"name": "t", "layout": "robustness", "variants": ["Nope"]}]},
            None,
            "table 't': variants ['Nope'] are not defense labels; allowed: Multimodal",
        ),
        (
            {"attacks": [{"kind": "promotion", "promotion": {"n_target": 5}}]},
            None,
            "'attacks.0.promotion.n_target' is not a known setting",
        ),
    ],
)
def test_config_errors_name_key_and_allowed_values(data, preset, message):
    with pytest.raises(ConfigError) as err:
        parse_benchmark(data, "bench.yaml", preset)
    assert message in str(err.value) and str(err.value).startswith("bench.yaml")


def test_preset_merge_and_overrides():
    config = load_benchmark(
        "band-together", "quick", ["attacks.promotion.budgets=[0.1]", "finetune.lr=0.001"]
    )
    assert [m.name for m in config.models] == ["vbpr"]  # mmgcn dropped by the preset
    assert "UAT-MC λ sweep" not in [v.label for v in config.defenses]
    promo = {a.name: a for a in config.attacks}["promotion"]
    assert (
        promo.budgets == [0.1]
        and promo.promotion["n_targets"] == 10
        and promo.attacks == ["fgsm", "pgd"]
    )
    assert config.finetune.lr == 0.001
    with pytest.raises(ConfigError, match="no entry named 'nope'; allowed: promotion, grid"):
        load_benchmark("band-together", None, ["attacks.nope.budgets=[0.1]"])
    picked = load_benchmark("modality-balancing", "full", ["datasets=[tiktok]"], ["mmgcn", "vbpr"])
    assert [m.name for m in picked.models] == ["vbpr", "mmgcn"]  # the config's order and settings
    assert picked.models[0].settings("tiktok")[0] == {"reg_weight": 0.1} and picked.seeds == [
        0,
        1,
        2,
    ]


# ---------------------------------------------------------------------- grid
def test_grid_trains_clean_once_and_shares_cells():
    config = load_benchmark("default", None, ["seeds=[0, 1]"])
    shape = types.SimpleNamespace(name="ml100k-meta", modalities=("text", "genre"))
    grid = expand_grid(config, {"ml100k-meta": shape})
    kinds = pd.Series([c.kind for c in grid.cells.values()]).value_counts()
    assert kinds["train"] == 2  # one clean model per seed, reused by every defense and attack
    assert (
        kinds["finetune"] == 2 * 4
    )  # AMR 5 % (shared with the sweep's 5 %), MB, AMR 2.5 % and 10 %
    members = {(m.variant, m.seed): m for m in grid.members}
    assert members["Adv training", 0].run == members["Adv training ε sweep (eps=0.05)", 0].run
    for cell in grid.cells.values():
        if cell.kind == "finetune":
            assert (
                grid.cells[cell.needs[0]].kind == "train"
                and cell.init_dir == grid.cells[cell.needs[0]].run_dir
            )
        if cell.kind == "eval":
            assert grid.cells[cell.needs[0]].kind in ("train", "finetune")
    clean = dict(members["Multimodal", 0].evals)
    shared = [cid for cid, spec in members["Multimodal", 0].evals if spec == "grid"]
    assert shared and all(
        cid in clean for cid in shared
    )  # FGSM cells of 'grid' are the 'untargeted' ones
    order = [c.id for c in grid.ordered()]
    assert sorted(order) == sorted(grid.cells)
    assert all(
        order.index(need) < order.index(cid) for cid in order for need in grid.cells[cid].needs
    )
    kinds_in_order = [grid.cells[c].kind for c in order]
    assert kinds_in_order[:2] == ["train", "train"]  # every training cell first
    # then row by row: the clean row's measurements before any defense is fine-tuned
    assert max(
        order.index(cid) for cid, _ in members["Multimodal", 1].evals
    ) < kinds_in_order.index("finetune")
    again = expand_grid(load_benchmark("default", None, ["seeds=[0, 1]"]), {"ml100k-meta": shape})
    assert list(again.cells) == list(grid.cells)  # stable ids


def test_unimodal_each_and_skips():
    config = parse_benchmark(
        {
            "models": ["vbpr", "mf"],
            "defenses": [
                {"label": "Multimodal", "kind": "clean"},
                {"label": "Unimodal", "kind": "unimodal"},
            ],
            "attacks": [{"kind": "untargeted"}],
        }
    )
    grid = expand_grid(
        config, {"ml100k-meta": types.SimpleNamespace(name="m", modalities=("text", "genre"))}
    )
    labels = {(m.model, m.variant) for m in grid.members}
    assert {("vbpr", "Unimodal-text"), ("vbpr", "Unimodal-genre"), ("mf", "Multimodal")} <= labels
    assert ("mf", "Unimodal-text") not in labels
    assert any("mf" in s and "feature route 'none'" in s for s in grid.skipped)


# -------------------------------------------------------------- resume, store
def _values(out) -> pd.DataFrame:
    frame = pd.read_parquet(out / "results.parquet")
    keys = [c for c in STORE_COLUMNS if c != "value"]
    return frame.sort_values(keys).reset_index(drop=True)


def test_interrupted_benchmark_resumes_and_equals_uninterrupted(
    synth_folder, finished, tmp_path, monkeypatch
):
    from mmrobust.training import trainer

    out = tmp_path / "interrupted"
    config = tiny(synth_folder)
    real_epoch, epochs = trainer._train_epoch, {"n": 0}

    def killed_in_training(
        *args, **kwargs
    ):  # a kill in the middle of the second clean model's training
        epochs["n"] += 1
        if epochs["n"] == 5:
            raise KeyboardInterrupt
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(trainer, "_train_epoch", killed_in_training)
    with pytest.raises(KeyboardInterrupt):
        run_benchmark(config, out, progress=False)
    monkeypatch.setattr(trainer, "_train_epoch", real_epoch)
    assert len(list((out / "cells").glob("*.json"))) == 1  # the first clean model only

    calls, kill = [], [True]

    def counted(cell, *args):
        calls.append(cell.id)
        if len(calls) == 30 and kill and kill.pop():  # a second kill, among the attacks
            raise KeyboardInterrupt
        return execute_cell(cell, *args)

    with pytest.raises(KeyboardInterrupt):
        run_benchmark(config, out, progress=False, work=counted)
    done_before = {p.stem for p in (out / "cells").glob("*.json")}
    assert len(done_before) == 30  # 1 + 29 finished cells recorded; the 30th was killed
    calls.clear()
    result = run_benchmark(config, out, progress=False, work=counted)
    assert result.complete, result.outcome.failed
    assert not set(calls) & done_before
    assert len(calls) == len(result.grid.cells) - len(done_before)  # nothing finished is recomputed

    pd.testing.assert_frame_equal(_values(out), _values(finished.out), check_exact=True)
    for mine, theirs in zip(result.report["tables"], finished.report["tables"], strict=True):
        assert mine.markdown() == theirs.markdown()


def test_rerun_skips_everything(synth_folder, finished):
    calls = []
    again = run_benchmark(
        tiny(synth_folder),
        finished.out,
        progress=False,
        report=False,
        work=lambda cell, *a: calls.append(cell) or {},
    )
    assert calls == [] and again.complete


def test_cells_finished_meanwhile_by_another_driver_are_skipped(synth_folder, finished, tmp_path):
    """Two drivers on one results folder (e.g. one per model): a cell the other finished after
    this run started is not computed again."""
    out = tmp_path / "shared"
    order = finished.grid.ordered()
    calls = []

    def other_driver_finishes_the_last_cell(cell, *args):
        calls.append(cell.id)
        if len(calls) == 1:
            last = order[-1]
            cellstate.write_marker(out, last, cellstate.read_marker(finished.out, last.id))
        return execute_cell(cell, *args)

    result = run_benchmark(
        tiny(synth_folder), out, progress=False, work=other_driver_finishes_the_last_cell
    )
    assert result.complete and order[-1].id not in calls and len(calls) == len(order) - 1


def test_drivers_sharing_a_folder_leave_claimed_cells_to_their_holder(
    synth_folder, finished, tmp_path
):
    """A cell another live driver has claimed is not computed here; the cells that need it wait
    for it (not skipped), and the run ends complete with no claim left behind."""
    out, train = tmp_path / "shared", finished.grid.ordered()[0]
    assert train.kind == "train" and any(train.id in c.needs for c in finished.grid.cells.values())
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    (out / "cells").mkdir(parents=True)
    (out / "cells" / f"{train.id}.claim").write_text(
        json.dumps({"host": socket.gethostname(), "pid": other.pid})
    )

    def other_driver_finishes():
        shutil.copytree(finished.out / train.run_dir, out / train.run_dir)
        cellstate.write_marker(out, train, cellstate.read_marker(finished.out, train.id))
        cellstate.release_claim(out, train.id)
        (out / "benchmark.yaml").write_text("name: the-other-drivers-config\n")

    timer, calls = threading.Timer(1.0, other_driver_finishes), []
    timer.start()
    try:
        result = run_benchmark(
            tiny(synth_folder),
            out,
            InProcessExecutor(poll_seconds=0.05),
            progress=False,
            work=lambda cell, *a: calls.append(cell.id) or execute_cell(cell, *a),
        )
    finally:
        timer.join()
        other.kill()
    assert result.complete, result.outcome.failed
    assert train.id not in calls and len(calls) == len(finished.grid.cells) - 1
    assert not list((out / "cells").glob("*.claim"))
    assert (
        ResultsStore.load(out).config.name == "default"
    )  # the report reads the config of its own store
    pd.testing.assert_frame_equal(_values(out), _values(finished.out), check_exact=True)


def test_claims_of_dead_drivers_are_taken_over(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    cells = tmp_path / "cells"
    cells.mkdir()
    (cells / "a.claim").write_text(json.dumps({"host": socket.gethostname(), "pid": dead.pid}))
    assert not cellstate.claimed_elsewhere(tmp_path, "a") and cellstate.claim_cell(tmp_path, "a")
    assert json.loads((cells / "a.claim").read_text())["pid"] == os.getpid()
    (cells / "b.claim").write_text(json.dumps({"host": "another-machine", "pid": os.getpid()}))
    assert cellstate.claimed_elsewhere(tmp_path, "b") and not cellstate.claim_cell(tmp_path, "b")
    assert cellstate.claim_cell(tmp_path, "c") and not cellstate.claimed_elsewhere(tmp_path, "c")
    cellstate.release_claim(tmp_path, "c")
    assert not (cells / "c.claim").exists()


def test_max_cells_stops_and_resumes(synth_folder, tmp_path):
    config = tiny(synth_folder, seeds=(0,))
    first = run_benchmark(config, tmp_path / "b", max_cells=4, progress=False)
    assert first.outcome.stopped and len(first.outcome.computed) == 4 and not first.complete
    plan = plan_benchmark(config, tmp_path / "b")
    assert plan.cells.sum() == len(first.grid.cells) and plan.done.sum() == 4
    assert (plan.todo == plan.cells - plan.done).all()
    timed = plan[plan.done > 0]
    assert (timed.s_per_cell > 0).all() and (timed.s_to_go == timed.todo * timed.s_per_cell).all()
    assert plan[plan.done == 0].s_per_cell.isna().all()
    assert set(plan.row) == {
        "Multimodal",
        "Adv training",
        "Modality balancing",
        "Adv training ε sweep",
    }
    assert "incomplete" in (tmp_path / "b" / "report.md").read_text()
    second = run_benchmark(config, tmp_path / "b", progress=False)
    assert second.complete and len(second.outcome.computed) == len(second.grid.cells) - 4


def test_store_columns_query_and_tables(finished):
    store = ResultsStore.load(finished.out)
    assert list(store.frame.columns) == STORE_COLUMNS
    assert store.frame.value.notna().all() and (store.frame.run_dir.str.startswith("runs/")).all()
    clean = store.query(spec="train", split="test", metric="recall", k=20, variant="Multimodal")
    assert len(clean) == 3 and sorted(clean.seed) == [0, 1, 2]
    fgsm = store.query(spec="untargeted", attack="fgsm", budget=0.05, metric="recall", k=20)
    assert set(fgsm.variant) == {"Multimodal", "Adv training", "Modality balancing"}
    assert (fgsm.attack_params.str.contains('"relative": true')).all()
    summary = store.summary(
        ["variant", "attack", "budget"],
        metric="recall",
        k=20,
        split="test",
        spec=["train", "untargeted"],
    )
    assert (summary.seeds == 3).all()
    with pytest.raises(ValueError, match="unknown column 'colour'"):
        store.query(colour="red")
    table = build_table(store, store.table_spec("table2"))
    assert (
        table.columns[:4] == ["dataset", "model", "defense", "Clean R@10"] and len(table.rows) == 3
    )
    means = table.means()
    assert means.loc[means.defense == "Multimodal", "Clean R@20"].item() == pytest.approx(
        clean.value.mean()
    )
    margins = store.query(protocol="margin", variant="Multimodal", metric="margin_clean")
    assert set(margins.population) == {"image", "text", "rest", "fused"} and len(margins) == 3 * 4
    grid = build_table(store, store.table_spec("budget-grid"))
    assert [r[2] for r in grid.rows] == [
        "Multimodal",
        "defense r=2.5 %",
        "defense r=5 %",
        "defense r=10 %",
    ]
    hist = store.histories
    assert {"epoch", "loss", "variant", "seed", "kind"} <= set(hist.columns)


def test_report_files(finished):
    out = finished.out
    md, page = (out / "report.md").read_text(), (out / "report.html").read_text()
    assert "Modality-balancing paper Table 2 layout" in md and "Significance tests" in md
    assert page.count("data:image/png;base64,") == len(finished.report["plots"]) >= 5
    assert "src='plots/" not in page  # self-contained
    names = {p.name.split("-", 2)[-1] for p in finished.report["plots"]}
    assert {
        "robustness-untargeted.png",
        "margins.png",
        "tradeoff.png",
        "training.png",
        "heatmap-budget-grid.png",
    } <= names


# ---------------------------------------------------------- tables and stats
def _store(values: dict[str, list[float]], attacked: dict[str, list[float]]) -> ResultsStore:
    rows = []
    for variant, by_seed in values.items():
        for seed, v in enumerate(by_seed):
            for metric, k in (("recall", 10), ("recall", 20), ("ndcg", 10), ("ndcg", 20)):
                base = {
                    "dataset": "d",
                    "model": "vbpr",
                    "variant": variant,
                    "group": variant,
                    "seed": seed,
                    "split": "test",
                    "protocol": "full",
                    "population": "all",
                    "metric": metric,
                    "k": k,
                }
                rows.append({**base, "spec": "train", "attack": "none", "budget": 0.0, "value": v})
                rows.append(
                    {
                        **base,
                        "spec": "untargeted",
                        "attack": "fgsm",
                        "budget": 0.05,
                        "value": attacked[variant][seed],
                    }
                )
    config = parse_benchmark(
        {
            "defenses": [
                {"label": "Multimodal", "kind": "clean"},
                {"label": "A", "defenses": [{"name": "amr"}]},
                {"label": "B", "defenses": [{"name": "modality-balancing"}]},
            ],
            "attacks": [{"kind": "untargeted"}],
        }
    )

    return ResultsStore(normalise_store(pd.DataFrame(rows)), config)


def test_table_marks_best_second_and_significance():
    store = _store(
        {"Multimodal": [0.30, 0.31, 0.32], "A": [0.20, 0.21, 0.225], "B": [0.29, 0.30, 0.315]},
        {"Multimodal": [0.10, 0.11, 0.12], "A": [0.20, 0.205, 0.21], "B": [0.25, 0.27, 0.28]},
    )
    table = build_table(store, TableConfig(name="t", layout="mb-table2"))
    assert table.cell(("d", "vbpr", "Multimodal"), "Clean R@20").rank == 1
    assert table.cell(("d", "vbpr", "B"), "Clean R@20").rank == 2
    best = table.cell(("d", "vbpr", "B"), "Attack R@20")
    assert (
        best.rank == 1 and "†" in best.marks and "‡" not in best.marks
    )  # n = 3: Wilcoxon cannot reach 0.05
    assert "§" in best.marks  # B beats A consistently across seeds
    md = table.markdown()
    assert "| d | vbpr | Multimodal | **0.3100 ± 0.0100**" in md
    assert "<u>0.2050 ± 0.0050</u>†" in md
    assert any("cannot give p < 0.05" in line for line in table.legend)
    assert set(table.tests.comparison) == {"vs undefended", "best vs second"}
    assert "<b>0.3100 ± 0.0100</b>" in table.html()


def test_ties_share_the_rank():
    store = _store(
        {"Multimodal": [0.3, 0.3, 0.3], "A": [0.3, 0.3, 0.3], "B": [0.1, 0.1, 0.1]},
        {"Multimodal": [0.1, 0.1, 0.1], "A": [0.2, 0.2, 0.2], "B": [0.2, 0.2, 0.2]},
    )
    table = build_table(store, TableConfig(name="t", layout="mb-table2"))
    assert [table.cell(("d", "vbpr", v), "Clean R@10").rank for v in ("Multimodal", "A", "B")] == [
        1,
        1,
        2,
    ]
    assert [table.cell(("d", "vbpr", v), "Attack R@10").rank for v in ("Multimodal", "A", "B")] == [
        2,
        1,
        1,
    ]


def test_paired_tests():
    from scipy import stats

    a, b = {0: 0.30, 1: 0.32, 2: 0.35, 3: 0.31}, {0: 0.28, 1: 0.31, 2: 0.30, 3: 0.30, 9: 0.5}
    test = paired_test(a, b)  # seed 9 is not shared
    assert test.n == 4 and test.t_p == pytest.approx(
        stats.ttest_rel([0.30, 0.32, 0.35, 0.31], [0.28, 0.31, 0.30, 0.30]).pvalue
    )
    assert test.w_p == pytest.approx(stats.wilcoxon([0.02, 0.01, 0.05, 0.01]).pvalue)
    assert test.diff == pytest.approx(0.0225)
    short = paired_test({0: 1.0, 1: 2.0}, {0: 0.5, 1: 1.0})
    assert short.n == 2 and math.isnan(short.t_p) and math.isnan(short.w_p) and "n/a" in short.note
    same = paired_test({0: 1.0, 1: 2.0, 2: 3.0}, {0: 1.0, 1: 2.0, 2: 3.0})
    assert same.t_p == 1.0 and not same.t_significant
    constant = paired_test({0: 1.0, 1: 2.0, 2: 3.0}, {0: 0.5, 1: 1.5, 2: 2.5})
    assert math.isnan(constant.t_p) and "constant" in constant.note
    assert wilcoxon_floor(5) == 0.0625 and wilcoxon_floor(6) < 0.05
    assert "cannot give p < 0.05" in " ".join(legend(5, "x")) and "cannot" not in " ".join(
        legend(6, "x")
    )
    assert "no test is run" in " ".join(legend(2, "x"))


# ----------------------------------------------------------------------- CLI
def test_cli_benchmark_report_and_query(synth_folder, tmp_path):
    out = tmp_path / "cli"
    args = [
        "benchmark",
        "default",
        "--preset",
        "quick",
        "--out",
        str(out),
        "--no-progress",
        "--set",
        f"datasets=[{synth_folder}]",
    ] + [a for s in SMALL for a in ("--set", s)]
    result = runner.invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert (
        "Modality-balancing paper Table 2 layout" in text
        and f"report: {out / 'report.html'}" in text
    )
    again = runner.invoke(app, args, catch_exceptions=False)
    assert "0 cells computed" in again.output
    (out / "report.md").unlink()
    rendered = runner.invoke(app, ["report", str(out)], catch_exceptions=False)
    assert (
        rendered.exit_code == 0
        and (out / "report.md").exists()
        and "Robustness vs budget" in rendered.output
    )
    query = runner.invoke(
        app,
        [
            "report",
            str(out),
            "--where",
            "metric=recall",
            "--where",
            "k=20",
            "--where",
            "spec=train,untargeted",
            "--by",
            "variant,attack,budget",
        ],
    )
    assert query.exit_code == 0 and "Modality balancing" in query.output and "mean" in query.output
    one = runner.invoke(app, ["report", str(out), "--table", "budget-grid"])
    assert "defense r=10 %" in one.output
    plan = runner.invoke(app, [*args, "--plan"], catch_exceptions=False)
    cells = len(list((out / "cells").glob("*.json")))
    assert plan.exit_code == 0 and f"{cells} of {cells} cells done; 0 to do" in " ".join(
        plan.output.split()
    )


@pytest.mark.parametrize(
    "args,message",
    [
        (
            ["benchmark", "no-such-config"],
            "neither a file nor a packaged config; packaged: amr, attacks, band-together, default",
        ),
        (["benchmark", "amr", "--preset", "fast"], "unknown preset 'fast'; allowed: quick, full"),
        (["benchmark", "--set", "datasets=[no-such-data]"], "unknown dataset 'no-such-data'"),
        (["benchmark", "--backend", "spark"], "unknown backend 'spark'; allowed: local, ray"),
        (["report", "/nonexistent/results"], "holds no results.parquet"),
        (
            ["benchmark", "modality-balancing", "--models", "vbpr,lightgcn", "--plan"],
            "models ['lightgcn'] are not in the config; allowed: vbpr, mmgcn, grcn, slmrec, mmgcl",
        ),
    ],
)
def test_cli_errors_are_one_line(args, message):
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()) and "Traceback" not in result.output


# --------------------------------------------------------------------- MLflow
def test_mlflow_only_when_installed_and_configured(synth_folder, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert MlflowTracker.maybe("x") is None
    logged = {"runs": [], "metrics": 0}

    class FakeRun:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    fake = types.SimpleNamespace(
        set_experiment=lambda name: logged.setdefault("experiment", name),
        start_run=lambda run_name: logged["runs"].append(run_name) or FakeRun(),
        log_params=lambda params: None,
        log_metrics=lambda metrics: logged.__setitem__("metrics", logged["metrics"] + len(metrics)),
    )
    monkeypatch.setitem(sys.modules, "mlflow", fake)
    assert MlflowTracker.maybe("x") is None  # installed but no tracking URI
    monkeypatch.setenv("MLFLOW_TRACKING_URI", str(tmp_path / "mlruns"))
    run_benchmark(
        tiny(synth_folder, seeds=(0,)), tmp_path / "m", max_cells=2, progress=False, report=False
    )
    assert (
        logged["experiment"] == "mmrobust-default"
        and len(logged["runs"]) == 2
        and logged["metrics"] > 0
    )


# ------------------------------------------------------------------ real data
GOLDEN = json.loads((Path(__file__).parent / "golden" / "tables.json").read_text(encoding="utf-8"))


@pytest.mark.realdata
@requires_shared_data("tiktok", "ml100k")
@pytest.mark.parametrize("name", ["amr", "band-together", "modality-balancing"])
def test_quick_presets_on_real_data(name, tmp_path):
    """The paper configs' quick presets run whole, and every table equals, to the last digit,
    the one recorded before the engine became a package (``tests/golden/tables.json``)."""
    tick = time.perf_counter()
    result = run_benchmark(load_benchmark(name, "quick"), tmp_path / name, progress=False)
    assert result.complete, result.outcome.failed
    tables = result.report["tables"]
    assert tables and all(not t.empty for t in tables)
    for table in tables:
        shown = {tuple(r) for r in table.means().iloc[:, :2].itertuples(index=False)}
        assert {("tiktok", "vbpr"), ("ml100k", "vbpr")} <= shown, table.name
    assert {t.name: t.markdown() for t in tables} == GOLDEN[f"{name}:quick"]
    assert (tmp_path / name / "report.html").exists()
    if (
        name == "modality-balancing"
    ):  # Figures 3–4: a plot per dataset and sweep (λ, N), attacked from 'sweep'
        sweeps = sorted(p.name for p in result.report["plots"] if "-sweep-" in p.name)
        assert sweeps == [
            f"{d}-vbpr-sweep-{s}.png"
            for d in ("ml100k", "tiktok")
            for s in ("mb-n-sweep", "mb-sweep")
        ]
    print(
        f"{name} quick preset: {len(result.grid.cells)} cells in {time.perf_counter() - tick:.0f} s"
    )


@pytest.mark.realdata
@pytest.mark.parametrize("preset", ["quick", None])
def test_default_benchmark_equals_recorded_tables(preset, tmp_path):
    """The main job (the default benchmark on the built-in data) and its quick preset: tables
    identical to the ones recorded before the engine became a package."""
    key = "default" + (f":{preset}" if preset else "")
    if key not in GOLDEN:
        pytest.skip(f"no recorded tables for {key}")
    build_dataset(DEFAULT_DATASET)
    result = run_benchmark(load_benchmark("default", preset), tmp_path / "default", progress=False)
    assert result.complete, result.outcome.failed
    assert {t.name: t.markdown() for t in result.report["tables"]} == GOLDEN[key]


def test_training_curves_draw_a_shared_run_once():
    from mmrobust.experiments.benchmark.figures import _one_curve_per_run

    histories = pd.DataFrame(
        {
            "cell": ["a", "a", "b"],
            "variant": ["MB", "MB λ sweep (lam=1)", "AMR"],
            "epoch": [0] * 3,
            "loss": [1.0, 1.0, 2.0],
        }
    )
    kept, shared = _one_curve_per_run(histories)
    assert list(kept.variant) == ["MB", "AMR"] and shared == {"MB": ["MB λ sweep (lam=1)"]}
