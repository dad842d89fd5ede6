"""Smoke-sized searches for the tests: tiny images, few epochs, a wide space so ASHA has work.

    raw = tiny_search(data_dir, storage, name="t", num_samples=6)
    spec = write_and_load(raw, tmp_path / "search.yaml")
"""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

import yaml

from tune.config import SearchSpec, load_search_config


def tiny_search(data_dir: str | Path, storage: str | Path, name: str = "tiny", num_samples: int = 6,
                epochs: tuple[int, int] = (1, 2), image_size: int = 32, weights: str = "hed",
                **search: Any) -> dict[str, Any]:
    """A complete search file as a dict: synthetic-sized data, a wide space so ASHA has work."""
    raw: dict[str, Any] = {
        "trainer": {
            "seed": 0,
            "data": {"source": "folder", "dir": str(data_dir), "image_size": image_size, "batch_size": 16},
            "model": {"weights": weights, "dense_units": 32},
            "phase1": {"epochs": epochs[0]},
            "phase2": {"epochs": epochs[1]},
            "precision": "bf16",
        },
        "space": {
            "model": {"dropout_rate": {"low": 0.0, "high": 0.5}, "augmentation": ["none", "light"]},
            "augmentation_strength": {"low": 0.5, "high": 1.5},
            # A wide learning-rate range: some trials learn, some diverge, so the rungs differ.
            "phase1": {"learning_rate": {"low": 1e-5, "high": 3e-1, "log": True}, "augment": [False]},
            "phase2": {"unfreeze_layers": {"low": 1, "high": 2}, "learning_rate": {"low": 1e-6, "high": 1e-3, "log": True}},
        },
        "search": {"name": name, "num_samples": num_samples, "max_concurrent": 2, "n_startup_trials": 3,
                   "seed": 0, "grace_period": 1, "reduction_factor": 2,
                   "resources_per_trial": {"cpu": 1, "gpu": 0}, "max_failures": 1, "checkpoint_every": 1,
                   "storage_path": str(storage)},
    }
    raw["search"].update(copy.deepcopy(search))
    return raw


def write_and_load(raw: dict[str, Any], path: str | Path, overrides: list[str] | None = None) -> SearchSpec:
    """Write a search file and load it back through the same validation as the CLI."""
    path = Path(path)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return load_search_config(path, overrides)


def ctrl_c_when(proc: subprocess.Popen, ready: Callable[[], bool], wait_s: float = 90) -> tuple[str, str]:
    """A terminal's Ctrl-C: once `ready()` (polled every 0.2 s for up to `wait_s`), SIGINT to the
    process group of `proc` (started with start_new_session=True: the driver and the Ray it started);
    returns its (stdout, stderr). The process must still be running when it is ready; whatever
    happens, nothing of it outlives the call (SIGKILL to the group)."""
    try:
        deadline = time.time() + wait_s
        while time.time() < deadline and proc.poll() is None and not ready():
            time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()
        os.killpg(proc.pid, signal.SIGINT)
        return proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
