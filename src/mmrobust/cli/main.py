"""The ``mmrobust`` command line (typer + rich)."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from mmrobust.data import (
    DEFAULT_DATASET,
    build_dataset,
    import_dataset,
    list_datasets,
    load_dataset,
    resolve_dataset,
)
from mmrobust.errors import UserError
from mmrobust.experiments import (
    RunConfig,
    apply_overrides,
    evaluate_run,
    load_run,
    load_run_config,
    parse_grid,
    parse_run_config,
    record,
    tune,
)
from mmrobust.experiments.benchmark import (
    ResultsStore,
    build_table,
    load_benchmark,
    make_executor,
    plan_benchmark,
    run_benchmark,
    write_report,
)
from mmrobust.experiments.config import format_validation_error
from mmrobust.experiments.measurements import MeasurementSpec, measurement_class, wide_promotion
from mmrobust.experiments.overrides import parse_override
from mmrobust.experiments.runs import default_run_dir, train_run
from mmrobust.utils import tune_allocator

app = typer.Typer(
    help="Adversarial robustness of multimodal recommenders.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="List, inspect, build and import datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")
console = Console()
err_console = Console(stderr=True)

#: errors that are the user's to fix: one 'error:' line; anything else is a bug and keeps its
#: traceback
EXPECTED_ERRORS = (UserError, FileNotFoundError, FloatingPointError)


def _fail(message: str) -> None:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code=2)


def _guard(func, *args, **kwargs):
    """Run ``func``; turn expected errors into one clear line (no traceback)."""
    try:
        return func(*args, **kwargs)
    except ValidationError as exc:
        _fail(format_validation_error(exc))
    except EXPECTED_ERRORS as exc:
        _fail(str(exc))


def metrics_table(metrics: dict[str, float], title: str) -> Table:
    """Metrics as a table: one row per metric, one column per K."""
    ks = sorted({int(k.split("@")[1]) for k in metrics})
    names = list(dict.fromkeys(k.split("@")[0] for k in metrics))
    table = Table(title=title)
    table.add_column("metric")
    for k in ks:
        table.add_column(f"@{k}", justify="right")
    for name in names:
        table.add_row(
            name, *(f"{metrics[f'{name}@{k}']:.4f}" if f"{name}@{k}" in metrics else "" for k in ks)
        )
    return table


# ------------------------------------------------------------------------ data
@data_app.command("list")
def data_list() -> None:
    """List the datasets known on this machine."""
    table = Table(title="datasets")
    for col in ("name", "origin", "path"):
        table.add_column(col)
    for entry in _guard(list_datasets):
        default = " (default)" if entry.name == DEFAULT_DATASET else ""
        table.add_row(entry.name + default, entry.origin, str(entry.path or "-"))
    console.print(table)


@data_app.command("show")
def data_show(
    name: Annotated[str, typer.Argument(help="dataset name or folder")] = DEFAULT_DATASET,
) -> None:
    """Load a dataset (validating it) and print its summary."""
    ds = _guard(load_dataset, name)
    table = Table(title=f"dataset {ds.name}", show_header=False)
    for key, value in ds.summary().items():
        if isinstance(value, float):
            value = f"{value:.6g}"
        table.add_row(key, str(value))
    console.print(table)


@data_app.command("build")
def data_build(
    name: Annotated[str, typer.Argument(help="built-in dataset to build")] = DEFAULT_DATASET,
    force: Annotated[bool, typer.Option(help="rebuild even if cached")] = False,
) -> None:
    """Build a built-in dataset (cached under $MMROBUST_HOME/datasets)."""
    path = _guard(build_dataset, name, force=force)
    ds = _guard(load_dataset, name)
    console.print(f"built [bold]{name}[/] at {path}: {ds}")


@data_app.command("import")
def data_import(
    folder: Annotated[Path, typer.Argument(help="MMRec-layout folder")],
    name: Annotated[
        str | None, typer.Option(help="name to register (default: folder name)")
    ] = None,
) -> None:
    """Validate an MMRec folder and register it under a name."""
    entry = _guard(import_dataset, folder, name)
    console.print(f"registered [bold]{entry.name}[/] → {entry.path}")


# ----------------------------------------------------------------------- train
DatasetOpt = Annotated[
    str | None, typer.Option(help="dataset name or folder (default ml100k-meta)")
]
ModelOpt = Annotated[
    str | None,
    typer.Option(
        help="pop, mf, lightgcn, vbpr, duif, mmgcn, grcn, slmrec, mmgcl, lattice, freedom, bm3"
    ),
]
ConfigOpt = Annotated[Path | None, typer.Option(help="run config YAML")]
EpochsOpt = Annotated[int | None, typer.Option(help="epoch cap")]
SeedOpt = Annotated[int | None, typer.Option(help="random seed")]
DeviceOpt = Annotated[str | None, typer.Option(help="auto, cpu, cuda")]
SetOpt = Annotated[
    list[str] | None, typer.Option("--set", help="override, e.g. train.lr=0.01 or reg_weight=0.1")
]


def _run_config(
    config: Path | None,
    dataset: str | None,
    model: str | None,
    epochs: int | None,
    seed: int | None,
    device: str | None,
    overrides: list[str] | None,
    defenses: list[str] | None = None,
    init_from: Path | None = None,
) -> RunConfig:
    """Merge a YAML config, flags and ``--set`` overrides into a validated :class:`RunConfig`."""
    base = _guard(load_run_config, config).model_dump() if config else {}
    data = {**base, **{k: v for k, v in (("dataset", dataset), ("model", model)) if v is not None}}
    if defenses:
        data["defenses"] = list(base.get("defenses", [])) + [{"name": d} for d in defenses]
    if init_from is not None:
        data["init_from"] = str(init_from)
    extra = list(overrides or [])
    extra += [
        f"train.{k}={v}"
        for k, v in (("epochs", epochs), ("seed", seed), ("device", device))
        if v is not None
    ]
    run_config = _guard(lambda: parse_run_config(apply_overrides(data, extra), "settings"))
    _guard(resolve_dataset, run_config.dataset)
    return run_config


@app.command()
def train(
    dataset: DatasetOpt = None,
    model: ModelOpt = None,
    config: ConfigOpt = None,
    epochs: EpochsOpt = None,
    seed: SeedOpt = None,
    device: DeviceOpt = None,
    set_: SetOpt = None,
    defense: Annotated[
        list[str] | None,
        typer.Option(
            "--defense", help="amr, modality-balancing, uat, uat-mc (repeatable: they stack)"
        ),
    ] = None,
    init_from: Annotated[
        Path | None,
        typer.Option(help="run directory whose best weights start training (fine-tune)"),
    ] = None,
    run_dir: Annotated[
        Path | None,
        typer.Option(help="run directory (default runs/<dataset>-<model>-s<seed>-<time>)"),
    ] = None,
    resume: Annotated[bool, typer.Option(help="continue from a checkpoint in --run-dir")] = True,
) -> None:
    """Train a model (optionally with defenses, from a clean checkpoint); print test metrics."""
    run_config = _run_config(config, dataset, model, epochs, seed, device, set_, defense, init_from)
    target = run_dir or default_run_dir(run_config)
    defended = (
        ""
        if run_config.defense_label() == "none"
        else f" with [bold]{run_config.defense_label()}[/]"
    )
    console.print(
        f"training [bold]{run_config.model}[/]{defended} on [bold]{run_config.dataset}[/] → "
        f"{target}"
    )
    path, result = _guard(train_run, run_config, target, resume)
    for name, notes in result.notes.items():
        console.print(f"{name}: {notes}")
    console.print(
        metrics_table(
            result.test,
            f"test metrics at best validation epoch {result.best_epoch} "
            f"({run_config.model}, {run_config.dataset}, seed {run_config.train.seed})",
        )
    )
    console.print(f"run directory: {path}  ({result.seconds:.1f} s)")


@app.command("tune")
def tune_cmd(
    grid: Annotated[
        list[str],
        typer.Option("--grid", help="model setting and values, e.g. reg_weight=1e-4,1e-2"),
    ],
    dataset: DatasetOpt = None,
    model: ModelOpt = None,
    config: ConfigOpt = None,
    epochs: EpochsOpt = None,
    seed: SeedOpt = None,
    device: DeviceOpt = None,
    set_: SetOpt = None,
    root: Annotated[Path | None, typer.Option(help="folder for the grid's runs")] = None,
) -> None:
    """Grid-search model settings; choose on the validation split (test is reported, never used)."""
    run_config = _run_config(config, dataset, model, epochs, seed, device, set_)
    target = root or default_run_dir(run_config, "runs/tune")
    outcome = _guard(tune, run_config, _guard(parse_grid, grid), target)
    table = Table(
        title=f"grid search of {run_config.model} on {run_config.dataset} "
        f"(seed {run_config.train.seed})"
    )
    for col in outcome.table.columns:
        if col != "run_dir":
            table.add_column(col, justify="right")
    for _, row in outcome.table.iterrows():
        table.add_row(
            *(
                f"{v:.4f}" if isinstance(v, float) else str(v)
                for k, v in row.items()
                if k != "run_dir"
            )
        )
    console.print(table)
    console.print(f"best on validation: {outcome.best_settings} → {outcome.best_run_dir}")


@app.command("evaluate")
def evaluate_cmd(
    run_dir: Annotated[Path, typer.Argument(help="run directory written by 'mmrobust train'")],
    split: Annotated[str, typer.Option(help="valid or test")] = "test",
    protocol: Annotated[
        str, typer.Option(help="full (all items) or sampled (999 negatives)")
    ] = "full",
    negatives: Annotated[
        int, typer.Option(help="negatives per positive for the sampled protocol")
    ] = 999,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda")] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
) -> None:
    """Evaluate a run's best checkpoint."""
    metrics = _guard(evaluate_run, run_dir, split, protocol, negatives, device)
    if as_json:
        sys.stdout.write(json.dumps(metrics, indent=2) + "\n")
    else:
        console.print(metrics_table(metrics, f"{split} ({protocol} ranking) — {run_dir}"))


# ---------------------------------------------------------------------- attack
RunDirArg = Annotated[Path, typer.Argument(help="run directory written by 'mmrobust train'")]
#: command-line option → the measurement setting it sets (``promotion.x``: a promotion setting)
OPTION_SETTINGS = {
    "attack": "attacks",
    "budget": "budgets",
    "norm": "norm",
    "point": "point",
    "pgd_steps": "pgd_steps",
    "restarts": "restarts",
    "beta": "betas",
    "factor": "factor",
    "negatives": "n_negatives",
    "k": "ks",
    "seed": "seed",
    "targets": "promotion.n_targets",
    "n_interactions": "promotion.n_interactions",
    "selection": "promotion.selection",
    "surrogate": "promotion.surrogate",
    "top_share": "top_share",
}


ATTACK_GOALS = ("untargeted", "promotion", "adaptive", "sampled")
#: measurements that take one budget (``--budget`` sets it) rather than a list
SINGLE_BUDGET = ("mismatch",)


def measurement_spec(kind: str, options: dict[str, object]) -> MeasurementSpec:
    """The typed spec of measurement ``kind`` from the options the user gave (None: not given);
    an option the measurement does not use is an error, never ignored."""
    spec_class = _guard(measurement_class, kind).Spec
    data: dict[str, object] = {"kind": kind}
    for option, value in options.items():
        if value is None or value == []:
            continue
        setting = _setting(kind, option, value)
        head, _, tail = setting[0].partition(".")
        if head not in spec_class.model_fields:
            usable = sorted(
                o
                for o, s in OPTION_SETTINGS.items()
                if s.partition(".")[0] in spec_class.model_fields
            )
            _fail(
                f"--{option.replace('_', '-')} does not apply to {kind}; its options: "
                + ", ".join(f"--{o.replace('_', '-')}" for o in usable)
            )
        if tail:
            data.setdefault(head, {})[tail] = setting[1]  # type: ignore[index]
        else:
            data[head] = setting[1]
    return _guard(spec_class.model_validate, data)


def _setting(kind: str, option: str, value: object) -> tuple[str, object]:
    """(setting, value) of one option; ``--modalities`` is a list of sets for untargeted attacks
    and one set for promotion."""
    if option == "budget" and kind in SINGLE_BUDGET:
        return "budget", value
    if option == "budget" and not isinstance(value, list):
        return "budgets", [value]
    if option != "modalities":
        return OPTION_SETTINGS[option], value
    sets = [[m for m in item.split(",") if m] for item in value]  # type: ignore[union-attr]
    if kind == "promotion":
        if len(sets) != 1:
            _fail("--modalities takes one set for promotion (e.g. --modalities image,text)")
        return "modalities", sets[0]
    return "modality_sets", sets


def _record(run_dir: Path, spec: MeasurementSpec, device: str):
    run = _guard(load_run, run_dir, device)
    measured, paths = _guard(record, run, spec)
    return run, measured, paths


@app.command("attack")
def attack_cmd(
    run_dir: RunDirArg,
    goal: Annotated[
        str,
        typer.Option(
            help="untargeted (lower accuracy), promotion (push target items), adaptive "
            "(gradient-masking check: FGSM vs PGD, 50 steps × 5 restarts) or sampled "
            "(AMR-paper protocol, clean and attacked)"
        ),
    ] = "untargeted",
    attack: Annotated[
        list[str] | None, typer.Option("--attack", help="random, fgsm, pgd (repeatable)")
    ] = None,
    budget: Annotated[
        list[float] | None, typer.Option("--budget", help="r (relative) per row (repeatable)")
    ] = None,
    modalities: Annotated[
        list[str] | None,
        typer.Option(
            "--modalities", help="comma-separated set (repeatable for untargeted); default all"
        ),
    ] = None,
    norm: Annotated[str | None, typer.Option(help="l2 or linf [default: l2]")] = None,
    point: Annotated[str | None, typer.Option(help="raw or embedding [default: raw]")] = None,
    pgd_steps: Annotated[
        int | None, typer.Option(help="PGD steps [default: 10; adaptive: 50]")
    ] = None,
    restarts: Annotated[
        int | None, typer.Option(help="PGD random restarts [default: 1; adaptive: 5]")
    ] = None,
    beta: Annotated[
        list[float] | None,
        typer.Option("--beta", help="promotion: alignment weights (repeatable) [default: 0, 1]"),
    ] = None,
    targets: Annotated[
        int | None, typer.Option(help="promotion: number of targets [default: 100]")
    ] = None,
    n_interactions: Annotated[
        int | None, typer.Option(help="promotion: training interactions of a target [default: 5]")
    ] = None,
    selection: Annotated[
        str | None, typer.Option(help="promotion: unpopular, uniform or popular")
    ] = None,
    surrogate: Annotated[str | None, typer.Option(help="promotion: logsigmoid or relu")] = None,
    factor: Annotated[
        float | None,
        typer.Option(help="adaptive: flag when the PGD drop > factor × the FGSM drop [default: 2]"),
    ] = None,
    negatives: Annotated[
        int | None, typer.Option(help="sampled: negatives per test pair [default: 999]")
    ] = None,
    k: Annotated[
        list[int] | None, typer.Option("--k", help="cut-offs of the attacked metrics (repeatable)")
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(help="seed of negatives, noise, targets and users [default: the run's seed]"),
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda")] = "auto",
) -> None:
    """Attack a trained run's item features; print the table; record it in the run."""
    if goal not in ATTACK_GOALS:
        _fail(f"unknown goal '{goal}'; use {', '.join(ATTACK_GOALS)}")
    options = {
        "attack": attack,
        "budget": budget,
        "modalities": modalities,
        "norm": norm,
        "point": point,
        "pgd_steps": pgd_steps,
        "restarts": restarts,
        "beta": beta,
        "targets": targets,
        "n_interactions": n_interactions,
        "selection": selection,
        "surrogate": surrogate,
        "factor": factor,
        "negatives": negatives,
        "k": k,
        "seed": seed,
    }
    spec = measurement_spec(goal, options)
    _, measured, _ = _record(run_dir, spec, device)
    table = measured.table
    if goal == "adaptive":
        console.print(
            _frame_table(
                table,
                f"gradient-masking check: FGSM vs PGD-{spec.pgd_steps} "
                f"(flagged: PGD drop > {spec.factor:g}× FGSM drop)",
            )
        )
    elif goal == "untargeted":
        cut = 20 if 20 in spec.ks else max(spec.ks)
        view = table[table.k == cut].pivot_table(
            index=["modalities", "budget"], columns=["attack", "metric"], values="attacked"
        )
        clean = table[table.k == cut].groupby("metric").clean.first()
        console.print(
            f"clean: Recall@{cut} {clean.get('recall', float('nan')):.4f}, "
            f"NDCG@{cut} {clean.get('ndcg', float('nan')):.4f}"
        )
        console.print(_frame_table(view.reset_index(), f"attacked test metrics @{cut}"))
    elif goal == "promotion":
        wide = wide_promotion(table)
        cols = [
            "attack",
            "budget",
            "beta",
            "hr_before_attack",
            "hr_after_attack",
            "ri_percent_attack",
            "hr_before_heldout",
            "hr_after_heldout",
            "ri_percent_heldout",
            "improved_share_attack",
        ]
        console.print(f"targets: {measured.facts['target_note']}")
        console.print(_frame_table(wide[wide.k == 50][cols], "promotion, HR@50 (RI in %)"))
    else:
        console.print(_frame_table(table, "sampled protocol, test"))
    console.print(
        f"tables and plots in {run_dir / 'attacks'}; rows added to {run_dir / 'results.parquet'}"
    )


@app.command("analyze")
def analyze_cmd(
    run_dir: RunDirArg,
    what: Annotated[str, typer.Option(help="modality, mismatch or all")] = "all",
    budget: Annotated[float | None, typer.Option(help="attack budget r [default: 0.05]")] = None,
    targets: Annotated[
        int | None, typer.Option(help="mismatch: number of targets [default: 100]")
    ] = None,
    top_share: Annotated[
        float | None, typer.Option(help="mismatch: share of attack users in U_m [default: 0.1]")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="seed [default: the run's seed]")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda")] = "auto",
) -> None:
    """Modality-imbalance and gradient-mismatch analyses of a trained run (tables + plots)."""
    kinds = {
        "modality": ["modality"],
        "mismatch": ["mismatch"],
        "all": ["modality", "mismatch"],
    }.get(what)
    if kinds is None:
        _fail(f"unknown analysis '{what}'; use modality, mismatch or all")
    specs = {}
    for kind in kinds:
        given: dict[str, object] = {"budget": budget, "seed": seed}
        if (
            kind == "mismatch" or what == "modality"
        ):  # with --what all they go to the mismatch analysis
            given.update(targets=targets, top_share=top_share)
        specs[kind] = measurement_spec(kind, given)
    if "modality" in specs:
        _, measured, paths = _record(run_dir, specs["modality"], device)
        console.print(_frame_table(measured.table, "score margins, clean vs FGSM-L2"))
        sensitive = ", ".join(f"{s} (r={b:g})" for b, s in measured.facts["sensitive"].items())
        console.print(
            f"sensitive modality: [bold]{sensitive}[/]; plots: "
            f"{', '.join(str(p) for p in paths if p.suffix == '.png')}"
        )
    if "mismatch" in specs:
        _, measured, _ = _record(run_dir, specs["mismatch"], device)
        console.print(
            _frame_table(
                measured.table.groupby("pair").jaccard.describe().reset_index(),
                "Jaccard(U_a, U_b) over targets",
            )
        )
        if "gains" in measured.tables:
            console.print(
                _frame_table(
                    measured.tables["gains"],
                    "attack gain by the users the loss is built over (HR@50 on A)",
                )
            )
    console.print(f"files in {run_dir / 'analysis'}")


def _frame_table(frame, title: str) -> Table:
    table = Table(title=title)
    columns = [
        " / ".join(str(x) for x in c) if isinstance(c, tuple) else str(c) for c in frame.columns
    ]
    for col in columns:
        table.add_column(col, justify="right")
    for row in frame.itertuples(index=False):
        table.add_row(*(f"{v:.4f}" if isinstance(v, float) else str(v) for v in row))
    return table


# ------------------------------------------------------------------- benchmark
def _paper_table(table) -> Table:
    """A paper-layout table for the terminal (best in bold, second best underlined)."""
    view = Table(title=table.title, caption="\n".join(table.legend), caption_justify="left")
    for i, col in enumerate(table.columns):
        view.add_column(col, justify="left" if i < table.n_index else "right", overflow="fold")
    for row in table.rich_rows():
        view.add_row(*row)
    return view


def _show_table(table) -> None:
    """A paper table as a rich table on a terminal; as markdown (best **bold**, second
    <u>underlined</u>) when the output is a file or a pipe, so the marks survive in logs."""
    if console.is_terminal:
        console.print(_paper_table(table))
    else:
        sys.stdout.write(table.markdown() + "\n\n")
        sys.stdout.flush()


@app.command("benchmark")
def benchmark_cmd(
    config: Annotated[
        str | None,
        typer.Argument(
            help="benchmark YAML, or a packaged config: default, modality-balancing, "
            "band-together, amr (default when omitted: default)"
        ),
    ] = None,
    preset: Annotated[
        str | None,
        typer.Option(help="preset of the config: quick (CI size) or full (the paper's settings)"),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="results folder [default: results/<name>[-<preset>]]")
    ] = None,
    backend: Annotated[str, typer.Option(help="local (in-process) or ray")] = "local",
    address: Annotated[
        str | None, typer.Option(help="Ray cluster address (default: start a local Ray instance)")
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="override, e.g. seeds=[0], finetune.epochs=5, attacks.untargeted.budgets=[0.05]",
        ),
    ] = None,
    models: Annotated[
        str | None,
        typer.Option(
            help="run only these of the config's models, e.g. vbpr,mmgcn (their settings kept)"
        ),
    ] = None,
    device: Annotated[
        str | None, typer.Option(help="auto, cpu, cuda (overrides the config)")
    ] = None,
    cpus_per_cell: Annotated[
        float | None, typer.Option(help="CPUs each cell declares to Ray")
    ] = None,
    gpus_per_cell: Annotated[
        float | None, typer.Option(help="GPUs each cell declares to Ray")
    ] = None,
    max_cells: Annotated[
        int | None, typer.Option(help="stop after computing this many cells (re-run to resume)")
    ] = None,
    progress: Annotated[bool, typer.Option(help="show a progress bar over cells")] = True,
    plan: Annotated[
        bool,
        typer.Option(
            "--plan",
            help="only show the cells done and to do per model and table row, "
            "with the seconds measured so far; run nothing",
        ),
    ] = False,
) -> None:
    """Run a benchmark grid (datasets × models × defenses × attacks × budgets × seeds); print
    its tables.

    Finished cells are reused (an interrupted benchmark resumes); the results store, the report
    (markdown + HTML) and its plots go to --out."""
    extra = list(set_ or []) + [
        f"{k}={v}"
        for k, v in (
            ("device", device),
            ("resources.num_cpus", cpus_per_cell),
            ("resources.num_gpus", gpus_per_cell),
        )
        if v is not None
    ]
    bench = _guard(load_benchmark, config, preset, extra, models.split(",") if models else None)
    for name in bench.datasets:
        _guard(resolve_dataset, name)
    target = out or Path("results") / (bench.name + (f"-{bench.preset}" if bench.preset else ""))
    if plan:
        _show_plan(bench, target)
        return
    executor = _guard(
        make_executor, backend, address, bench.resources.num_cpus, bench.resources.num_gpus
    )
    console.print(
        f"benchmark [bold]{bench.name}[/]{f' (preset {bench.preset})' if bench.preset else ''} → "
        f"{target} "
        f"on the {backend} backend",
        soft_wrap=True,
    )
    result = _guard(run_benchmark, bench, target, executor, max_cells, progress)
    for table in result.report.get("tables", []):
        _show_table(table)
    outcome = result.outcome
    console.print(
        f"{len(outcome.computed)} cells computed, "
        f"{len(result.grid.cells) - len(outcome.computed) - len(outcome.failed)}"
        f" reused or pending, {len(outcome.failed)} failed; {result.seconds:.0f} s"
    )
    if outcome.stopped:
        console.print(f"stopped after {max_cells} cells: run the same command again to resume")
    console.print(
        f"report: {result.report.get('html')} (and {result.report.get('markdown')}); "
        f"results: {result.out / 'results.parquet'}",
        soft_wrap=True,
    )
    if outcome.failed:
        for cid, message in outcome.failed.items():
            err_console.print(f"failed: {result.grid.cells[cid].title}: {message}", highlight=False)
        raise typer.Exit(code=1)


def _show_plan(bench, target: Path) -> None:
    frame = _guard(plan_benchmark, bench, target)
    shown = frame.assign(s_per_cell=frame.s_per_cell.round(1), s_to_go=frame.s_to_go.round(0))
    console.print(
        _frame_table(
            shown, f"{bench.name}: cells in {target} (s = measured seconds per finished cell)"
        )
    )
    for line in frame.attrs.get("skipped", []):
        console.print(line, highlight=False, soft_wrap=True)
    unknown = int(frame.todo[frame.s_per_cell.isna()].sum())
    console.print(
        f"{int(frame.done.sum())} of {int(frame.cells.sum())} cells done; {int(frame.todo.sum())} "
        "to do, "
        f"≈ {frame.s_to_go.sum() / 3600:.1f} h for those whose group has a finished cell"
        + (f", {unknown} in groups with none finished yet" if unknown else ""),
        soft_wrap=True,
    )


@app.command("report")
def report_cmd(
    results: Annotated[Path, typer.Argument(help="results folder written by 'mmrobust benchmark'")],
    table: Annotated[str | None, typer.Option(help="print only this table of the config")] = None,
    where: Annotated[
        list[str] | None,
        typer.Option("--where", help="query: column=value (repeatable; v1,v2 for any)"),
    ] = None,
    by: Annotated[
        str | None,
        typer.Option(help="query: comma-separated columns to group by (mean ± std over seeds)"),
    ] = None,
) -> None:
    """Render a benchmark's report again (markdown + HTML + plots), or query its results store."""
    store = _guard(ResultsStore.load, results)
    if where or by:
        filters = {}
        for item in where or []:
            path, value = _guard(parse_override, item, "metric=recall or k=10,20")
            filters[".".join(path)] = value
        columns = [c for c in (by or "").split(",") if c]
        frame = (
            _guard(store.summary, columns, **filters) if columns else _guard(store.query, **filters)
        )
        console.print(
            _frame_table(
                frame.head(200), f"{len(frame)} rows" + (" (first 200)" if len(frame) > 200 else "")
            )
        )
        return
    if table:
        _show_table(_guard(build_table, store, _guard(store.table_spec, table)))
        return
    paths = _guard(write_report, store, results)
    for item in paths["tables"]:
        _show_table(item)
    console.print(
        f"report: {paths['html']} (and {paths['markdown']}); {len(paths['plots'])} plots in "
        f"{results / 'plots'}",
        soft_wrap=True,
    )


def main() -> None:  # pragma: no cover
    warnings.filterwarnings("ignore", category=UserWarning, module="torch")
    tune_allocator()
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
