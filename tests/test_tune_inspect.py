"""`gic-tune trials`: the table agrees with what the scheduler did; sort, filter, formats, errors.

All on the session's tiny search, read from a folder moved away from where Ray wrote it.
"""

import io
import json
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from tune.cli import main
from tune.trials import STATUSES, trial_table


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_statuses_and_columns_agree_with_the_scheduler(tiny_experiment):
    folder, spec, summary = tiny_experiment
    assert not Path(summary.experiment_path).exists()  # moved: everything below reads the new path
    frame = trial_table(folder).set_index("trial_id")
    assert len(frame) == spec.search.num_samples
    for column in ("status", "status_detail", "epochs", "best_val_accuracy", "last_val_accuracy", "wall_time_s",
                   "node_ip", "param.model.dropout_rate", "param.phase1.learning_rate"):
        assert column in frame.columns
    stops = summary.scheduler_stops
    assert stops, "the tiny search should have ASHA stop at least one trial"
    assert set(frame.index[frame["status"] == "stopped"]) == set(stops)
    for trial_id, epoch in stops.items():
        assert frame.loc[trial_id, "stopped_at_epoch"] == epoch == frame.loc[trial_id, "epochs"]
        assert frame.loc[trial_id, "status_detail"] == f"stopped by ASHA at epoch {epoch}"
    finished = frame[frame["status"] == "finished"]
    assert (finished["epochs"] == spec.max_t).all()
    assert (frame["best_val_accuracy"] >= frame["last_val_accuracy"] - 1e-9).all()
    assert (frame["wall_time_s"] > 0).all()


def test_sort_top_and_status_filter(tiny_experiment):
    folder, _, summary = tiny_experiment
    out = pd.read_csv(io.StringIO(invoke("trials", folder, "--format", "csv", "--top", "3").output))
    assert len(out) == 3 and list(out["best_val_accuracy"]) == sorted(out["best_val_accuracy"], reverse=True)
    out = pd.read_csv(io.StringIO(invoke("trials", folder, "--format", "csv", "--sort", "dropout_rate").output))
    assert list(out["param.model.dropout_rate"]) == sorted(out["param.model.dropout_rate"])
    out = pd.read_csv(io.StringIO(invoke("trials", folder, "--format", "csv", "--status", "stopped").output))
    assert set(out["trial_id"]) == set(summary.scheduler_stops) and set(out["status"]) == {"stopped"}


def test_every_format(tiny_experiment, tmp_path):
    folder, spec, _ = tiny_experiment
    table = invoke("trials", folder)
    assert table.exit_code == 0 and "stopped by ASHA at epoch" in table.output and "dropout_rate" in table.output
    records = json.loads(invoke("trials", folder, "--format", "json").output)
    assert len(records) == spec.search.num_samples and {"trial_id", "status"} <= set(records[0])
    result = invoke("trials", folder, "--format", "parquet", "--output", tmp_path / "t.parquet")
    assert result.exit_code == 0
    parquet = pd.read_parquet(tmp_path / "t.parquet")
    assert len(parquet) == spec.search.num_samples and set(parquet["status"]) <= set(STATUSES)


def test_experiment_list_one_line_each(tiny_experiment):
    folder, spec, _ = tiny_experiment
    result = invoke("trials", folder.parent)
    assert result.exit_code == 0
    line, = result.output.strip().splitlines()
    assert line.startswith("inspect") and f"{spec.search.num_samples} trials" in line and "stopped" in line


@pytest.mark.parametrize("args, message", [
    (["trials", "{tmp}"], "not an experiment folder"),
    (["trials", "{tmp}/missing"], "no such folder"),
    (["report", "{tmp}"], "not an experiment folder"),
    (["retrain", "{tmp}"], "not an experiment folder"),
    (["trials", "{exp}", "--status", "bogus"], "--status bogus"),
    (["trials", "{exp}", "--sort", "bogus"], "--sort bogus"),
])
def test_bad_input_is_one_line_and_exit_2(tiny_experiment, tmp_path, args, message):
    folder, _, _ = tiny_experiment
    result = invoke(*[a.format(tmp=tmp_path, exp=folder) for a in args])
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1
