"""Trainer: determinism, resume after a kill, early
stopping, plug-ins, test never read for selection."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch

import mmrobust.training.trainer as trainer_module
from mmrobust.data import make_synthetic, write_mmrec
from mmrobust.models import LossPlugin, build_model
from mmrobust.training import TrainConfig, fit
from mmrobust.utils import seed_everything


@pytest.fixture(scope="module")
def ds():
    return make_synthetic(n_users=120, n_items=150, per_user=15, seed=7)


def quick(**kw) -> TrainConfig:
    return TrainConfig(**{"epochs": 8, "batch_size": 256, "lr": 0.01, "progress": False,
                          "device": "cpu", **kw})


def trained(name, ds, config, plugins=(), **kw):
    seed_everything(config.seed)
    model = build_model(name, ds)
    return model, fit(model, ds, config, plugins=plugins, **kw)


@pytest.mark.parametrize("name", ["mf", "lightgcn", "vbpr"])
def test_same_seed_same_numbers(ds, name):
    _, a = trained(name, ds, quick(seed=3))
    _, b = trained(name, ds, quick(seed=3))
    assert a.test == b.test and a.valid == b.valid
    assert [h["loss"] for h in a.history] == [h["loss"] for h in b.history]
    _, c = trained(name, ds, quick(seed=4))
    assert [h["loss"] for h in a.history] != [h["loss"] for h in c.history]


class Interrupt(Exception):
    pass


def test_resume_in_process_equals_uninterrupted(ds, tmp_path):
    config = quick(epochs=12, patience=50)
    _, full = trained("vbpr", ds, config, run_dir=tmp_path / "full")

    def stop_at_5(epoch, log):
        if epoch == 5:
            raise Interrupt

    with pytest.raises(Interrupt):
        trained("vbpr", ds, config, run_dir=tmp_path / "cut", on_epoch_end=stop_at_5)
    seed_everything(99)  # a different global RNG state must not matter after resuming
    model = build_model("vbpr", ds)
    resumed = fit(model, ds, config, run_dir=tmp_path / "cut")
    assert resumed.resumed_from == 6
    assert resumed.test == full.test and resumed.best_epoch == full.best_epoch
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in full.history]


def test_resume_after_sigkill_equals_uninterrupted(tmp_path):
    """Kill a real `mmrobust train` process mid-run,
    re-run it, compare with an uninterrupted run."""
    big = make_synthetic(n_users=1500, n_items=800, per_user=40, seed=1, name="killme")
    folder = tmp_path / "killme"
    splits = [big.train.tocoo(), big.valid.tocoo(), big.test.tocoo()]
    inter = pd.DataFrame({"userID": np.concatenate([s.row for s in splits]),
                          "itemID": np.concatenate([s.col for s in splits])})
    inter["x_label"] = np.repeat([0, 1, 2], [big.train.nnz, big.valid.nnz, big.test.nnz])
    inter["rating"], inter["timestamp"] = 1, 0
    write_mmrec(folder, "killme", inter, big.features)
    cmd = [sys.executable, "-m", "mmrobust.cli.main", "train", "--dataset", str(folder), "--model",
           "lightgcn",
           "--epochs", "14", "--device", "cpu", "--set", "patience=100", "--set", "batch_size=512"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    subprocess.run(cmd + ["--run-dir", str(tmp_path / "full")], check=True, env=env,
                   capture_output=True)

    cut = tmp_path / "cut"
    proc = subprocess.Popen(cmd + ["--run-dir", str(cut)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:
        if (cut / "checkpoint.pt").exists():
            try:
                if torch.load(cut / "checkpoint.pt", weights_only=True)["epoch"] >= 4:
                    break
            except Exception:  # being replaced right now
                pass
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (cut / "metrics.json").exists(), "the run finished before it could be killed"
    subprocess.run(cmd + ["--run-dir", str(cut)], check=True, env=env, capture_output=True)
    a = json.loads((tmp_path / "full" / "metrics.json").read_text())
    b = json.loads((cut / "metrics.json").read_text())
    assert b["resumed_from_epoch"] >= 4
    assert a["test"] == b["test"] and a["best_epoch"] == b["best_epoch"]


def test_early_stopping_and_best_checkpoint_restore(ds):
    model, result = trained("mf", ds, quick(epochs=200, patience=3, lr=0.05))
    assert result.stopped_early
    assert len(result.history) == result.best_epoch + 1 + 3
    best_valid = max(h["valid_recall@20"] for h in result.history)
    assert result.valid["recall@20"] == best_valid
    from mmrobust.evaluation import evaluate
    assert evaluate(model, ds, "valid")["recall@20"] == pytest.approx(best_valid)


def test_model_selection_never_reads_test(ds, monkeypatch):
    calls = []
    real = trainer_module.evaluate

    def spy(model, dataset, split, *args, **kwargs):
        calls.append(split)
        return real(model, dataset, split, *args, **kwargs)

    monkeypatch.setattr(trainer_module, "evaluate", spy)
    trained("mf", ds, quick(epochs=5))
    assert calls == ["valid"] * 5 + ["test"]
    calls.clear()
    trained("mf", ds, quick(epochs=5), evaluate_test=False)
    assert "test" not in calls


class UserNormPlugin(LossPlugin):
    """A trivial plug-in: weight · mean ‖p_u‖² of the batch's users."""

    name = "usernorm"

    def __init__(self, weight: float):
        super().__init__()
        self.weight = weight
        self.calls = 0

    def extra_loss(self, model, batch, features):
        self.calls += 1
        term = model.user_emb[batch.users].pow(2).sum(-1).mean()
        self.record("term", term.detach())
        return self.weight * term


def test_loss_plugin_hook(ds):
    base_model, _ = trained("mf", ds, quick(epochs=2))
    zero = UserNormPlugin(0.0)
    zero_model, zero_result = trained("mf", ds, quick(epochs=2), plugins=[zero])
    assert zero.calls == 2 * -(-ds.train.nnz // 256)
    for a, b in zip(base_model.parameters(), zero_model.parameters(), strict=True):
        torch.testing.assert_close(a, b)
    assert "usernorm/term" in zero_result.history[0]
    strong = UserNormPlugin(10.0)
    strong_model, _ = trained("mf", ds, quick(epochs=2), plugins=[strong])
    assert strong_model.user_emb.norm() < 0.8 * base_model.user_emb.norm()
    torch.testing.assert_close(strong_model.item_emb, strong_model.item_emb)


def test_popularity_needs_no_training(ds):
    model, result = trained("pop", ds, quick())
    assert result.history == [] and result.test["recall@20"] > 0


def test_non_finite_loss_is_reported(ds):
    class Explode(LossPlugin):
        name = "explode"

        def extra_loss(self, model, batch, features):
            return torch.tensor(float("nan"))

    with pytest.raises(FloatingPointError, match="training loss became nan at epoch 0"):
        trained("mf", ds, quick(), plugins=[Explode()])


def test_restore_last_keeps_the_final_epoch(ds):
    model, result = trained("mf", ds, quick(epochs=6, patience=1, lr=0.05, restore="last"))
    assert len(result.history) == 6 and result.best_epoch == 5 and not result.stopped_early
    from mmrobust.evaluation import evaluate
    recall = evaluate(model, ds, "valid")["recall@20"]
    assert recall == pytest.approx(result.history[-1]["valid_recall@20"])
