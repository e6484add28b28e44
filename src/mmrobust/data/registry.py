"""Datasets by name.

A name is looked up, in order, among: folders registered with ``mmrobust data import``
(``$MMROBUST_HOME/registry.json``), datasets built into ``$MMROBUST_HOME/datasets``, and the
sub-folders of every folder on ``$MMROBUST_DATA_PATH`` (``os.pathsep``-separated; tests and
benchmarks put ``../shared/data`` there).  Built-in datasets (``ml100k-meta``) are built
on first use.  ``$MMROBUST_HOME`` defaults to ``~/.cache/mmrobust``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mmrobust.data.dataset import Dataset
from mmrobust.data.errors import DataError
from mmrobust.data.ml100k_meta import build_ml100k_meta
from mmrobust.data.mmrec import find_inter_file, load_mmrec
from mmrobust.utils import atomic_write_text

DEFAULT_DATASET = "ml100k-meta"


def data_home() -> Path:
    return Path(os.environ.get("MMROBUST_HOME", Path.home() / ".cache" / "mmrobust")).expanduser()


def data_path() -> list[Path]:
    raw = os.environ.get("MMROBUST_DATA_PATH", "")
    return [Path(p).expanduser() for p in raw.split(os.pathsep) if p]


def _builders() -> dict[str, Callable[..., Path]]:
    return {"ml100k-meta": build_ml100k_meta}


BUILTIN_DATASETS = ("ml100k-meta",)


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    path: Path | None
    origin: str  # "imported", "built", "data-path" or "built-in (not built yet)"


def _registry_file() -> Path:
    return data_home() / "registry.json"


def _read_registry() -> dict[str, str]:
    path = _registry_file()
    if not path.exists():
        return {}
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, TypeError, ValueError):
        raise DataError(f"the dataset registry {path} is "
                        "not valid JSON; fix or delete it") from None


def list_datasets() -> list[DatasetEntry]:
    """Every dataset name this machine knows, first match wins as in :func:`resolve_dataset`."""
    entries: dict[str, DatasetEntry] = {}
    for name, path in _read_registry().items():
        entries.setdefault(name, DatasetEntry(name, Path(path), "imported"))
    built_root = data_home() / "datasets"
    if built_root.is_dir():
        for folder in sorted(built_root.iterdir()):
            if folder.is_dir() and not folder.name.startswith("."):
                entries.setdefault(folder.name, DatasetEntry(folder.name, folder, "built"))
    for root in data_path():
        if root.is_dir():
            for folder in sorted(root.iterdir()):
                if folder.is_dir() and any(folder.glob("*.inter")):
                    entries.setdefault(folder.name, DatasetEntry(folder.name, folder, "data-path"))
    for name in BUILTIN_DATASETS:
        entries.setdefault(name, DatasetEntry(name, None, "built-in (not built yet)"))
    return list(entries.values())


def resolve_dataset(name: str) -> DatasetEntry:
    """Find a dataset by name or folder path, or raise
    a :class:`DataError` listing the known names."""
    as_path = Path(name).expanduser()
    if os.sep in name or as_path.is_dir():
        if not as_path.is_dir():
            raise DataError(f"dataset folder {as_path} does not exist")
        return DatasetEntry(as_path.resolve().name, as_path.resolve(), "folder")
    for entry in list_datasets():
        if entry.name == name:
            return entry
    known = ", ".join(e.name for e in list_datasets())
    raise DataError(
        f"unknown dataset '{name}'; known datasets: {known} (add folders with "
        "'mmrobust data import DIR' or list parent folders in MMROBUST_DATA_PATH)"
    )


def build_dataset(name: str, force: bool = False, **options: object) -> Path:
    """Build a built-in dataset into
    ``$MMROBUST_HOME/datasets/<name>`` (cached unless ``force``)."""
    builders = _builders()
    if name not in builders:
        raise DataError(f"no builder for dataset '{name}'; "
                        f"buildable datasets: {', '.join(builders)}")
    target = data_home() / "datasets" / name
    if target.is_dir() and not force:
        return target
    return builders[name](target, **options)


def load_dataset(name: str | os.PathLike | None = None) -> Dataset:
    """Load a dataset by name or folder (default: the
    built-in ``ml100k-meta``, built on first use)."""
    name = str(name) if name is not None else DEFAULT_DATASET
    entry = resolve_dataset(name)
    path = entry.path if entry.path is not None else build_dataset(entry.name)
    return load_mmrec(path, name=entry.name)


def import_dataset(folder: str | Path, name: str | None = None) -> DatasetEntry:
    """Validate an MMRec folder by loading it, then
    register it under ``name`` (default: folder name)."""
    folder = Path(folder).expanduser().resolve()
    find_inter_file(folder)
    load_mmrec(folder)
    name = name or folder.name
    if not name or os.sep in name:
        raise DataError(f"dataset name '{name}' is not usable; pick a name without '{os.sep}'")
    registry = _read_registry()
    registry[name] = str(folder)
    atomic_write_text(_registry_file(), json.dumps(registry, indent=2, sort_keys=True))
    return DatasetEntry(name, folder, "imported")
