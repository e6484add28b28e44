"""Shared fixtures.  Real data is read from ../shared/data next to the repository."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO.parent / "shared" / "data").resolve()
TEST_HOME = REPO / ".cache" / "mmrobust-test-home"

os.environ["MMROBUST_DATA_PATH"] = str(SHARED_DATA)
os.environ["MMROBUST_HOME"] = str(TEST_HOME)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore", message=".*Sparse CSR tensor support is in beta.*")


# Validation-selected settings (benchmarks/foundation_table.py): dataset -> model -> (settings, lr)
TUNED = {
    "tiktok": {
        "mf": ({"reg_weight": 0.1}, 5e-3),
        "lightgcn": ({"reg_weight": 0.01}, 5e-3),
        "vbpr": ({"reg_weight": 0.1}, 5e-3),
    },
    "ml100k": {
        "mf": ({"reg_weight": 0.01}, 5e-3),
        "lightgcn": ({"reg_weight": 1e-3}, 5e-3),
        "vbpr": ({"reg_weight": 0.01}, 5e-3),
    },
}
_TRAINED: dict = {}


def trained_real(dataset: str, model: str, epochs: int = 30):
    """(dataset, model, fit result) trained once per test session with the tuned settings,
    capped epochs."""
    key = (dataset, model, epochs)
    if key not in _TRAINED:
        from mmrobust.data import load_dataset
        from mmrobust.models import build_model
        from mmrobust.training import TrainConfig, fit
        from mmrobust.utils import seed_everything

        ds = load_dataset(dataset)
        params, lr = TUNED[dataset].get(model, ({}, 1e-3))
        seed_everything(0)
        net = build_model(model, ds, **params)
        result = fit(
            net, ds, TrainConfig(epochs=epochs, lr=lr, patience=10, progress=False, device="cpu")
        )
        _TRAINED[key] = (ds, net, result)
    return _TRAINED[key]


def train_synthetic(
    model: str = "vbpr", epochs: int = 15, embedding_size: int = 16, batch_size: int = 256, **data
):
    """(dataset, model) on synthetic data, trained briefly with seed 0 (for attack/defense
    tests)."""
    from mmrobust.data import make_synthetic
    from mmrobust.models import build_model
    from mmrobust.training import TrainConfig, fit
    from mmrobust.utils import seed_everything

    ds = make_synthetic(**data)
    seed_everything(0)
    net = build_model(model, ds, embedding_size=embedding_size)
    fit(
        net,
        ds,
        TrainConfig(epochs=epochs, lr=0.02, batch_size=batch_size, progress=False, device="cpu"),
    )
    return ds, net


def requires_shared_data(*names: str):
    missing = [n for n in names if not (SHARED_DATA / n).is_dir()]
    return pytest.mark.skipif(bool(missing), reason=f"../shared/data lacks {missing}")


@pytest.fixture
def isolated_home(tmp_path, monkeypatch):
    """A fresh, empty MMROBUST_HOME (registry and built datasets)."""
    home = tmp_path / "home"
    monkeypatch.setenv("MMROBUST_HOME", str(home))
    return home


def write_folder(
    folder: Path,
    rows: list[tuple],
    features: dict[str, object] | None = None,
    header: str = "userID\titemID\trating\ttimestamp\tx_label",
    name: str | None = None,
) -> Path:
    """Write a small MMRec folder; ``rows`` are tuples written tab-separated under ``header``."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = [header] + ["\t".join(str(v) for v in row) for row in rows]
    (folder / f"{name or folder.name}.inter").write_text("\n".join(lines) + "\n")
    for modality, array in (features or {}).items():
        np.save(folder / f"{modality}_feat.npy", array, allow_pickle=True)
    return folder


def good_rows(n_users: int = 4, n_items: int = 6) -> list[tuple]:
    """Every user: 3 train, 1 valid, 1 test interaction."""
    rows = []
    for u in range(n_users):
        for k, label in enumerate((0, 0, 0, 1, 2)):
            rows.append((u, (u + k) % n_items, 1, 100 + k, label))
    return rows


@pytest.fixture
def good_folder(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    return write_folder(
        tmp_path / "tiny",
        good_rows(),
        {
            "image": rng.standard_normal((6, 5)).astype(np.float32),
            "text": rng.standard_normal((6, 3)).astype(np.float32),
        },
    )


def read_inter(folder: Path) -> pd.DataFrame:
    return pd.read_csv(next(folder.glob("*.inter")), sep="\t")


@pytest.fixture(scope="module")
def ds():
    """The small synthetic dataset of the per-model unit tests."""
    from mmrobust.data import make_synthetic

    return make_synthetic(n_users=40, n_items=60, per_user=10, seed=3)


@pytest.fixture
def feats(ds):
    return ds.feature_tensors()


def pairs(ds, n: int = 80, seed: int = 0):
    """n random (user, item) index pairs of ``ds``."""
    import torch

    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, ds.n_users, (n,), generator=g), torch.randint(
        0, ds.n_items, (n,), generator=g
    )


def write_synthetic_folder(root: Path) -> Path:
    """The synthetic dataset (80 users, 120 items) written as an MMRec folder ``root/synth``."""
    from mmrobust.data import make_synthetic, write_mmrec

    ds = make_synthetic(n_users=80, n_items=120, per_user=12, seed=5)
    coo = {s: ds.split(s).tocoo() for s in ("train", "valid", "test")}
    inter = pd.DataFrame(
        {
            "userID": np.concatenate([c.row for c in coo.values()]),
            "itemID": np.concatenate([c.col for c in coo.values()]),
            "x_label": np.repeat([0, 1, 2], [c.nnz for c in coo.values()]),
        }
    )
    inter["rating"], inter["timestamp"] = 1, 0
    return write_mmrec(root / "synth", "synth", inter, ds.features)


def params_without_gradient(model) -> list[str]:
    """Names of the model's parameters whose gradient is missing or zero after a backward pass."""
    return [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]


def assert_xavier_bounded(model) -> None:
    """Every 2-D parameter lies within its Xavier-uniform bound √(6 / (fan_in + fan_out))."""
    for name, p in model.named_parameters():
        if p.dim() == 2:
            bound = (6 / (p.shape[0] + p.shape[1])) ** 0.5
            assert p.abs().max() <= bound + 1e-6, name


def image_perturbation_effect(model, ds, feats):
    """Check that every modality's features get a score gradient, then return the per-modality
    score parts (clean, with the image features perturbed) on random pairs."""
    import torch

    x = {m: t.clone().requires_grad_(True) for m, t in feats.items()}
    users, items = pairs(ds)
    model.score(x, users, items).sum().backward()
    assert all(x[m].grad.abs().sum() > 0 for m in x)
    perturbed = {**feats, "image": feats["image"] + 0.5 * torch.randn_like(feats["image"])}
    with torch.no_grad():
        return model.embed(feats).modality_scores(users, items), model.embed(
            perturbed
        ).modality_scores(users, items)
