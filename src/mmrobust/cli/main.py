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
    DataError,
    build_dataset,
    import_dataset,
    list_datasets,
    load_dataset,
    resolve_dataset,
)
from mmrobust.experiments import (
    ConfigError,
    RunConfig,
    apply_overrides,
    evaluate_run,
    load_run_config,
    parse_grid,
    parse_run_config,
    tune,
)
from mmrobust.experiments.config import format_validation_error
from mmrobust.experiments.runs import default_run_dir, train_run

app = typer.Typer(help="Adversarial robustness of multimodal recommenders.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
data_app = typer.Typer(help="List, inspect, build and import datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")
console = Console()
err_console = Console(stderr=True)

EXPECTED_ERRORS = (DataError, ConfigError, ValueError, FileNotFoundError, FloatingPointError)


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
        table.add_row(name, *(f"{metrics[f'{name}@{k}']:.4f}" if f"{name}@{k}" in metrics else "" for k in ks))
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
def data_show(name: Annotated[str, typer.Argument(help="dataset name or folder")] = DEFAULT_DATASET) -> None:
    """Load a dataset (validating it) and print its summary."""
    ds = _guard(load_dataset, name)
    table = Table(title=f"dataset {ds.name}", show_header=False)
    for key, value in ds.summary().items():
        if isinstance(value, float):
            value = f"{value:.6g}"
        table.add_row(key, str(value))
    console.print(table)


@data_app.command("build")
def data_build(name: Annotated[str, typer.Argument(help="built-in dataset to build")] = DEFAULT_DATASET,
               force: Annotated[bool, typer.Option(help="rebuild even if cached")] = False) -> None:
    """Build a built-in dataset (cached under $MMROBUST_HOME/datasets)."""
    path = _guard(build_dataset, name, force=force)
    ds = _guard(load_dataset, name)
    console.print(f"built [bold]{name}[/] at {path}: {ds}")


@data_app.command("import")
def data_import(folder: Annotated[Path, typer.Argument(help="MMRec-layout folder")],
                name: Annotated[str | None, typer.Option(help="name to register (default: folder name)")] = None) -> None:
    """Validate an MMRec folder and register it under a name."""
    entry = _guard(import_dataset, folder, name)
    console.print(f"registered [bold]{entry.name}[/] → {entry.path}")


# ----------------------------------------------------------------------- train
DatasetOpt = Annotated[str | None, typer.Option(help="dataset name or folder (default ml100k-meta)")]
ModelOpt = Annotated[str | None, typer.Option(help="pop, mf, lightgcn, vbpr")]
ConfigOpt = Annotated[Path | None, typer.Option(help="run config YAML")]
EpochsOpt = Annotated[int | None, typer.Option(help="epoch cap")]
SeedOpt = Annotated[int | None, typer.Option(help="random seed")]
DeviceOpt = Annotated[str | None, typer.Option(help="auto, cpu, cuda")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="override, e.g. train.lr=0.01 or reg_weight=0.1")]


def _run_config(config: Path | None, dataset: str | None, model: str | None, epochs: int | None,
                seed: int | None, device: str | None, overrides: list[str] | None) -> RunConfig:
    """Merge a YAML config, flags and ``--set`` overrides into a validated :class:`RunConfig`."""
    base = _guard(load_run_config, config).model_dump() if config else {}
    data = {**base, **{k: v for k, v in (("dataset", dataset), ("model", model)) if v is not None}}
    extra = list(overrides or [])
    extra += [f"train.{k}={v}" for k, v in (("epochs", epochs), ("seed", seed), ("device", device)) if v is not None]
    run_config = _guard(lambda: parse_run_config(apply_overrides(data, extra), "settings"))
    _guard(resolve_dataset, run_config.dataset)
    return run_config


@app.command()
def train(dataset: DatasetOpt = None, model: ModelOpt = None, config: ConfigOpt = None, epochs: EpochsOpt = None,
          seed: SeedOpt = None, device: DeviceOpt = None, set_: SetOpt = None,
          run_dir: Annotated[Path | None, typer.Option(help="run directory (default runs/<dataset>-<model>-s<seed>-<time>)")] = None,
          resume: Annotated[bool, typer.Option(help="continue from a checkpoint in --run-dir")] = True) -> None:
    """Train a model; print validation-selected test metrics; write a run directory."""
    run_config = _run_config(config, dataset, model, epochs, seed, device, set_)
    target = run_dir or default_run_dir(run_config)
    console.print(f"training [bold]{run_config.model}[/] on [bold]{run_config.dataset}[/] → {target}")
    path, result = _guard(train_run, run_config, target, resume)
    console.print(metrics_table(result.test, f"test metrics at best validation epoch {result.best_epoch} "
                                             f"({run_config.model}, {run_config.dataset}, seed {run_config.train.seed})"))
    console.print(f"run directory: {path}  ({result.seconds:.1f} s)")


@app.command("tune")
def tune_cmd(grid: Annotated[list[str], typer.Option("--grid", help="model setting and values, e.g. reg_weight=1e-4,1e-2")],
             dataset: DatasetOpt = None, model: ModelOpt = None, config: ConfigOpt = None, epochs: EpochsOpt = None,
             seed: SeedOpt = None, device: DeviceOpt = None, set_: SetOpt = None,
             root: Annotated[Path | None, typer.Option(help="folder for the grid's runs")] = None) -> None:
    """Grid-search model settings; choose on the validation split (test is reported, never used)."""
    run_config = _run_config(config, dataset, model, epochs, seed, device, set_)
    target = root or default_run_dir(run_config, "runs/tune")
    outcome = _guard(tune, run_config, _guard(parse_grid, grid), target)
    table = Table(title=f"grid search of {run_config.model} on {run_config.dataset} (seed {run_config.train.seed})")
    for col in outcome.table.columns:
        if col != "run_dir":
            table.add_column(col, justify="right")
    for _, row in outcome.table.iterrows():
        table.add_row(*(f"{v:.4f}" if isinstance(v, float) else str(v) for k, v in row.items() if k != "run_dir"))
    console.print(table)
    console.print(f"best on validation: {outcome.best_settings} → {outcome.best_run_dir}")


@app.command("evaluate")
def evaluate_cmd(
    run_dir: Annotated[Path, typer.Argument(help="run directory written by 'mmrobust train'")],
    split: Annotated[str, typer.Option(help="valid or test")] = "test",
    protocol: Annotated[str, typer.Option(help="full (all items) or sampled (999 negatives)")] = "full",
    negatives: Annotated[int, typer.Option(help="negatives per positive for the sampled protocol")] = 999,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda")] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
) -> None:
    """Evaluate a run's best checkpoint."""
    metrics = _guard(evaluate_run, run_dir, split, protocol, negatives, device)
    if as_json:
        sys.stdout.write(json.dumps(metrics, indent=2) + "\n")
    else:
        console.print(metrics_table(metrics, f"{split} ({protocol} ranking) — {run_dir}"))


def main() -> None:  # pragma: no cover
    warnings.filterwarnings("ignore", category=UserWarning, module="torch")
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
