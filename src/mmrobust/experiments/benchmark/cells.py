"""The state of a benchmark's cells on disk, in ``<out>/cells/``.

* ``<id>.json`` — the done-marker: the cell's result rows (and, for training cells, the
  per-epoch history), written atomically by the driver only after the cell succeeded; a
  re-run skips done cells, so an interrupted benchmark resumes.
* ``<id>.claim`` — which driver (host, pid) is computing the cell: several drivers may share
  one results folder; a driver claims a cell (created exclusively) before computing it,
  leaves cells another live driver holds, and takes over the claims of dead processes on
  its own host.
* ``<id>.error.txt`` — why the cell failed last time (removed when it succeeds).
"""

from __future__ import annotations

import json
import os
import socket
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from mmrobust.experiments.benchmark.grid import Cell
from mmrobust.utils import atomic_write_text


def marker_path(out: Path, cid: str) -> Path:
    return out / "cells" / f"{cid}.json"


def is_done(out: Path, cid: str) -> bool:
    return marker_path(out, cid).exists()


def write_marker(out: Path, cell: Cell, result: dict[str, Any]) -> None:
    """Record a finished cell (atomically); run directories are stored relative to ``out``."""
    for row in result.get("rows", []):
        row["run_dir"] = cell.run_dir
    record = {
        "id": cell.id,
        "kind": cell.kind,
        "title": cell.title,
        "dataset": cell.dataset,
        "run_dir": cell.run_dir,
        **result,
    }
    atomic_write_text(marker_path(out, cell.id), json.dumps(record, default=_jsonable))
    error = out / "cells" / f"{cell.id}.error.txt"
    if error.exists():
        error.unlink()


def _jsonable(value: Any) -> Any:
    if isinstance(value, (np.generic,)):
        return value.item()
    return str(value)


def read_marker(out: Path, cid: str) -> dict[str, Any]:
    return json.loads(marker_path(out, cid).read_text(encoding="utf-8"))


def _claim_path(out: Path, cid: str) -> Path:
    return out / "cells" / f"{cid}.claim"


def claim_cell(out: Path, cid: str) -> bool:
    """Claim a cell for this process (True), unless another live driver holds it.  A claim left
    by a dead process on this host is stale and taken over."""
    path = _claim_path(out, cid)
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if claimed_elsewhere(out, cid):
                return False
            path.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as handle:
            json.dump(
                {"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}, handle
            )
        return True
    return False


def claimed_elsewhere(out: Path, cid: str) -> bool:
    """Whether another driver holds the cell's claim: a live process on this host, or any
    process on another host (which this host cannot check)."""
    try:
        holder = json.loads(_claim_path(out, cid).read_text(encoding="utf-8") or "{}")
    except FileNotFoundError:
        return False
    except json.JSONDecodeError:  # being written right now
        return True
    if holder.get("host") != socket.gethostname():
        return True
    pid = int(holder.get("pid", -1))
    return pid != os.getpid() and _alive(pid)


def _alive(pid: int) -> bool:
    if pid <= 0:  # os.kill would address a process group
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def release_claim(out: Path, cid: str) -> None:
    _claim_path(out, cid).unlink(missing_ok=True)


def record_failure(out: Path, cell: Cell, exc: BaseException) -> str:
    message = f"{type(exc).__name__}: {exc}"
    atomic_write_text(
        out / "cells" / f"{cell.id}.error.txt",
        f"{cell.title}\n{message}\n\n{traceback.format_exc()}",
    )
    return message
