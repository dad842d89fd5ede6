"""The driver's record in an experiment folder: whether a search is running, and how it ended.

    mark_driver(folder, "running")            # at start; "finished" | "failed" | "interrupted" at the end
    driver_gone(folder)                       # True when no driver runs this experiment any more

Ray's own experiment state says RUNNING for every trial that was running when the driver stopped,
whether it stopped cleanly (Ctrl-C) or was killed. `driver.json` tells those apart: a driver that
ended writes its end state; one that was killed leaves "running" with a process id that no longer
exists on its host. Readers then report such trials as `interrupted`, not `running`.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from gic.files import atomic_write_json

# ----------------------------------------------------------------- the files of an experiment folder
# One set of names, for every reader and writer (Ray's own files, experiment_state-*.json, tuner.pkl
# and one folder per trial, sit beside them).
SEARCH_CONFIG = "search_config.yaml"  # the resolved search file, the command, versions; resumes
TRIALS_CSV = "trials.csv"  # the trial table, rewritten as trials end
BEST_CONFIG = "best_config.yaml"  # the best trial's full trainer config: `gic train --config` takes it
SCHEDULER_STATE = "asha.json"  # the scheduler's early stops, rungs and replayed trials
OPTUNA_TRIALS = "optuna_trials.csv"  # the Optuna study's trials with their states
WARM_START_FILE = "warm_start.json"  # where a warm-started search's first trials came from
STUDY_DB = "optuna_study.db"  # the study as an Optuna SQLite storage (gic-tune report)
REPORT_DIR = "report"  # gic-tune report's default output folder
RETRAIN_DIR = "retrain"  # gic-tune retrain's default output folders, one per settings
DRIVER = "driver.json"  # the driver: running, or how it ended
END_STATES = ("finished", "failed", "interrupted")  # failed: every trial errored


def mark_driver(folder: str | Path, state: str, **extra: Any) -> None:
    """Record this process as the experiment's driver in `state` (local folders only)."""
    path = Path(folder, DRIVER)
    record = read_driver(folder) or {}
    if state == "running":
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
    else:
        record["ended"] = time.time()
    record.update(state=state, **extra)
    atomic_write_json(path, record)


def read_driver(folder: str | Path) -> dict[str, Any] | None:
    """The driver record, or None when the folder has none (an experiment from before it existed)."""
    try:
        return json.loads(Path(folder, DRIVER).read_text())
    except (OSError, ValueError):
        return None


def driver_gone(folder: str | Path) -> bool:
    """True when no driver runs this experiment: it recorded an end state, or it was a process of
    this host that is no longer alive. A folder copied from another host whose record still says
    "running" is taken at its word (False), as is a folder without a record."""
    record = read_driver(folder)
    if record is None:
        return False
    if record.get("state") in END_STATES:
        return True
    if record.get("host") != socket.gethostname():
        return False
    import psutil

    try:
        process = psutil.Process(int(record["pid"]))
        # a process id can be reused: the driver's process started before it wrote its record
        return process.create_time() > float(record.get("started", 0)) + 1
    except psutil.NoSuchProcess:
        return True
    except (psutil.Error, KeyError, TypeError, ValueError):
        return False


# ------------------------------------------------------------ files on a local folder or a URI
def put_text(storage, name: str, text: str) -> None:
    """Write a file into the experiment folder (local or cloud), via a temp name and a move."""
    fs, root = storage.storage_filesystem, storage.experiment_fs_path
    tmp, final = f"{root}/.{name}.tmp", f"{root}/{name}"
    with fs.open_output_stream(tmp) as out:
        out.write(text.encode())
    fs.move(tmp, final)


def get_text(uri: str) -> str | None:
    """A file of an experiment on a cloud URI or shared filesystem URI, or None when it is not there."""
    import pyarrow.fs

    try:
        fs, fs_path = pyarrow.fs.FileSystem.from_uri(uri)
        with fs.open_input_stream(fs_path) as f:
            return f.read().decode()
    except (OSError, ValueError):
        return None
