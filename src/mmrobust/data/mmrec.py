"""Reading and writing the MMRec folder layout, with validation that names each problem.

Layout: ``<name>.inter`` (TSV, header ``userID itemID rating timestamp x_label``; x_label
0/1/2 = train/valid/test; 0-based ids) plus one ``<modality>_feat.npy`` per modality
(float, one row per item).  See METHODS.md §1.
"""

from __future__ import annotations

import csv
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from mmrobust.data.dataset import Dataset, check_feature_array
from mmrobust.data.errors import DataError

REQUIRED_COLUMNS = ("userID", "itemID", "x_label")
STANDARD_HEADER = ("userID", "itemID", "rating", "timestamp", "x_label")
FEATURE_SUFFIX = "_feat.npy"


def find_inter_file(folder: Path) -> Path:
    """The folder's ``.inter`` file: ``<folder name>.inter`` or the only one present."""
    if not folder.exists():
        raise DataError(f"dataset folder {folder} does not exist")
    if not folder.is_dir():
        raise DataError(f"{folder} is not a folder; a dataset is a "
                        "folder with a .inter file and *_feat.npy files")
    candidates = sorted(folder.glob("*.inter"))
    if not candidates:
        raise DataError(f"dataset folder {folder} has no .inter interaction file")
    named = folder / f"{folder.name}.inter"
    if named in candidates:
        return named
    if len(candidates) > 1:
        names = ", ".join(p.name for p in candidates)
        raise DataError(f"dataset folder {folder} has several .inter files "
                        f"({names}); keep one or name one {folder.name}.inter")
    return candidates[0]


def feature_files(folder: Path) -> dict[str, Path]:
    """Modality name → path for every ``<modality>_feat.npy`` in the folder."""
    return {p.name[: -len(FEATURE_SUFFIX)]: p for p in sorted(folder.glob(f"*{FEATURE_SUFFIX}"))}


def read_inter(path: Path) -> pd.DataFrame:
    """Read and validate an interaction file; return
    userID/itemID/x_label (+ any other columns) as int64."""
    with open(path, encoding="utf-8", errors="replace") as fh:
        header = fh.readline().rstrip("\r\n").split("\t")
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise DataError(
            f"{path.name} has header {header!r} but needs tab-separated columns "
            f"{' '.join(STANDARD_HEADER)} (missing {', '.join(missing)})"
        )
    try:
        frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False,
                            quoting=csv.QUOTE_NONE, usecols=list(REQUIRED_COLUMNS))
    except (pd.errors.ParserError, ValueError) as exc:
        raise DataError(f"{path.name} is not a readable tab-separated file ({exc})") from None
    for column in REQUIRED_COLUMNS:
        frame[column] = _integer_column(path, frame[column], column)
    bad = ~frame["x_label"].isin((0, 1, 2))
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(
            f"{path.name} line {row + 2}: x_label "
            f"{frame['x_label'].iloc[row]} is not 0, 1 or 2 (train/valid/test)"
        )
    return frame


def _integer_column(path: Path, values: pd.Series, column: str) -> pd.Series:
    numbers = pd.to_numeric(values.str.strip(), errors="coerce")
    bad = numbers.isna() | (numbers != np.floor(numbers))
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(f"{path.name} line {row + 2}: {column} "
                        f"{values.iloc[row]!r} is not an integer")
    numbers = numbers.astype(np.int64)
    if column != "x_label" and (numbers < 0).any():
        row = int(np.flatnonzero((numbers < 0).to_numpy())[0])
        raise DataError(f"{path.name} line {row + 2}: {column} "
                        f"{numbers.iloc[row]} is negative; ids are 0-based")
    return numbers


def read_feature_file(path: Path) -> np.ndarray:
    with open(path, "rb") as fh:
        if fh.read(6) != b"\x93NUMPY":
            raise DataError(f"{path.name} is not a readable .npy file "
                            "(no NumPy header); save it with numpy.save")
    try:
        arr = np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "object arrays" in str(exc).lower() or "pickle" in str(exc).lower():
            raise DataError(f"{path.name} holds Python objects (a pickle), "
                            "which are never loaded; save a numeric array") from None
        raise DataError(f"{path.name} is not a readable .npy file ({exc})") from None
    except OSError as exc:
        raise DataError(f"{path.name} is not a readable .npy file ({exc})") from None
    return check_feature_array(arr, path.name)


def load_mmrec(folder: str | Path, name: str | None = None) -> Dataset:
    """Load and validate an MMRec-layout folder as a :class:`Dataset`."""
    folder = Path(folder).expanduser().resolve()
    inter_path = find_inter_file(folder)
    frame = read_inter(inter_path)
    features = {m: read_feature_file(p) for m, p in feature_files(folder).items()}
    n_items = _item_count(inter_path, frame, features)
    n_users = int(frame["userID"].max()) + 1 if len(frame) else 0
    return Dataset.from_interactions(
        name or folder.name,
        frame["userID"].to_numpy(), frame["itemID"].to_numpy(), frame["x_label"].to_numpy(),
        n_users=n_users, n_items=n_items, features=features, source=folder,
    )


def _item_count(inter_path: Path, frame: pd.DataFrame, features: dict[str, np.ndarray]) -> int:
    max_item = int(frame["itemID"].max()) if len(frame) else -1
    if not features:
        return max_item + 1
    rows = {m: x.shape[0] for m, x in features.items()}
    (first, n_items), *others = rows.items()
    for modality, count in others:
        if count != n_items:
            raise DataError(
                f"{modality}{FEATURE_SUFFIX} has {count} rows but {first}{FEATURE_SUFFIX} "
                f"has {n_items}; every feature file needs one row per item"
            )
    if max_item >= n_items:
        row = int(np.flatnonzero(frame["itemID"].to_numpy() >= n_items)[0])
        raise DataError(
            f"{inter_path.name} line {row + 2}: itemID {frame['itemID'].iloc[row]} is past "
            f"the item count {n_items} given by the feature files (row count ≠ item count)"
        )
    return n_items


def write_mmrec(folder: str | Path, name: str, inter: pd.DataFrame, features: dict[str, np.ndarray],
                extra_files: dict[str, str] | None = None) -> Path:
    """Write an MMRec folder atomically: everything lands
    in a temporary folder that is renamed at the end."""
    folder = Path(folder)
    missing = [c for c in STANDARD_HEADER if c not in inter.columns]
    if missing:
        raise DataError(f"interaction table lacks columns {', '.join(missing)}")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        inter.loc[:, list(STANDARD_HEADER)].to_csv(tmp / f"{name}.inter", sep="\t", index=False)
        for modality, x in features.items():
            np.save(tmp / f"{modality}{FEATURE_SUFFIX}",
                    check_feature_array(x, f"feature matrix '{modality}'"))
        for filename, text in (extra_files or {}).items():
            (tmp / filename).write_text(text, encoding="utf-8")
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder
