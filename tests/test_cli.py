"""The mmrobust command: data commands, train, evaluate, and one-line errors."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import good_rows, write_folder, write_synthetic_folder
from mmrobust.cli.main import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def synthetic_folder(tmp_path_factory):
    return write_synthetic_folder(tmp_path_factory.mktemp("data"))


def test_data_import_list_show(synthetic_folder, isolated_home):
    result = invoke("data", "import", synthetic_folder, "--name", "mysynth")
    assert result.exit_code == 0 and "registered mysynth" in result.output
    listing = invoke("data", "list")
    assert "mysynth" in listing.output and "imported" in listing.output
    shown = invoke("data", "show", "mysynth")
    assert shown.exit_code == 0 and "users" in shown.output and "120" in shown.output


def test_train_then_evaluate(synthetic_folder, tmp_path):
    run_dir = tmp_path / "run"
    result = invoke(
        "train",
        "--dataset",
        synthetic_folder,
        "--model",
        "vbpr",
        "--epochs",
        3,
        "--device",
        "cpu",
        "--set",
        "lr=0.01",
        "--set",
        "model.reg_weight=0.001",
        "--run-dir",
        run_dir,
    )
    assert result.exit_code == 0, result.output
    assert "test metrics at best validation epoch" in result.output
    for name in (
        "config.yaml",
        "versions.json",
        "best.pt",
        "checkpoint.pt",
        "metrics.json",
        "results.parquet",
        "results.csv",
        "history.csv",
    ):
        assert (run_dir / name).exists(), name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    table = pd.read_parquet(run_dir / "results.parquet")
    assert set(table.columns) >= {
        "dataset",
        "model",
        "defense",
        "attack",
        "budget",
        "seed",
        "split",
        "metric",
        "k",
        "value",
    }
    row = table[(table.split == "test") & (table.metric == "recall") & (table.k == 20)]
    assert row.value.item() == pytest.approx(metrics["test"]["recall@20"])
    assert len(table) == 2 * 5 * 4  # valid + test, 5 metrics, 4 cut-offs
    evaluated = invoke("evaluate", run_dir, "--json", "--device", "cpu")
    assert json.loads(evaluated.output)["recall@20"] == pytest.approx(metrics["test"]["recall@20"])
    sampled = invoke(
        "evaluate", run_dir, "--protocol", "sampled", "--negatives", 50, "--json", "--device", "cpu"
    )
    assert 0 < json.loads(sampled.output)["hr@10"] <= 1


@pytest.mark.parametrize(
    "args,message",
    [
        (("train", "--dataset", "no-such-data"), "unknown dataset 'no-such-data'"),
        (("train", "--model", "nope", "--dataset", "tiktok"), "unknown model 'nope'"),
        (
            ("train", "--set", "lr=-1", "--dataset", "tiktok"),
            "'train.lr' Input should be greater than 0",
        ),
        (
            ("train", "--set", "embeding_size=3", "--dataset", "tiktok"),
            "'model_params.embeding_size'",
        ),
        (
            ("train", "--device", "cuda:7", "--dataset", "tiktok", "--epochs", "1"),
            "CUDA is not available",
        ),
        (("evaluate", "/nonexistent/run"), "is not a run directory"),
    ],
)
def test_errors_are_one_line(args, message):
    result = runner.invoke(app, list(args))
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert message in text, result.output
    assert "Traceback" not in result.output


def test_import_of_bad_folder_fails_cleanly(tmp_path, isolated_home):
    folder = write_folder(tmp_path / "bad", [r[:4] + (7,) for r in good_rows()])
    result = runner.invoke(app, ["data", "import", str(folder)])
    assert result.exit_code == 2
    assert "x_label 7 is not 0, 1 or 2" in " ".join(result.output.split())
    assert not (isolated_home / "registry.json").exists()


def test_tune_picks_the_best_validation_setting(synthetic_folder, tmp_path):
    result = invoke(
        "tune",
        "--dataset",
        synthetic_folder,
        "--model",
        "mf",
        "--epochs",
        4,
        "--device",
        "cpu",
        "--grid",
        "reg_weight=0.0001,10",
        "--grid",
        "train.lr=0.01",
        "--root",
        tmp_path / "grid",
    )
    assert result.exit_code == 0, result.output
    table = pd.read_csv(tmp_path / "grid" / "tune.csv")
    assert len(table) == 2 and set(table.reg_weight) == {0.0001, 10}
    best = table.loc[table["valid_recall@20"].idxmax()]
    assert f"best on validation: {{'reg_weight': {best.reg_weight}, 'train.lr': 0.01}}" in " ".join(
        result.output.split()
    )


def test_attack_and_analyze_commands(synthetic_folder, tmp_path):
    run_dir = tmp_path / "run"
    invoke(
        "train",
        "--dataset",
        synthetic_folder,
        "--model",
        "vbpr",
        "--epochs",
        5,
        "--device",
        "cpu",
        "--set",
        "lr=0.02",
        "--run-dir",
        run_dir,
    )
    result = invoke("attack", run_dir, "--budget", 0.1, "--device", "cpu")
    assert result.exit_code == 0, result.output
    sweep = pd.read_csv(run_dir / "attacks" / "untargeted.csv")
    assert set(sweep.attack) == {"random", "fgsm", "pgd"}
    assert (run_dir / "attacks" / "untargeted_recall20.png").exists()
    promo = invoke(
        "attack",
        run_dir,
        "--goal",
        "promotion",
        "--budget",
        0.2,
        "--targets",
        5,
        "--selection",
        "uniform",
        "--attack",
        "fgsm",
        "--beta",
        0,
        "--device",
        "cpu",
    )
    assert promo.exit_code == 0, promo.output
    assert (run_dir / "attacks" / "promotion.csv").exists() and (
        run_dir / "attacks" / "promotion_hr50.png"
    ).exists()
    analysis = invoke("analyze", run_dir, "--targets", 3, "--budget", 0.2, "--device", "cpu")
    assert analysis.exit_code == 0, analysis.output
    assert "sensitive modality:" in analysis.output
    for name in (
        "modality.png",
        "modality_case.png",
        "modality.csv",
        "modality_case.csv",
        "mismatch.csv",
        "mismatch_jaccard.png",
        "mismatch_gains.csv",
        "modality.json",
        "mismatch.json",
    ):
        assert (run_dir / "analysis" / name).exists(), name
    table = pd.read_parquet(run_dir / "results.parquet")
    assert {"none", "fgsm", "pgd", "random", "promotion-fgsm"} <= set(table.attack)
    attacked = table[
        (table.attack == "fgsm")
        & (table.metric == "recall")
        & (table.k == 20)
        & (table.budget == 0.1)
    ]
    assert attacked.value.item() == pytest.approx(
        sweep[
            (sweep.attack == "fgsm") & (sweep.metric == "recall") & (sweep.k == 20)
        ].attacked.item()
    )
    # re-running replaces rows with the same coordinates instead of duplicating them
    invoke("attack", run_dir, "--budget", 0.1, "--device", "cpu")
    again = pd.read_parquet(run_dir / "results.parquet")
    assert len(again) == len(table)


def test_train_with_stacked_defenses_from_a_clean_run(synthetic_folder, tmp_path):
    clean = tmp_path / "clean"
    invoke(
        "train",
        "--dataset",
        synthetic_folder,
        "--model",
        "vbpr",
        "--epochs",
        3,
        "--device",
        "cpu",
        "--set",
        "lr=0.02",
        "--run-dir",
        clean,
    )
    defended = tmp_path / "defended"
    result = invoke(
        "train",
        "--dataset",
        synthetic_folder,
        "--model",
        "vbpr",
        "--epochs",
        2,
        "--device",
        "cpu",
        "--set",
        "lr=0.02",
        "--init-from",
        clean,
        "--defense",
        "modality-balancing",
        "--defense",
        "amr",
        "--set",
        "defense.amr.eps=0.1",
        "--set",
        "defense.modality-balancing.sensitive=text",
        "--run-dir",
        defended,
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((defended / "metrics.json").read_text())
    assert metrics["defense_notes"]["modality-balancing"]["sensitive"] == "text"
    table = pd.read_parquet(defended / "results.parquet")
    assert set(table.defense) == {"modality-balancing+amr"}
    assert json.loads(table.defense_params.iloc[0])["amr"]["eps"] == 0.1
    history = pd.read_csv(defended / "history.csv")
    assert {"amr/adv_bpr", "modality-balancing/balance"} <= set(history.columns)
    check = invoke(
        "attack",
        defended,
        "--goal",
        "adaptive",
        "--budget",
        0.1,
        "--pgd-steps",
        3,
        "--restarts",
        2,
        "--device",
        "cpu",
    )
    assert check.exit_code == 0, check.output
    flags = pd.read_csv(defended / "attacks" / "adaptive.csv")
    assert {"fgsm_drop", "pgd_drop", "flagged"} <= set(flags.columns)
    stored = pd.read_parquet(defended / "results.parquet")
    assert (stored.metric == "recall_masking_flag").any() and set(stored.attack) >= {
        "fgsm",
        "pgd",
        "adaptive-check",
    }
    assert json.loads(stored[stored.attack == "pgd"].attack_params.iloc[0])["restarts"] == 2
    bad = runner.invoke(
        app, ["train", "--dataset", str(synthetic_folder), "--set", "defense.uat.eps=0.1"]
    )
    assert bad.exit_code == 2 and "defense 'uat' is not in the run" in " ".join(bad.output.split())


def test_help_names_every_model():
    from mmrobust.models import MODELS

    text = " ".join(runner.invoke(app, ["train", "--help"], terminal_width=200).output.split())
    assert all(name in text for name in MODELS), text
