"""The trainer: Adam on the model's own loss plus loss plug-ins, validation every epoch,
early stopping on the validation metric, best-checkpoint restore, resumable checkpoints.

With ``restore: last`` there is no early stopping and the last epoch's weights are kept
(fine-tuning for a fixed number of epochs, as the defense papers do).

Randomness is derived from ``(seed, epoch)`` (sampling and torch's generator are re-seeded
at the start of every epoch), so a run resumed from a checkpoint continues exactly as an
uninterrupted run would.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from mmrobust.data import BPRSampler, Dataset
from mmrobust.errors import UserError
from mmrobust.evaluation import evaluate
from mmrobust.models import Batch, LossPlugin, Recommender
from mmrobust.training.config import TrainConfig
from mmrobust.utils import deterministic_kernels, resolve_device, torch_save_atomic

CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"


@dataclass
class FitResult:
    best_epoch: int
    valid: dict[str, float]
    test: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    stopped_early: bool = False
    resumed_from: int | None = None
    notes: dict[str, object] = field(default_factory=dict)


@dataclass
class _State:
    epoch: int = 0  # next epoch to run
    best_score: float = -float("inf")
    best_epoch: int = -1
    bad_evals: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    best_valid: dict[str, float] = field(default_factory=dict)
    best_weights: dict[str, torch.Tensor] | None = None


def _snapshot(model: Recommender) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _save(run_dir: Path, model: Recommender, optimizer: torch.optim.Optimizer, state: _State,
          improved: bool) -> None:
    if improved and state.best_weights is not None:
        torch_save_atomic(state.best_weights, run_dir / BEST)
    torch_save_atomic({
        "model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": state.epoch,
        "best_score": state.best_score, "best_epoch": state.best_epoch,
        "bad_evals": state.bad_evals,
        "history": json.dumps(state.history), "best_valid": json.dumps(state.best_valid),
    }, run_dir / CHECKPOINT)


def _load(run_dir: Path, model: Recommender, optimizer: torch.optim.Optimizer,
          device: torch.device) -> _State:
    ckpt = torch.load(run_dir / CHECKPOINT, map_location=device, weights_only=True)
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    best = (torch.load(run_dir / BEST, map_location=device, weights_only=True)
            if (run_dir / BEST).exists() else None)
    return _State(ckpt["epoch"], ckpt["best_score"], ckpt["best_epoch"], ckpt["bad_evals"],
                  json.loads(ckpt["history"]), json.loads(ckpt["best_valid"]), best)


def _train_epoch(model, features, sampler, epoch, config, optimizer, plugins,
                 device) -> dict[str, float]:
    torch.manual_seed(config.seed * 1_000_003 + epoch)
    users, pos, neg = sampler.epoch(epoch)
    model.train()
    model.on_epoch_start(epoch)
    total, n_batches = 0.0, 0
    for start in range(0, len(users), config.batch_size):
        sl = slice(start, start + config.batch_size)
        batch = Batch(*(torch.from_numpy(a[sl]) for a in (users, pos, neg))).to(device)
        optimizer.zero_grad(set_to_none=True)
        loss = model.loss(batch, features)
        for plugin in plugins:
            extra = plugin.extra_loss(model, batch, features)
            if extra is not None:
                loss = loss + extra
        if not torch.isfinite(loss):
            raise FloatingPointError(f"training loss became {float(loss.detach())} "
                                     f"at epoch {epoch}; lower the learning rate")
        loss.backward()
        optimizer.step()
        total += float(loss.detach())
        n_batches += 1
    log = {"loss": total / max(1, n_batches)}
    for plugin in plugins:
        log.update(plugin.epoch_log())
    return log


def fit(model: Recommender, dataset: Dataset, config: TrainConfig | None = None,
        plugins: Sequence[LossPlugin] = (), run_dir: str | Path | None = None, resume: bool = True,
        evaluate_test: bool = True,
        on_epoch_end: Callable[[int, dict[str, float]], None] | None = None) -> FitResult:
    """Train ``model`` on ``dataset`` and return the best-validation-epoch result.

    With ``run_dir``, a checkpoint is written every ``checkpoint_every`` epochs and the best
    weights to ``best.pt``; with ``resume`` an existing checkpoint there is continued.  The
    test split is read only once, after model selection, when ``evaluate_test`` is set.
    """
    config = config or TrainConfig()
    device = resolve_device(config.device)
    deterministic_kernels()
    model.to(device)
    features = dataset.feature_tensors(device, model.modalities)
    for plugin in plugins:
        plugin.on_fit_start(model, dataset)
    started = time.perf_counter()
    if not model.trainable:
        valid = evaluate(model, dataset, "valid", features, config.ks, config.eval_batch_size)
        test = (evaluate(model, dataset, "test", features, config.ks, config.eval_batch_size)
                if evaluate_test else {})
        return FitResult(0, valid, test, seconds=time.perf_counter() - started)

    run_path = Path(run_dir) if run_dir is not None else None
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay,
                                 fused=True)
    state = _State()
    resumed_from = None
    if run_path is not None and resume and (run_path / CHECKPOINT).exists():
        state = _load(run_path, model, optimizer, device)
        resumed_from = state.epoch
    sampler = BPRSampler(dataset.train, seed=config.seed)
    stopped = state.bad_evals >= config.patience
    bar = tqdm(total=config.epochs, initial=state.epoch, desc=f"train {model.name}", unit="epoch",
               disable=None if config.progress else True, dynamic_ncols=True)
    try:
        while state.epoch < config.epochs and not stopped:
            epoch = state.epoch
            tick = time.perf_counter()
            log = {"epoch": epoch,
                   **_train_epoch(model, features, sampler, epoch, config, optimizer, plugins,
                                  device)}
            log["train_seconds"] = time.perf_counter() - tick
            improved = False
            if (epoch + 1) % config.eval_every == 0:
                valid = evaluate(model, dataset, "valid", features, config.ks,
                                 config.eval_batch_size)
                log.update({f"valid_{k}": v for k, v in valid.items()})
                score = valid[config.valid_metric]
                if score > state.best_score or config.restore == "last":
                    state.best_score, state.best_epoch, state.best_valid = score, epoch, valid
                    state.best_weights, state.bad_evals, improved = _snapshot(model), 0, True
                else:
                    state.bad_evals += 1
                stopped = state.bad_evals >= config.patience and config.restore == "best"
            state.history.append(log)
            state.epoch = epoch + 1
            if run_path is not None and (state.epoch % config.checkpoint_every == 0 or stopped
                                         or improved or state.epoch == config.epochs):
                _save(run_path, model, optimizer, state, improved)
            bar.update(1)
            bar.set_postfix(loss=f"{log['loss']:.4f}",
                            **{config.valid_metric: f"{state.best_score:.4f}"})
            if on_epoch_end is not None:
                on_epoch_end(epoch, log)
    finally:
        bar.close()
    if state.best_weights is not None:
        model.load_state_dict(state.best_weights)
    test = (evaluate(model, dataset, "test", features, config.ks, config.eval_batch_size)
            if evaluate_test else {})
    notes = {plugin.name: plugin.notes for plugin in plugins if plugin.notes}
    return FitResult(state.best_epoch, state.best_valid, test, state.history,
                     time.perf_counter() - started, stopped, resumed_from, notes)


def load_weights(model: Recommender, path: str | Path,
                 device: str | torch.device = "cpu") -> Recommender:
    """Load a ``best.pt`` (or any state dict file) safely (``weights_only=True``)."""
    state = torch.load(Path(path), map_location=device, weights_only=True)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1].strip()
        raise UserError(f"{path} does not fit this {model.name} model ({first}); "
                         "was it written by another version or config?") from None
    return model
