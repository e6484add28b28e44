"""Small helpers shared by every layer: seeding, device choice, atomic file writes."""

from __future__ import annotations

import contextlib
import ctypes
import os
import random
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from mmrobust.errors import UserError


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch and ask torch for deterministic kernels, so that a run is
    repeatable on CPU (without it, the backward of ``E[idx]`` accumulates in a thread-dependent
    order and the last bits of the losses differ from run to run)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    deterministic_kernels()


def deterministic_kernels() -> None:
    torch.use_deterministic_algorithms(True, warn_only=True)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Map ``auto``/``cpu``/``cuda``/``cuda:N`` to a
    torch device, failing clearly if CUDA is absent."""
    if isinstance(device, torch.device):
        return device
    name = str(device).lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device '{device}' was requested but CUDA is not "
                         "available on this machine; use 'cpu' or 'auto'")
    if name != "cpu" and not name.startswith("cuda"):
        raise UserError(f"unknown device '{device}'; use 'auto', 'cpu', 'cuda' or 'cuda:N'")
    return torch.device(name)


_UMASK = os.umask(0o022)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path`` and move it into place only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp's 0600 would hide results from the user's group
        os.chmod(tmp_path, 0o666 & ~_UMASK)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def torch_save_atomic(obj: object, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def tune_allocator(threshold: int = 1 << 30) -> bool:
    """Keep large freed blocks in glibc's heap instead of returning them to the OS.

    By default glibc serves every allocation above 32 MB with a fresh ``mmap``, so each
    batch's large temporaries (e.g. 3,000 gathered 4096-d feature rows) are page-faulted
    in anew; on this 2-core machine that tripled the cost of a VBPR batch's gather.

    This changes malloc for the whole process, so ``import mmrobust`` does not call it: the
    ``mmrobust`` command and the benchmark cells (and ``benchmarks/bench_training.py``) do at
    start-up; library users may call it themselves.  Set ``MMROBUST_MALLOC_TUNING=0`` to
    leave the allocator alone.  Returns whether it applied.
    """
    if os.environ.get("MMROBUST_MALLOC_TUNING", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return (bool(libc.mallopt(_M_MMAP_THRESHOLD, threshold))
                and bool(libc.mallopt(_M_TRIM_THRESHOLD, threshold)))
    except (OSError, AttributeError):
        return False
