"""The measurement registry: one path for the command line and the benchmark.

A CLI attack and the benchmark cell with the same settings write identical result rows;
every command-line option of every goal changes the measurement or is refused; splitting a
spec into cells gives the rows of the whole; components' needs are checked once, with the
same sentence in the grid (skipped) and at run time (refused)."""

from __future__ import annotations

import types

import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from conftest import write_synthetic_folder
from mmrobust.cli.main import OPTION_SETTINGS, app, measurement_spec
from mmrobust.data import load_dataset
from mmrobust.defenses import AMR, ModalityBalancing
from mmrobust.experiments import RunConfig, load_run, train_run
from mmrobust.experiments.benchmark import expand_grid, parse_benchmark, plan_benchmark
from mmrobust.experiments.benchmark.grid import Cell
from mmrobust.experiments.benchmark.work import execute_cell
from mmrobust.experiments.measurements import MEASUREMENTS, make_measurement
from mmrobust.experiments.results import COORDINATES, normalise
from mmrobust.models import NotApplicable, build_model

runner = CliRunner()
GOALS = ("untargeted", "promotion", "adaptive", "sampled")
#: a non-default value per option (what the CLI would receive)
OTHER = {
    "attack": ["pgd"],
    "budget": [0.2],
    "norm": "linf",
    "point": "embedding",
    "pgd_steps": 2,
    "restarts": 2,
    "beta": [0.5],
    "factor": 3.0,
    "negatives": 20,
    "k": [5],
    "seed": 7,
    "targets": 4,
    "n_interactions": 2,
    "selection": "uniform",
    "surrogate": "relu",
    "top_share": 0.5,
    "modalities": ["image"],
}
#: the small settings every run of these tests starts from (keeps each measurement under a second)
BASE = {
    "untargeted": {"attack": ["fgsm"], "budget": [0.1]},
    "promotion": {
        "attack": ["fgsm"],
        "budget": [0.1],
        "beta": [0.0],
        "targets": 3,
        "selection": "uniform",
    },
    "adaptive": {"pgd_steps": 3, "restarts": 1},
    "sampled": {"negatives": 30},
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small VBPR trained on the synthetic folder inside a results folder ``out``."""
    out = tmp_path_factory.mktemp("results")
    folder = write_synthetic_folder(tmp_path_factory.mktemp("data"))
    config = RunConfig(
        dataset=str(folder),
        model="vbpr",
        model_params={"embedding_size": 16},
        train={"epochs": 4, "lr": 0.02, "batch_size": 256, "device": "cpu", "progress": False},
    )
    train_run(config, out / "runs" / "vbpr", dataset=load_dataset(str(folder)))
    return out, "runs/vbpr", load_dataset(str(folder))


def _rows(frame: pd.DataFrame) -> pd.DataFrame:
    frame = normalise(frame.drop(columns=["run_dir"]).assign(run_dir=None))
    return frame.sort_values(COORDINATES).reset_index(drop=True)


def _cli_rows(out, run_dir, *args) -> pd.DataFrame:
    run = out / run_dir
    before = pd.read_parquet(run / "results.parquet")
    result = runner.invoke(
        app, ["attack", str(run), "--device", "cpu", *map(str, args)], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    after = pd.read_parquet(run / "results.parquet")
    merged = after.merge(before, how="left", indicator=True, on=list(after.columns))
    return merged[merged["_merge"] == "left_only"].drop(columns="_merge")


@pytest.mark.parametrize(
    "goal,args",
    [
        (
            "untargeted",
            [
                "--attack",
                "fgsm",
                "--attack",
                "pgd",
                "--budget",
                0.05,
                "--budget",
                0.1,
                "--pgd-steps",
                3,
            ],
        ),
        (
            "promotion",
            [
                "--attack",
                "fgsm",
                "--attack",
                "pgd",
                "--budget",
                0.1,
                "--beta",
                0,
                "--beta",
                1,
                "--targets",
                3,
                "--selection",
                "uniform",
                "--pgd-steps",
                2,
            ],
        ),
        ("adaptive", ["--budget", 0.1, "--pgd-steps", 3, "--restarts", 2]),
        ("sampled", ["--attack", "fgsm", "--budget", 0.1, "--negatives", 30]),
    ],
)
def test_cli_attack_and_benchmark_cells_write_identical_rows(trained, goal, args):
    out, run_dir, dataset = trained
    cli = _cli_rows(out, run_dir, "--goal", goal, *args)
    given = dict(zip([a.lstrip("-").replace("-", "_") for a in args[::2]], args[1::2], strict=True))
    options = {}
    for key, value in given.items():
        multi = key in ("attack", "budget", "beta")
        options[key] = (
            [
                v
                for k, v in zip(args[::2], args[1::2], strict=True)
                if k.lstrip("-").replace("-", "_") == key
            ]
            if multi
            else value
        )
    spec = measurement_spec(
        goal, {"seed": 0, **options}
    )  # the run's seed, as the benchmark resolves it
    cells = spec.cells()
    assert len(cells) == {"untargeted": 4, "promotion": 4, "adaptive": 1, "sampled": 2}[goal]
    rows = []
    for i, cell_spec in enumerate(cells):
        cell = Cell(f"c{i}", "eval", dataset.name, "t", run_dir, spec=cell_spec)
        rows += execute_cell(cell, dataset, out)["rows"]
    pd.testing.assert_frame_equal(_rows(pd.DataFrame(rows)), _rows(cli), check_exact=True)


@pytest.mark.parametrize("goal", GOALS)
def test_every_option_changes_the_measurement_or_is_refused(trained, goal):
    out, run_dir, _ = trained
    run = load_run(out / run_dir, "cpu")
    base_spec = measurement_spec(goal, BASE[goal])
    base = _rows(pd.DataFrame([r.as_dict() for r in make_measurement(base_spec).measure(run)[1]]))
    for option in [*OPTION_SETTINGS, "modalities"]:
        if option in BASE[goal] and BASE[goal][option] == OTHER[option]:
            continue
        try:
            spec = measurement_spec(goal, {**BASE[goal], option: OTHER[option]})
        except typer.Exit as refused:
            assert refused.exit_code == 2, option
            continue
        changed = _rows(pd.DataFrame([r.as_dict() for r in make_measurement(spec).measure(run)[1]]))
        same = changed.shape == base.shape and changed.equals(base)
        assert not same, f"--{option} of goal {goal} changed nothing"


def test_refused_options_say_which_apply():
    with pytest.raises(typer.Exit):
        measurement_spec("promotion", {"restarts": 3})
    result = runner.invoke(
        app, ["attack", "/nonexistent", "--goal", "promotion", "--restarts", "3"]
    )
    text = " ".join(result.output.split())
    assert result.exit_code == 2 and "--restarts does not apply to promotion; its options:" in text
    assert "--beta" in text and "Traceback" not in result.output
    zero = runner.invoke(app, ["attack", "/nonexistent", "--pgd-steps", "0"])
    assert (
        zero.exit_code == 2
        and "'pgd_steps' Input should be greater than or equal to 1" in zero.output
    )


def test_spec_cells_cover_the_spec_and_kinds_are_registered():
    assert set(MEASUREMENTS) == {
        "untargeted",
        "adaptive",
        "promotion",
        "modality",
        "sampled",
        "mismatch",
    }
    spec = measurement_spec("untargeted", {"attack": ["fgsm", "pgd"], "budget": [0.05, 0.1]})
    assert [(c.attacks, c.budgets) for c in spec.cells()] == [
        (["fgsm"], [0.05]),
        (["fgsm"], [0.1]),
        (["pgd"], [0.05]),
        (["pgd"], [0.1]),
    ]
    sampled = measurement_spec("sampled", {"budget": [0.05, 0.1]})
    assert [(c.attacks, c.clean) for c in sampled.cells()] == [
        ([], True),
        (["fgsm"], False),
        (["fgsm"], False),
    ]


# ----------------------------------------------------------------- needs
def test_unserved_combinations_are_skipped_with_the_run_time_sentence(tmp_path):
    config = parse_benchmark(
        {
            "models": ["vbpr", "lattice"],
            "seeds": [0],
            "defenses": [
                {"label": "Clean", "kind": "clean"},
                {"label": "AMR", "defenses": [{"name": "amr"}]},
                {"label": "MB", "defenses": [{"name": "modality-balancing"}]},
            ],
            "attacks": [
                {"kind": "untargeted", "attacks": ["fgsm"], "budgets": [0.05]},
                {"kind": "modality", "variants": ["Clean"]},
            ],
        }
    )
    one = types.SimpleNamespace(name="one", modalities=("image",))
    grid = expand_grid(config, {"ml100k-meta": one})
    skipped = " | ".join(grid.skipped)
    assert (
        "one/lattice/AMR: skipped (AMR adversarial training needs a model whose score reads the "
        "item "
        "features directly; lattice has feature route 'graph'" in skipped
    )
    assert (
        "one/vbpr/MB: skipped (modality balancing needs two or more modalities; vbpr reads image)"
        in skipped
    )
    assert (
        "lattice/Clean: modality" not in skipped
    )  # margins of graph models: each modality attacked alone
    assert not any(
        c.config and c.config.defenses and c.model == "lattice" for c in grid.cells.values()
    )
    # the same sentences at run time, from the components themselves
    ds = load_dataset(str(write_synthetic_folder(tmp_path)))
    with pytest.raises(
        NotApplicable, match="AMR adversarial training needs a model whose score reads"
    ):
        AMR().on_fit_start(build_model("lattice", ds), ds)
    with pytest.raises(
        NotApplicable, match="modality balancing needs two or more modalities; vbpr reads image"
    ):
        ModalityBalancing().on_fit_start(build_model("vbpr", ds, modalities=["image"]), ds)
    plan = plan_benchmark(config, tmp_path / "out", {"ml100k-meta": one})
    assert plan.attrs["skipped"] == grid.skipped


def test_plan_lists_skipped_combinations(tmp_path):
    folder = write_synthetic_folder(tmp_path)
    args = [
        "benchmark",
        "default",
        "--preset",
        "quick",
        "--plan",
        "--out",
        str(tmp_path / "o"),
        "--set",
        f"datasets=[{folder}]",
        "--set",
        "models=[lattice]",
    ]
    result = runner.invoke(app, args, catch_exceptions=False)
    text = " ".join(result.output.split())
    assert result.exit_code == 0, result.output
    assert "skipped" in text and "lattice has feature route 'graph'" in text
