"""storage_path as a URI: the experiment's files, the end states and the exit codes, as on a local folder.

The multi-node tests (trials on two worker nodes that cannot see the head's disk, a node lost, the
driver killed) run on a real Ray cluster of `ray start` processes: tests/test_cluster_e2e.py, with
tests/cluster_harness.py. Here: a local Ray, and moto's S3 server (or file://) as the storage.
"""

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tune.search import run_search
from searches import ctrl_c_when, tiny_search, write_and_load

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENT_FILES = ("search_config.yaml", "asha.json", "optuna_trials.csv", "driver.json", "trials.csv",
                    "best_config.yaml", "ray.log")


def test_storage_path_can_be_a_uri(synth_dir, tmp_path):
    """A cloud URI or shared-filesystem URI as storage_path (here file://): the trials' results, the
    table, best_config.yaml and every file of the search's own land there (tune.experiment), and the
    summary reads them back. (Dry-run trials: real ones on s3:// are tests/test_cluster_e2e.py's.)"""
    store = tmp_path / "store"
    raw = tiny_search(synth_dir, f"file://{store}", name="uri", num_samples=3, epochs=(1, 1), debug={"dry_run": True})
    summary = run_search(write_and_load(raw, tmp_path / "search.yaml"), echo=lambda line: None, num_cpus=2)
    assert summary.experiment_path == f"file://{store}/uri"
    assert len(summary.trials) == 3 and summary.best is not None
    for name in EXPERIMENT_FILES:
        assert (store / "uri" / name).is_file(), name
    assert json.loads((store / "uri" / "driver.json").read_text())["state"] == "finished"
    assert summary.written == [f"file://{store}/uri/trials.csv", f"file://{store}/uri/best_config.yaml"]
    assert len(list((store / "uri").glob("trial_*/result.json"))) == 3
    assert not list((store / "uri").glob("trial_*/checkpoint_*"))  # ended trials keep no checkpoint


@pytest.fixture
def s3(tmp_path):
    from cluster_harness import S3Server

    try:
        import moto.server  # noqa: F401
    except ImportError:
        pytest.skip("needs moto's server mode: pip install 'moto[server]'")
    with S3Server(tmp_path) as server:
        yield server


def _cli(args, cwd, env, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "tune.cli", *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


def _s3_text(s3, key: str) -> str | None:
    try:
        with s3.filesystem().open_input_stream(f"{s3.bucket}/{key}") as f:
            return f.read().decode()
    except OSError:
        return None


def test_ctrl_c_on_s3_storage_exits_130_and_records_interrupted_trials(synth_dir, tmp_path, s3):
    """As on a local folder: Ctrl-C is detected from Ray's snapshot on S3, driver.json says
    interrupted, the table says the running trials were interrupted (not stopped by ASHA), and
    --resume finishes the search."""
    import pyarrow.fs

    raw = tiny_search(synth_dir, s3.uri("gic"), name="ctrl-c", num_samples=4, epochs=(1, 2), max_concurrent=2,
                      grace_period=3, debug={"dry_run": True, "dry_run_epoch_s": 1.0})
    write_and_load(raw, tmp_path / "search.yaml")
    env = {**os.environ, **s3.env, "PYTHONPATH": str(ROOT)}
    cmd = ["run", "--config", str(tmp_path / "search.yaml")]
    fs = s3.filesystem()
    proc = _cli(cmd, tmp_path, env, start_new_session=True)  # Ctrl-C reaches the driver's process group
    selector = pyarrow.fs.FileSelector(f"{s3.bucket}/gic/ctrl-c", recursive=True, allow_not_found=True)
    out, err = ctrl_c_when(proc, lambda: any("/checkpoint_" in i.path for i in fs.get_file_info(selector)))
    assert proc.returncode == 130, out[-3000:] + err[-3000:]
    assert "interrupted: the experiment is saved in s3://" in err and "--resume" in err.splitlines()[-1]
    assert json.loads(_s3_text(s3, "gic/ctrl-c/driver.json"))["state"] == "interrupted"
    table = pd.read_csv(io.StringIO(_s3_text(s3, "gic/ctrl-c/trials.csv")))
    assert "interrupted" in set(table["status"]) or len(table) < 4, table
    assert not (table["status"] == "stopped").any(), table  # running trials are not "stopped by ASHA"

    again = _cli([*cmd, "--resume"], tmp_path, env)
    out, err = again.communicate(timeout=150)
    assert again.returncode == 0, out[-3000:] + err[-3000:]
    table = pd.read_csv(io.StringIO(_s3_text(s3, "gic/ctrl-c/trials.csv")))
    assert len(table) == 4 and set(table["status"]) == {"finished"}
    assert json.loads(_s3_text(s3, "gic/ctrl-c/driver.json"))["state"] == "finished"


def test_every_trial_errored_on_s3_storage_exits_1(synth_dir, tmp_path, s3):
    raw = tiny_search(synth_dir, s3.uri("gic"), name="failed", num_samples=2, epochs=(1, 1), max_concurrent=2,
                      max_failures=0, debug={"dry_run": True})
    write_and_load(raw, tmp_path / "search.yaml")
    env = {**os.environ, **s3.env, "PYTHONPATH": str(ROOT)}
    # gic-tune run with every trial crashing in epoch 1 (tests/faults.py wraps the trial function)
    done = subprocess.Popen([sys.executable, str(ROOT / "tests" / "faults.py"), "--always-at", "1",
                             "--failing-trials", "2", "--slots", str(tmp_path / "slots"), "--",
                             "run", "--config", str(tmp_path / "search.yaml")], cwd=tmp_path, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = done.communicate(timeout=150)
    assert done.returncode == 1, out[-3000:] + err[-3000:]
    assert "error: every trial errored (2 of 2)" in err
    assert "injected failure at epoch 1" in out + err  # the trials' error reached the driver's output
    assert json.loads(_s3_text(s3, "gic/failed/driver.json"))["state"] == "failed"
    written = [line.strip() for line in out.splitlines() if line.strip().startswith("s3://")]
    for uri in written:  # the summary names only files that exist
        assert _s3_text(s3, uri.partition("?")[0].removeprefix(f"s3://{s3.bucket}/")) is not None, uri


def test_keep_checkpoints_keeps_the_last_and_the_best(synth_dir, tmp_path):
    """search.keep_checkpoints: true keeps an ended trial's checkpoints (the last and the best)."""
    raw = tiny_search(synth_dir, tmp_path / "results", name="keep", num_samples=2, epochs=(1, 2), grace_period=3,
                      keep_checkpoints=True, debug={"dry_run": True})
    summary = run_search(write_and_load(raw, tmp_path / "search.yaml"), echo=lambda line: None, num_cpus=2)
    for trial_dir in Path(summary.experiment_path).glob("trial_*"):
        checkpoints = list(trial_dir.glob("checkpoint_*"))
        assert 1 <= len(checkpoints) <= 2, checkpoints
        assert all((c / "tune_state.json").is_file() for c in checkpoints)
