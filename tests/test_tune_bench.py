"""`gic-tune bench` (and `gic bench search`, which hands over to it) on a tiny real search.

No timed assertions: the figures are printed, and the test checks that they are all there and
that they describe the search that ran (trial and result counts, cold and warm workers).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from searches import tiny_search, write_and_load


@pytest.mark.slow
def test_bench_search_prints_every_figure_for_a_real_search(synth_dir, tmp_path):
    # one slot: trial 1 starts a worker (cold), trials 2 and 3 reuse it (warm)
    raw = tiny_search(synth_dir, tmp_path / "results", name="bench", num_samples=3, epochs=(2, 1),
                      max_concurrent=1, grace_period=3)
    write_and_load(raw, tmp_path / "search.yaml")
    out_json = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "gic.cli", "bench", "search", "--config", str(tmp_path / "search.yaml"),
                           "--name", "bench", "--json", str(out_json)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:] + proc.stdout[-2000:]
    for label in ("wall time", "sum of trial times", "K x one full trial alone", "fixed overhead per trial, cold",
                  "fixed overhead per trial, warm", "warm / cold", "results/s", "share of slot time in epochs", "memory per extra trial"):
        assert label in proc.stdout, label
    fig = json.loads(out_json.read_text())
    frame = pd.read_csv(Path(fig["experiment_path"], "trials.csv"))
    assert fig["trials"] == len(frame) == 3
    assert fig["results"] == int(frame["epochs"].sum())
    assert (fig["n_cold"], fig["n_warm"]) == (1, 2)  # reuse_actors: one process ran all three trials
    assert fig["single_trial_s"] > 0 and fig["k_x_single_s"] == pytest.approx(3 * fig["single_trial_s"])
    assert fig["fixed_cold_s"] > 0 and fig["fixed_warm_s"] >= 0
    assert 0 < fig["epoch_share"] <= 1 and fig["sum_trial_s"] <= fig["wall_s"]
    # every trial trained on the object store's read-only copy of the dataset, not one of its own
    assert fig["data_shared_trials"] == 3 and fig["data_mb"] > 0 and fig["worker_uss_mb"] > 0
