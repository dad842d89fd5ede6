"""A training-free stand-in for gic's trainer, for exercising the search machinery: `search.debug.dry_run`.

NOT A REAL SEARCH. Each trial imports no TensorFlow and trains nothing: after an optional sleep per
epoch (`search.debug.dry_run_epoch_s`) it reports metrics that are a smooth, deterministic function
of its hyperparameters, seed and epoch, through the same `on_epoch` callback, checkpoints and resume
path as the real trainer.

Why it is product code and not a test drill: a user command needs it. `gic-tune bench --set
search.debug.dry_run=true --num-samples 200` measures the search machinery alone (Ray, the
scheduler, the searcher, checkpoints, the trial table: results/s and the overhead per trial) on the
user's own machine or cluster, which training would drown; tune.bench reports it with `figures`.
The load, interrupt and storage tests use the same mode (hundreds of trials, Ctrl-C) without
minutes of training per trial.

    gic-tune bench --set search.debug.dry_run=true --num-samples 200

`figures(summary, spec)` turns a finished dry run into the machinery's throughput: results/s and the
scheduler's overhead per trial.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path
from typing import Any, Callable

from gic.config import TrainConfig

STATE = "dry_run_state.json"  # the whole "model": the last epoch done


def synthetic_metrics(cfg: TrainConfig, epoch: int) -> dict[str, Any]:
    """Metrics of one epoch: learning curves that rise with the epoch, higher for a good learning
    rate and dropout, with a little deterministic noise so that ASHA has ties to break."""
    p1, p2 = cfg.phase1, cfg.phase2
    phase = 1 if epoch <= p1.epochs else 2
    # best near lr1 = 1e-3 and lr2 = 1e-5, dropout 0.3
    quality = math.exp(-0.5 * (math.log10(p1.learning_rate) + 3) ** 2)
    quality *= 1 - 0.5 * abs(cfg.model.dropout_rate - 0.3)
    if phase == 2:
        quality *= 1 + 0.05 * math.exp(-0.5 * (math.log10(p2.learning_rate) + 5) ** 2) * min(p2.unfreeze_layers, 4)
    key = json.dumps([cfg.seed, cfg.to_dict()["model"], p1.learning_rate, p2.learning_rate, epoch], sort_keys=True)
    noise = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF - 0.5
    val_accuracy = min(0.99, 0.5 + 0.45 * quality * (1 - math.exp(-epoch / 2)) + 0.02 * noise)
    accuracy = min(0.999, val_accuracy + 0.03)
    return {"epoch": epoch, "phase": phase, "loss": 1 - accuracy, "accuracy": accuracy,
            "val_loss": 1 - val_accuracy, "val_accuracy": val_accuracy}


def dry_run_train(cfg: TrainConfig, data: Any, on_epoch: Callable | None = None, resume: str | Path | None = None,
                  evaluate_test: bool = False, epoch_s: float = 0.0) -> dict[str, Any]:
    """The trainer's contract (`gic.train.train_two_phase`) without training: epochs 1..E1+E2,
    `on_epoch(metrics, save_checkpoint)` after each, continuing after the checkpointed epoch."""
    start = 0
    if resume is not None and Path(resume, STATE).is_file():
        start = int(json.loads(Path(resume, STATE).read_text())["epoch"])
    history = []
    for epoch in range(start + 1, cfg.total_epochs + 1):
        began = time.perf_counter()
        if epoch_s:
            time.sleep(epoch_s)
        metrics = synthetic_metrics(cfg, epoch)
        metrics["epoch_time_s"] = round(time.perf_counter() - began, 4)
        history.append(metrics)
        if on_epoch is not None:
            def save(path, epoch=epoch):
                Path(path).mkdir(parents=True, exist_ok=True)
                Path(path, STATE).write_text(json.dumps({"epoch": epoch}))
            on_epoch(dict(metrics), save)
    return {"history": history}


def figures(summary: Any, spec: Any) -> dict[str, float]:
    """Throughput of a finished dry-run search: results/s, trials/s, and the scheduler's overhead.

    overhead_per_trial_s is the wall time each trial slot spent on anything but the trial's own
    epochs: wall x max_concurrent / trials - mean epoch time x mean epochs.
    """
    frame = summary.trials
    n = len(frame)
    results = int(frame["epochs"].fillna(0).sum()) if n else 0
    wall = max(float(summary.wall_s), 1e-9)
    slots = spec.search.max_concurrent
    busy = spec.search.debug.dry_run_epoch_s * (results / n if n else 0)
    per_slot = wall * slots / n if n else float("nan")
    return {"trials": n, "results": results, "wall_s": round(wall, 2), "results_per_s": round(results / wall, 1),
            "trials_per_s": round(n / wall, 2), "overhead_per_trial_s": round(per_slot - busy, 3),
            "overhead_fraction": round(1 - busy / per_slot, 3) if per_slot else float("nan")}
