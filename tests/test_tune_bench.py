"""`gic-tune bench` (and `gic bench search`, which hands over to it): the slot-time accounting.

No timed assertions: the figures are printed, and the tests check that they are all there with
their counts and spread, and that they describe the search that ran (trial, epoch and result
counts; epoch times as the trials reported them; shares of the slot time that add up to 100 %).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from searches import tiny_search, write_and_load
from tune.bench import CATEGORIES, START_PARTS, TrialTimes, idle_slots, trial_segments


# ------------------------------------------------------------------------------ the accounting
def test_idle_slots_split_driver_start_pending_tail_and_driver_end():
    # 2 slots, wall 0..20; trials (created, ended): A 2-10, B 2-6, C 7-12, D 12.5-15
    spans = [(2.0, 10.0), (2.0, 6.0), (7.0, 12.0), (12.5, 15.0)]
    idle = idle_slots(spans, 0.0, 20.0, 2)
    assert idle["driver_start"] == [4.0] and idle["driver_end"] == [10.0]
    # 6-7: one slot free, 2 trials left; 10-12.5: one (then two) free, 1 trial left -> one stretch
    assert idle["idle_pending"] == pytest.approx([1.0, 2.5])
    # 12-12.5: two free, one trial left (one slot of tail); 12.5-15: D alone, none left
    assert idle["idle_tail"] == pytest.approx([3.0])
    assert idle["overlap"] == []
    busy = sum(e - c for c, e in spans)
    assert busy + sum(sum(v) for v in idle.values()) == pytest.approx(20.0 * 2)


def test_trial_segments_add_up_to_the_trials_span():
    times = TrialTimes(created=10.0, start=11.0, end=30.0)
    common = {"trial_entered_at": 11.2, "trial_prepared_at": 12.0}
    times.results = [
        (14.1, {**common, "phase": 1, "epoch_time_s": 1.5, "epoch_end_at": 14.0}),
        (16.6, {**common, "phase": 1, "epoch_time_s": 2.0, "epoch_end_at": 16.5, "checkpoint_s": 0.1, "report_s": 0.3}),
        (21.1, {**common, "phase": 2, "epoch_time_s": 3.0, "epoch_end_at": 21.0, "checkpoint_s": 0.2, "report_s": 0.4}),
    ]
    seg = {k: sum(v) for k, v in trial_segments(times, ended=99.0).items()}
    assert seg["launch"] == pytest.approx(1.0) and seg["start"] == pytest.approx(1.5)
    assert (seg["start_dispatch"], seg["start_prepare"], seg["start_build"]) == pytest.approx((0.2, 0.8, 0.5))
    assert seg["epochs"] == pytest.approx(6.5)
    assert (seg["checkpoint"], seg["report"]) == pytest.approx((0.3, 0.7))
    assert seg["between_other"] == pytest.approx(0.1) and seg["phase2_start"] == pytest.approx(0.9)
    assert seg["end"] == pytest.approx(9.0)
    assert sum(seg[k] for k, _ in CATEGORIES) == pytest.approx(30.0 - 10.0)
    assert sum(seg[k] for k, _ in START_PARTS) == pytest.approx(seg["start"])


# ---------------------------------------------------------------------------- a real search
def _epoch_times(experiment: Path) -> list[float]:
    """Every epoch_time_s the trials wrote to their result.json (one line per result)."""
    out = []
    for path in experiment.glob("trial_*/result.json"):
        out += [json.loads(line)["epoch_time_s"] for line in path.read_text().splitlines() if line.strip()]
    return out


@pytest.mark.slow
def test_bench_prints_every_figure_with_count_and_spread_for_a_real_search(synth_dir, tmp_path):
    # one slot: trial 1 starts a worker (cold), trials 2 and 3 reuse it (warm); 2 + 1 epochs each
    raw = tiny_search(synth_dir, tmp_path / "results", name="bench", num_samples=3, epochs=(2, 1),
                      max_concurrent=1, grace_period=3)
    write_and_load(raw, tmp_path / "search.yaml")
    out_json = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "gic.cli", "bench", "search", "--config", str(tmp_path / "search.yaml"),
                           "--name", "bench", "--json", str(out_json)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:] + proc.stdout[-2000:]
    text = proc.stdout
    for label in ("wall time", "epochs run", "sum of epoch times", "slot time, wall x 1 slots",
                  "share of slot time in epochs", "(goal >= 85 %)", "cores idle while a trial was pending",
                  "(goal 0)", "fixed overhead per trial", "cold (first trial of its worker)", "warm (a reused worker)",
                  "warm / cold (medians)", "memory per extra trial", "total",
                  *(label for _, label in CATEGORIES), *(label for _, label in START_PARTS)):
        assert label in text, label
    assert "speed-up" not in text and "K x" not in text  # the old figure that measured pruning

    fig = json.loads(out_json.read_text())
    experiment = Path(fig["experiment_path"])
    frame = pd.read_csv(experiment / "trials.csv")
    b = fig["breakdown"]
    # counts: the trials, epochs and results of the search that ran
    assert fig["trials"] == len(frame) == 3 and fig["results"] == int(frame["epochs"].sum()) == 9
    assert fig["epochs"] == {"total": 9, "phase1": 6, "phase2": 3}
    assert b["epochs"]["n"] == 9 and fig["epochs_per_trial"]["n"] == 3
    assert b["launch"]["n"] == b["start"]["n"] == b["end"]["n"] == b["phase2_start"]["n"] == 3
    assert b["checkpoint"]["n"] == b["report"]["n"] == 9 - 3  # between each trial's epochs
    assert (fig["n_cold"], fig["n_warm"]) == (1, 2)  # reuse_actors: one process ran all three trials
    # the epochs' seconds are the trials' own epoch_time_s
    times = _epoch_times(experiment)
    assert len(times) == 9 and b["epochs"]["sum"] == pytest.approx(sum(times), abs=1e-3)
    assert fig["epoch_s"]["phase1"]["n"] + fig["epoch_s"]["phase2"]["n"] == 9
    # the categories add up to wall x slots; each one is a share of it
    assert fig["slot_s"] == pytest.approx(fig["wall_s"] * 1) and fig["overlap_s"] == 0
    assert fig["accounted_s"] == pytest.approx(fig["slot_s"], abs=1e-4)  # float sums of epoch-time clocks
    assert sum(b[k]["share"] for k, _ in CATEGORIES) == pytest.approx(1.0)
    assert fig["epoch_share"] == pytest.approx(b["epochs"]["share"]) and 0 < fig["epoch_share"] < 1
    assert sum(b[k]["sum"] for k, _ in START_PARTS) == pytest.approx(b["start"]["sum"])
    # on one machine (one clock) no segment is negative beyond rounding of the epoch times
    for key, _ in (*CATEGORIES, *START_PARTS):
        assert b[key]["min"] is None or b[key]["min"] >= -0.01, key
    # one slot, trials one after another: never fewer trials left than slots, so no tail
    assert b["idle_tail"]["sum"] == 0 and fig["idle_core_s"]["tail"] == 0
    # a pending trial's core: no trial in the slot yet, or one launching (1 CPU per trial)
    assert fig["idle_core_s"]["pending"] == pytest.approx(b["idle_pending"]["sum"] + b["launch"]["sum"])
    # the fixed overhead per trial is its launch, start, phase-2 start and end; per trial in the JSON
    fixed = fig["fixed"]["cold"]["sum"] + fig["fixed"]["warm"]["sum"]
    assert fixed == pytest.approx(sum(b[k]["sum"] for k in ("launch", "start", "phase2_start", "end")))
    per_trial = fig["per_trial"]
    assert [t["kind"] for t in per_trial] == ["cold", "warm", "warm"] and sorted(t["trial_id"] for t in per_trial) == \
        sorted(frame["trial_id"].astype(str))
    assert [t["n_epochs"] for t in per_trial] == [3, 3, 3]
    for key, _ in (*CATEGORIES[:1], *CATEGORIES[2:9], *START_PARTS):  # the trials' own segments
        assert sum(t[key] for t in per_trial) == pytest.approx(b[key]["sum"], abs=1e-6), key
    assert "medians: launch" in text
    # printed with its count and spread: "median M (min - max), n = N" wherever there are several
    lines = text.splitlines()
    shares = []
    for key, label in CATEGORIES:
        line = next(line for line in lines if label in line)
        n = b[key]["n"]
        assert (f"n = {n}" in line) if n else line.rstrip().endswith("none"), line
        if n > 1:
            assert re.search(r"median -?\d+\.\d+ s \(-?\d+\.\d+ - -?\d+\.\d+\), n = \d+", line), line
        shares.append(float(re.search(r"(-?\d+\.\d) %", line[len(label):]).group(1)))
    assert sum(shares) == pytest.approx(100.0, abs=0.05 * len(shares))
    assert "n = 1" in next(line for line in lines if "cold (first trial" in line)
    assert re.search(r"median .*, n = 2", next(line for line in lines if "warm (a reused" in line))
    # every trial trained on the object store's read-only copy of the dataset, not one of its own
    assert fig["data_shared_trials"] == 3 and fig["data_mb"] > 0 and fig["worker_uss_mb"] > 0
