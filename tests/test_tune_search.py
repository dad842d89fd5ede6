"""A real search on tiny generated data: ASHA stops trials, Optuna is told PRUNED, outputs complete.

One search (6 trials, 1+2 epochs, 32 px, tests/conftest.py's tiny_search_run) is shared with the
inspect, report and retrain tests.
"""

import json
from pathlib import Path

import pandas as pd
import pytest

from gic.config import load_config
from tune.results import BEST_CONFIG, PARAM_PREFIX, TRIALS_CSV, best_row, load_trials, params_of
from tune.experiment import OPTUNA_TRIALS, SCHEDULER_STATE, SEARCH_CONFIG
from tune.space import apply_params

NUM_SAMPLES = 6


@pytest.fixture(scope="module")
def search(tiny_search_run):
    """(spec, summary, progress lines, experiment folder): the session's tiny search (tests/conftest.py),
    read from the folder it was moved to, as a folder copied from a cluster is read."""
    folder, spec, summary, lines = tiny_search_run
    return spec, summary, lines, folder


def test_every_trial_ran_and_asha_stopped_at_least_one(search):
    spec, summary, _, folder = search
    frame = summary.trials
    assert len(frame) == NUM_SAMPLES and frame["trial_id"].is_unique
    assert set(frame["status"]) <= {"finished", "stopped"}
    stopped = frame[frame["status"] == "stopped"]
    assert len(stopped) >= 1, frame[["trial_id", "status", "epochs", "best_val_accuracy"]]
    assert (stopped["stopped_at_epoch"] < stopped["epochs_planned"]).all()
    finished = frame[frame["status"] == "finished"]
    assert (finished["epochs"] == finished["epochs_planned"]).all()
    assert frame["epochs_planned"].max() == spec.max_epochs == 3


def test_optuna_states_match_what_the_scheduler_did(search):
    _, summary, _, folder = search
    frame = summary.trials.set_index("trial_id")
    # The scheduler's own record of its early stops is the ground truth.
    assert summary.scheduler_stops
    assert set(summary.scheduler_stops) == set(frame.index[frame["status"] == "stopped"])
    expected = {tid: ("PRUNED" if tid in summary.scheduler_stops else "COMPLETE") for tid in frame.index}
    assert summary.optuna_states == expected
    study = pd.read_csv(Path(folder, OPTUNA_TRIALS)).set_index("trial_id")
    for tid, epoch in summary.scheduler_stops.items():
        steps = {int(k): v for k, v in json.loads(study.loc[tid, "intermediate_values"]).items()}
        assert sorted(steps) == list(range(1, epoch + 1))  # every epoch it ran, the stopping one included
        assert study.loc[tid, "value"] == pytest.approx(steps[epoch])
        # the one objective: Optuna's value at the stop is the trial's best val accuracy (trials.csv: 6 digits)
        assert frame.loc[tid, "best_val_accuracy"] == pytest.approx(steps[epoch], rel=1e-5)


def test_trials_csv_is_complete(search):
    spec, summary, _, folder = search
    frame = pd.read_csv(Path(folder, TRIALS_CSV))
    for column in ("trial_id", "status", "stopped_at_epoch", "epochs", "best_val_accuracy",
                   "last_val_accuracy", "wall_time_s", "node_id", "node_ip"):
        assert column in frame.columns
    from tune.space import active

    for row in frame.to_dict("records"):  # a dimension is recorded exactly where it was active
        params = {k.removeprefix(PARAM_PREFIX): v for k, v in row.items() if k.startswith(PARAM_PREFIX) and pd.notna(v)}
        for name in spec.space.dimensions:
            assert (name in params) == active(name, params, "none", spec.trainer.phase2.unfreeze_layers), (name, row)
    assert frame[["best_val_accuracy", "last_val_accuracy", "wall_time_s"]].notna().all().all()
    assert (frame["best_val_accuracy"] >= frame["last_val_accuracy"] - 1e-9).all()
    assert frame["node_id"].str.len().gt(10).all()
    # The disk reader (no Ray) agrees with the live table.
    again = load_trials(folder)
    assert list(again["trial_id"]) == list(frame["trial_id"])
    assert list(again["status"]) == list(frame["status"])


def test_best_config_is_a_complete_trainer_config(search):
    spec, summary, _, folder = search
    path = Path(folder, BEST_CONFIG)
    cfg = load_config(path)
    best = best_row(summary.trials)
    assert cfg == apply_params(spec.trainer, params_of(best))
    assert best["best_val_accuracy"] == summary.trials["best_val_accuracy"].max()
    assert Path(folder, SEARCH_CONFIG).is_file()


def test_an_ended_trial_keeps_no_checkpoint(search):
    """Checkpoints serve retries and --resume; once a trial has ended nothing reads them (tune.checkpoints).
    search.keep_checkpoints keeps them: test_tune_cluster.py::test_keep_checkpoints_keeps_the_last_and_the_best."""
    _, summary, _, folder = search
    trial_dirs = list(Path(folder).glob("trial_*"))
    assert len(trial_dirs) == NUM_SAMPLES
    for trial_dir in trial_dirs:
        assert not list(trial_dir.glob("checkpoint_*")), trial_dir


def test_progress_lines_are_concise(search):
    _, summary, lines, folder = search
    assert any("stopped by ASHA at epoch" in line for line in lines)
    assert any("| best " in line for line in lines)
    assert lines[-1].count("\n") <= 3 and "done in" in lines[-1]
    assert max(len(line) for line in lines) < 400
    state = json.loads(Path(folder, SCHEDULER_STATE).read_text())
    assert state["stops"] == summary.scheduler_stops


def test_phase1_features_are_computed_once_before_the_trials_and_shipped(search):
    """Every trial trains phase 1 on cached base features (the space fixes phase1.augment = false):
    the driver computed them once, in one Ray task before the first trial (tune.features), and every
    trial got that copy from the object store instead of running the base itself."""
    _, summary, lines, folder = search
    assert sum("phase-1 features of" in line and "computed once for all trials" in line for line in lines) == 1
    sources = []
    for trial_dir in Path(folder).glob("trial_*"):
        first = json.loads((trial_dir / "result.json").read_text().splitlines()[0])
        sources.append(first["features_from"])
    assert sources == ["search"] * NUM_SAMPLES, sources


def test_trials_get_the_train_and_validation_splits_never_the_test_split(search):
    """What the driver ships through the object store: train + validation (tune.features.without_test)."""
    from gic.data import load_dataset

    spec, summary, _, folder = search
    data = load_dataset(spec.trainer.data)
    shipped_mb = round((data.train.images.nbytes + data.validation.images.nbytes) / 2**20, 1)
    assert len(data.test) > 0
    for trial_dir in Path(folder).glob("trial_*"):
        last = json.loads((trial_dir / "result.json").read_text().splitlines()[-1])
        assert last["data_mb"] == shipped_mb and last["data_shared"]


def test_each_trial_has_a_tensorboard_event_file(search):
    """`tensorboard --logdir results/<name>` (README) finds every trial's per-epoch metrics."""
    _, summary, _, folder = search
    trial_dirs = list(Path(folder).glob("trial_*"))
    assert len(trial_dirs) == NUM_SAMPLES
    for trial_dir in trial_dirs:
        events = list(trial_dir.glob("events.out.tfevents.*"))
        assert events and events[0].stat().st_size > 0, trial_dir


def _event_tags(event_file: Path) -> tuple[dict[str, str], list[str]]:
    """{tag: kind} of every summary value in a TensorBoard event file, read by TensorFlow's own reader,
    and the metrics of its HParams experiment (the columns of TensorBoard's trial table)."""
    import tensorflow as tf
    from tensorboardX.proto import plugin_hparams_pb2

    tags, table = {}, []
    for event in tf.compat.v1.train.summary_iterator(str(event_file)):
        for value in event.summary.value:
            tags[value.tag] = value.WhichOneof("value")
            if value.tag == "_hparams_/experiment":
                data = plugin_hparams_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
                table += [m.name.tag for m in data.experiment.metric_infos]
    return tags, table


def test_tensorboard_shows_the_training_metrics_not_bookkeeping(search):
    """Each trial's event file holds its per-epoch training metrics and objective as scalars, and
    TensorBoard's trial table (HParams) those metrics: no histogram of a list, no worker pid, memory,
    node, planned epochs or Ray's should_checkpoint."""
    from tune.callbacks import TENSORBOARD_METRICS

    allowed = {f"ray/tune/{m}" for m in TENSORBOARD_METRICS}
    _, summary, _, folder = search
    for trial_dir in Path(folder).glob("trial_*"):
        tags, table = {}, []
        for event_file in trial_dir.glob("events.out.tfevents.*"):
            more, columns = _event_tags(event_file)
            tags.update(more)
            table += columns
        scalars = {tag for tag, kind in tags.items() if kind == "simple_value"}
        assert {"ray/tune/val_accuracy", "ray/tune/best_val_accuracy", "ray/tune/loss"} <= scalars, tags
        assert scalars <= allowed, scalars
        assert not [t for t, kind in tags.items() if kind == "histo"], tags
        assert "ray/tune/val_accuracy" in table and set(table) <= allowed, table


def test_no_result_carries_a_list_and_the_table_reads_the_best_epoch_from_scalars(search):
    """A result's size does not grow with the epoch count; trials.csv's best epoch is the epoch of the
    trial's highest val_accuracy, as recorded epoch by epoch."""
    _, summary, _, folder = search
    table = pd.read_csv(Path(folder, TRIALS_CSV)).set_index("trial_id")
    for trial_dir in Path(folder).glob("trial_*"):
        results = [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines()]
        assert not [k for r in results for k, v in r.items() if isinstance(v, list)], results[-1]
        values = [r["val_accuracy"] for r in results]
        row = table.loc[results[-1]["trial_id"]]
        assert row["best_epoch"] == values.index(max(values)) + 1
        assert row["best_val_accuracy"] == pytest.approx(max(values), rel=1e-5)
