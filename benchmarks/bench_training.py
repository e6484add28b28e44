"""Training and evaluation speed at Amazon-Baby scale (prints figures; not a test).

Data: ``../shared/data/baby-interactions`` (19,445 users, 7,050 items, 119,674 training
interactions) with random float32 item features of the papers' sizes (image 4096-d,
text 384-d).  Each model runs in its own process so that its peak memory is its own.

Reference (MMRec on this 2-core machine, same data, batch 2048, d = 64): VBPR 5.3 s and
LightGCN 3.4 s per training epoch, one full evaluation of all users 1.6 s.  Also timed: an
FGSM-L2 attack (r = 5 %, all test pairs) plus the attacked re-evaluation, target ≤ 3× one
clean evaluation.

    python benchmarks/bench_training.py [--models vbpr lightgcn mmgcn grcn] [--epochs 3]
    python benchmarks/bench_training.py --models vbpr mmgcn \
        --defenses amr modality-balancing uat uat-mc mb+amr

MMRec's MMGCN takes 111 s per epoch at this scale on this machine (target: half).  With
``--defenses``, every model is also trained with each defense (``+`` stacks them) and the
seconds per epoch are printed next to plain training's (the overhead factor).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import statistics
import time
import warnings
from pathlib import Path

REFERENCE = {"vbpr": {"epoch": 5.3, "eval": 1.6}, "lightgcn": {"epoch": 3.4, "eval": 1.6},
             "mmgcn": {"epoch": 111.0, "eval": float("nan")}}
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "baby-interactions"


def baby_with_random_features(folder: Path, seed: int = 0):
    import numpy as np

    from mmrobust.data import load_mmrec

    ds = load_mmrec(folder, name="baby")
    rng = np.random.default_rng(seed)
    features = {"image": rng.random((ds.n_items, 4096), dtype=np.float32),
                "text": rng.standard_normal((ds.n_items, 384), dtype=np.float32)}
    return ds.with_features(features, name="baby-random")


def measure(model_name: str, folder: str, epochs: int, queue: mp.Queue, defense: str = "") -> None:
    warnings.filterwarnings("ignore")
    import torch

    from mmrobust.attacks import FGSM
    from mmrobust.defenses import make_defense
    from mmrobust.evaluation import evaluate
    from mmrobust.evaluation.robustness import evaluate_perturbed
    from mmrobust.models import build_model
    from mmrobust.training import TrainConfig, fit
    from mmrobust.utils import seed_everything, tune_allocator

    tune_allocator()  # as the `mmrobust` command does; `import mmrobust` leaves malloc alone
    ds = baby_with_random_features(Path(folder))
    seed_everything(0)
    model = build_model(model_name, ds)
    config = TrainConfig(epochs=epochs + 1, eval_every=10**6, progress=False, device="cpu")
    plugins = [make_defense(name) for name in defense.split("+") if name]
    result = fit(model, ds, config, plugins=plugins, evaluate_test=False)
    epoch_times = [h["train_seconds"] for h in result.history[1:]]  # epoch 0 is warm-up
    if plugins:
        queue.put({"model": model_name, "defense": defense,
                   "epoch_s": statistics.median(epoch_times),
                   "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})
        return
    features = ds.feature_tensors("cpu", model.modalities)
    evaluate(model, ds, "test", features)  # warm-up
    eval_times = []
    for _ in range(3):
        tick = time.perf_counter()
        evaluate(model, ds, "test", features)
        eval_times.append(time.perf_counter() - tick)
    attack_times = []
    if model.modalities:
        for _ in range(3):
            tick = time.perf_counter()
            pert = FGSM(0.05).perturb(model, ds, features)
            evaluate_perturbed(model, ds, pert, "test", features)
            attack_times.append(time.perf_counter() - tick)
    queue.put({
        "model": model_name, "defense": "", "epoch_s": statistics.median(epoch_times),
        "epoch_all": epoch_times,
        "eval_s": statistics.median(eval_times),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "params": sum(p.numel() for p in model.parameters()), "threads": torch.get_num_threads(),
        "batches_per_epoch": -(-ds.train.nnz // config.batch_size),
        "fgsm_eval_s": statistics.median(attack_times) if attack_times else float("nan"),
    })


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["vbpr", "lightgcn"])
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs after "
                                                              "one warm-up epoch")
    parser.add_argument("--data", default=os.environ.get("MMROBUST_BABY", str(DEFAULT_DATA)))
    parser.add_argument("--defenses", nargs="*", default=[],
                        help="also time training with these ('+' stacks)")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()
    ctx = mp.get_context("spawn")
    rows = []
    for name in args.models:
        for defense in ["", *args.defenses]:
            queue = ctx.Queue()
            proc = ctx.Process(target=measure, args=(name, args.data, args.epochs, queue, defense))
            proc.start()
            rows.append(queue.get())
            proc.join()
    plain = {r["model"]: r for r in rows if not r["defense"]}
    defended = [r for r in rows if r["defense"]]
    rows = list(plain.values())
    print(f"Baby scale ({args.data}), random features image 4096-d + text 384-d, batch 2048, d=64, "
          f"{rows[0]['threads']} threads")
    print(f"{'model':10s} {'s/epoch':>8s} {'MMRec':>6s} {'target':>7s} {'s/eval':>7s} "
          f"{'MMRec':>6s} {'FGSM+eval s':>12s} {'÷ eval':>7s} {'peak RSS MB':>12s} {'params':>10s}")
    for r in rows:
        ref = REFERENCE.get(r["model"],
                            {"epoch": float("nan"), "eval": float("nan")})  # nan: no reference
        print(f"{r['model']:10s} {r['epoch_s']:8.2f} {ref['epoch']:6.1f} {ref['epoch'] / 2:7.2f} "
              f"{r['eval_s']:7.2f} {ref['eval']:6.1f} {r['fgsm_eval_s']:12.2f} "
              f"{r['fgsm_eval_s'] / r['eval_s']:7.2f} {r['peak_rss_mb']:12.0f} {r['params']:10d}")
    if defended:
        print(f"\n{'model':10s} {'defense':22s} {'s/epoch':>8s} {'plain':>7s} {'overhead':>9s} "
              f"{'peak RSS MB':>12s}")
        for r in defended:
            base = plain[r["model"]]["epoch_s"]
            print(f"{r['model']:10s} {r['defense']:22s} {r['epoch_s']:8.2f} "
                  f"{base:7.2f} {r['epoch_s'] / base:8.2f}x {r['peak_rss_mb']:12.0f}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows + defended, indent=2))


if __name__ == "__main__":
    main()
