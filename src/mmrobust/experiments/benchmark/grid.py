"""A benchmark's grid: datasets × models × defense variants × seeds × measurements as cells.

Each cell is one unit of work with a stable id (a hash of its coordinates):

* ``train``: a model trained from scratch (the clean model, or a unimodal variant);
* ``finetune``: a defense (or a stack of defenses) fine-tuned from a clean model, as the
  defense papers do (modality-balancing paper §5.1.4; Band Together §5.1; AMR §4);
* ``eval``: one single-setting measurement of a trained run (a spec of the measurement
  registry: an untargeted attack at one budget, one promotion attack, the masking check,
  the modality margins, the sampled protocol, the mismatch analysis).

Equal coordinates give equal ids, so a clean model is trained once and reused by every
attack and every defense that fine-tunes from it, and two table rows naming the same
defense settings share one run.  *Members* tie the grid to what the tables show: one per
(dataset, model, defense variant, seed), naming its run cell and its eval cells.

A combination that cannot work (a defense or measurement whose :class:`~mmrobust.models.Needs`
the model does not meet) is not a cell: it is listed in ``Grid.skipped`` with the reason.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from mmrobust.defenses import defense_class
from mmrobust.experiments.benchmark.config import BenchmarkConfig, Selection, VariantConfig
from mmrobust.experiments.config import RunConfig
from mmrobust.experiments.measurements import MeasurementSpec, make_measurement
from mmrobust.models import ModelProfile, Needs, profile_of, why_not

# settings that change where or how fast a run goes, never its numbers: not part of a cell's id
NOT_IDENTITY = ("device", "progress", "eval_batch_size", "checkpoint_every")


class Unimodal:
    """Unimodal variants retrain the model on one modality: it must read features."""

    needs = Needs("a unimodal variant", routes=("direct", "graph"))


@dataclass
class Cell:
    """One unit of work: a training (``config``; a fine-tune starts from the best weights in
    ``init_dir``) or a measurement (``spec``) of the run in ``run_dir`` (relative to the
    results folder)."""

    id: str
    kind: Literal["train", "finetune", "eval"]
    dataset: str
    title: str
    run_dir: str
    needs: tuple[str, ...] = ()
    model: str = ""
    config: RunConfig | None = None
    init_dir: str | None = None
    spec: MeasurementSpec | None = None

    @property
    def level(self) -> int:
        return {"train": 0, "finetune": 1, "eval": 2}[self.kind]

    def describe(self) -> dict[str, Any]:
        """The cell's settings as plain values (for trackers and logs)."""
        if self.spec is not None:
            return self.spec.model_dump(mode="json")
        return {"defenses": [d.name for d in self.config.defenses]} if self.config else {}


@dataclass(frozen=True)
class Member:
    """A (dataset, model, variant, seed) of the tables: its run cell and its eval cells."""

    dataset: str
    model: str
    variant: str
    group: str
    kind: str
    setting: str
    seed: int
    run: str
    evals: tuple[tuple[str, str], ...]  # (eval cell id, attack entry name)


@dataclass
class Grid:
    cells: dict[str, Cell] = field(default_factory=dict)
    members: list[Member] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def rows(self) -> dict[str, str]:
        """Cell id → the table row (variant label of the config) it serves first; a clean model
        that is only fine-tuned from is not in it."""
        out: dict[str, str] = {}
        for member in self.members:
            for cid in (member.run, *(cid for cid, _ in member.evals)):
                out.setdefault(cid, member.group)
        return out

    def ordered(self) -> list[Cell]:
        """Cells with every dependency before its dependents: every training cell first, then
        table row by table row (the config's variant order) its fine-tunes and measurements,
        so that an interrupted long benchmark has finished whole rows rather than many runs
        and no numbers.  A cell shared by several rows goes with the first."""
        groups = list(dict.fromkeys(m.group for m in self.members))
        row = {cid: groups.index(group) for cid, group in self.rows().items()}
        return sorted(
            self.cells.values(), key=lambda c: (c.level > 0, row.get(c.id, len(groups)), c.level)
        )

    def add(self, cell: Cell) -> str:
        self.cells.setdefault(cell.id, cell)
        return cell.id

    def skip(self, what: str, reason: str) -> None:
        line = f"{what}: skipped ({reason})"
        if line not in self.skipped:
            self.skipped.append(line)


def cell_id(identity: dict[str, Any]) -> str:
    text = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.=+-]+", "-", text).strip("-").lower() or "x"


def _identity(config: RunConfig) -> dict[str, Any]:
    data = config.model_dump(mode="json")
    data["train"] = {k: v for k, v in data["train"].items() if k not in NOT_IDENTITY}
    return data


def expand_grid(config: BenchmarkConfig, datasets: Mapping[str, Any]) -> Grid:
    """Expand the benchmark into cells and members.  ``datasets`` maps each dataset of the
    config to its loaded :class:`~mmrobust.data.Dataset` (or anything with ``name`` and
    ``modalities``): unimodal variants and the components' needs read the modalities."""
    grid = Grid()
    for dataset, entry, seed in itertools.product(config.datasets, config.models, config.seeds):
        params, train = entry.settings(dataset)
        run_train = {
            **config.train,
            **train,
            "seed": seed,
            "device": config.device,
            "progress": False,
        }
        clean = RunConfig(dataset=dataset, model=entry.name, model_params=params, train=run_train)
        modalities = tuple(datasets[dataset].modalities)
        where = f"{datasets[dataset].name}/{entry.name}"
        clean_id = _train_cell(grid, clean, where, "clean", seed)
        for variant in config.defenses:
            for label, setting, concrete in variant.expand(modalities):
                run_id = _variant_run(
                    grid, config, concrete, clean, clean_id, where, label, seed, modalities
                )
                if run_id is None:
                    continue
                profile = profile_of(entry.name, grid.cells[run_id].config.model_params, modalities)
                evals = _eval_cells(
                    grid, config, run_id, (label, variant.label), seed, profile, where
                )
                grid.members.append(
                    Member(
                        datasets[dataset].name,
                        entry.name,
                        label,
                        variant.label,
                        variant.kind,
                        json.dumps(setting, sort_keys=True),
                        seed,
                        run_id,
                        tuple(evals),
                    )
                )
    return grid


def _train_cell(grid: Grid, config: RunConfig, where: str, label: str, seed: int) -> str:
    cid = cell_id({"kind": "train", **_identity(config)})
    run_dir = f"runs/{where}/{slug(label)}-s{seed}-{cid[:8]}"
    return grid.add(
        Cell(
            cid,
            "train",
            config.dataset,
            f"{where}/{label}/s{seed}: train",
            run_dir,
            model=config.model,
            config=config,
        )
    )


def _variant_run(
    grid: Grid,
    bench: BenchmarkConfig,
    variant: VariantConfig,
    clean: RunConfig,
    clean_id: str,
    where: str,
    label: str,
    seed: int,
    modalities: tuple[str, ...],
) -> str | None:
    if variant.kind == "clean":
        return clean_id
    profile = profile_of(clean.model, clean.model_params, modalities)
    components = (
        [Unimodal]
        if variant.kind == "unimodal"
        else [defense_class(d.name) for d in variant.defenses]
    )
    reason = why_not(profile, *components)
    if reason is not None:
        grid.skip(f"{where}/{label}", reason)
        return None
    if variant.kind == "unimodal":
        params = {**clean.model_params, "modalities": [variant.modality]}
        return _train_cell(
            grid, clean.model_copy(update={"model_params": params}), where, label, seed
        )
    ft = bench.finetune
    train = {
        **clean.train.model_dump(),
        "eval_every": ft.epochs,
        **ft.train,
        "lr": ft.lr,
        "epochs": ft.epochs,
        "restore": "last",
        **variant.finetune,
    }
    if "epochs" in variant.finetune and "eval_every" not in variant.finetune:
        train["eval_every"] = train["epochs"]
    config = RunConfig(
        dataset=clean.dataset,
        model=clean.model,
        model_params=clean.model_params,
        defenses=[d.model_dump() for d in variant.defenses],
        train=train,
    )
    cid = cell_id({"kind": "finetune", "from": clean_id, **_identity(config)})
    run_dir = f"runs/{where}/{slug(label)}-s{seed}-{cid[:8]}"
    return grid.add(
        Cell(
            cid,
            "finetune",
            clean.dataset,
            f"{where}/{label}/s{seed}: fine-tune",
            run_dir,
            (clean_id,),
            clean.model,
            config,
            grid.cells[clean_id].run_dir,
        )
    )


def _eval_cells(
    grid: Grid,
    bench: BenchmarkConfig,
    run_id: str,
    labels: tuple[str, ...],
    seed: int,
    profile: ModelProfile,
    where: str,
) -> list[tuple[str, str]]:
    """[(eval cell id, attack entry name)] of one run; equal measurements share a cell."""
    run = grid.cells[run_id]
    out = []
    for entry in bench.attacks:
        if not entry.applies(labels, seed, run.model):
            continue
        for cell_spec in _resolved(entry, seed).cells():
            reason = make_measurement(cell_spec).why_not(profile)
            if reason is not None:
                grid.skip(f"{where}/{labels[0]}: {entry.name}", reason)
                continue
            cid = cell_id({"kind": "eval", "run": run_id, **cell_spec.model_dump(mode="json")})
            title = f"{where}/{labels[0]}/s{seed}: {entry.name} {cell_spec.label()}"
            grid.add(
                Cell(
                    cid,
                    "eval",
                    run.dataset,
                    title,
                    run.run_dir,
                    (run_id,),
                    run.model,
                    spec=cell_spec,
                )
            )
            out.append((cid, entry.name))
    return out


def _resolved(entry: Selection, seed: int) -> MeasurementSpec:
    """The entry's measurement spec with the seed filled in (the run's, unless the entry sets
    one)."""
    spec = entry.spec()
    return spec.model_copy(update={"seed": seed if spec.seed is None else spec.seed})
