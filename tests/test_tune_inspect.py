"""`gic-tune trials`: the table agrees with what the scheduler did; sort, filter, formats, errors.

All on the session's tiny search, read from a folder moved away from where Ray wrote it.
"""

import io
import json
import re
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from tune.cli import main
from tune.trials import STATUSES, human_table, round_metrics, select, trial_table, trial_view


def invoke(*args, columns=None):
    """The CLI, with a terminal `columns` wide (COLUMNS, which rich reads) when given."""
    env = {"COLUMNS": str(columns)} if columns else None
    return CliRunner().invoke(main, [str(a) for a in args], env=env)


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
    assert (finished["epochs"] == spec.max_epochs).all()
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
    table = invoke("trials", folder, columns=250)
    assert table.exit_code == 0 and "stopped by ASHA at epoch" in table.output and "dropout_rate" in table.output
    assert "left out" not in table.output
    records = json.loads(invoke("trials", folder, "--format", "json").output)
    assert len(records) == spec.search.num_samples and {"trial_id", "status"} <= set(records[0])
    result = invoke("trials", folder, "--format", "parquet", "--output", tmp_path / "t.parquet")
    assert result.exit_code == 0
    parquet = pd.read_parquet(tmp_path / "t.parquet")
    assert len(parquet) == spec.search.num_samples and set(parquet["status"]) <= set(STATUSES)


def test_table_fits_the_terminal_and_names_what_it_left_out(tiny_experiment):
    folder, spec, _ = tiny_experiment
    for columns in (80, 120):
        result = invoke("trials", folder, columns=columns)
        assert result.exit_code == 0, result.output
        *table, note = result.output.rstrip("\n").splitlines()
        assert all(len(line) <= columns for line in table), (columns, result.output)
        assert note.startswith("(") and f"left out to fit {columns} characters: node, wall_s" in note
        assert "stopped by ASHA at epoch" in result.output and "best_val_acc" in result.output
    wide = invoke("trials", folder, columns=400).output
    # Every hyperparameter shown; a long header on two lines (`phase1.` over `learning_rate`).
    assert "left out" not in wide and all(part in wide for name in spec.space.dimensions
                                          for part in re.split(r"(?<=[._])", name))


def test_one_name_per_hyperparameter_and_no_float32_noise(tiny_experiment):
    """Hyperparameters are named by their key in the space; metrics are written to 6 significant digits."""
    folder, spec, _ = tiny_experiment
    frame = trial_table(folder)
    view = trial_view(frame)
    assert set(spec.space.dimensions) <= set(view.columns)  # model.dropout_rate as phase1.learning_rate
    by_key = pd.read_csv(io.StringIO(invoke("trials", folder, "--format", "csv", "--sort", "model.dropout_rate").output))
    assert list(by_key["param.model.dropout_rate"]) == sorted(by_key["param.model.dropout_rate"])
    text = invoke("trials", folder, "--format", "csv").output
    out = pd.read_csv(io.StringIO(text))
    for column in ("best_val_accuracy", "last_val_accuracy", "wall_time_s"):
        assert all(v == float(f"{v:.6g}") for v in out[column].dropna()), out[column]
    noisy = pd.DataFrame({"best_val_accuracy": [0.925000011920929, None], "wall_time_s": [12.345678912, 3.0],
                          "param.x": [0.123456789012, 1.0]})
    rounded = round_metrics(noisy)
    assert rounded["best_val_accuracy"].iloc[0] == 0.925 and pd.isna(rounded["best_val_accuracy"].iloc[1])
    assert rounded["wall_time_s"].iloc[0] == 12.3457
    assert rounded["param.x"].iloc[0] == 0.123456789012  # hyperparameters stay exact


def test_a_filter_that_matches_nothing_says_so(tiny_experiment):
    folder, spec, _ = tiny_experiment
    result = invoke("trials", folder, "--status", "running")
    assert result.exit_code == 0, result.output
    line, = result.output.strip().splitlines()
    assert line.startswith(f"(no trial has status running; the {spec.search.num_samples} trials:"), line
    assert "stopped" in line and "finished" in line
    assert "no trials yet" not in line
    assert human_table(select(trial_table(folder).iloc[0:0])) == "(no trials yet)"


def test_experiment_list_one_line_each(tiny_experiment):
    folder, spec, _ = tiny_experiment
    result = invoke("trials", folder.parent)
    assert result.exit_code == 0
    line, = result.output.strip().splitlines()
    assert line.startswith("inspect") and f"{spec.search.num_samples} trials" in line and "stopped" in line


def test_rungs_gives_spearman_per_rung_for_each_scheme(tiny_experiment):
    folder, _, _ = tiny_experiment
    result = invoke("rungs", folder, "--scheme", "epoch:1:2", "--scheme", "epoch:2:3")
    assert result.exit_code == 0, result.output
    header, *rows, legend = result.output.strip().splitlines()
    assert header.split() == ["scheme", "rung", "reached", "finished", "spearman"]
    # 3 epochs: epoch:1:2 places rungs at epochs 1 and 2, epoch:2:3 at epoch 2 (Ray's milestones)
    assert [r.split()[:6] for r in rows] == [["epoch", "grace", "1", "rf", "2", "1"],
                                             ["epoch", "grace", "1", "rf", "2", "2"],
                                             ["epoch", "grace", "2", "rf", "3", "2"]], result.output
    assert all(r.split()[-1] == "-" or -1 <= float(r.split()[-1]) <= 1 for r in rows)
    assert legend.startswith("spearman: rank correlation")


def test_asha_replay_stops_what_rays_rule_stops_and_counts_the_epochs_it_saves():
    """Four trials that ran every epoch (2 epochs, 1 s each), reaching the rung at epoch 1 in the order
    a, b, c, d with scores 0.6, 0.8, 0.5, 0.9 and final scores 0.6, 0.7, 0.95, 0.9. With rf 2 ASHA
    keeps a trial at or above the median of those recorded before it: a (first) goes on, b (0.8 >= 0.6)
    goes on, c (0.5 < median 0.7) stops, d (0.9 >= 0.6) goes on. So c, the best at the end, is lost."""
    import pandas as pd

    from tune.analysis import replay_asha

    def curve(start, first, final):
        return pd.DataFrame({"epoch": [1, 2], "training_iteration": [1, 2], "val_accuracy": [first, final],
                             "epoch_time_s": [1.0, 1.0], "timestamp": [start, start + 10]})

    curves = {"a": curve(100, 0.6, 0.6), "b": curve(101, 0.8, 0.7), "c": curve(102, 0.5, 0.95),
              "d": curve(103, 0.9, 0.9)}
    replay = replay_asha(curves, [1.0], "epoch", 2.0, "epoch grace 1 rf 2")
    assert replay.stopped == 1 and not replay.best_kept
    assert replay.epoch_time_share == pytest.approx(7 / 8)  # c ran 1 of its 2 epochs
    assert replay.best_found == pytest.approx(0.9)  # d's; c's 0.95 came after its stop
    assert replay.kept_ranks == [2, 3, 4]  # d, b, a (c is 1st at the end)


@pytest.mark.parametrize("args, message", [
    (["trials", "{tmp}"], "not an experiment folder"),
    (["trials", "{tmp}/missing"], "no such folder"),
    (["report", "{tmp}"], "not an experiment folder"),
    (["retrain", "{tmp}"], "not an experiment folder"),
    (["trials", "{exp}", "--status", "bogus"], "--status bogus"),
    (["trials", "{exp}", "--sort", "bogus"], "--sort bogus"),
    (["rungs", "{exp}", "--scheme", "bogus"], "--scheme bogus: expected BUDGET:GRACE:RF"),
    (["rungs", "{exp}", "--scheme", "steps:1:2"], "budget 'steps': expected compute or epoch"),
])
def test_bad_input_is_one_line_and_exit_2(tiny_experiment, tmp_path, args, message):
    folder, _, _ = tiny_experiment
    result = invoke(*[a.format(tmp=tmp_path, exp=folder) for a in args])
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1
