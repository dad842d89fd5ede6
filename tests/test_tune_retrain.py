"""`gic-tune retrain` and `gic-tune run --warm-start`, on the session's tiny (moved) search."""

import glob
import json
import pickle
import re

import pytest
from click.testing import CliRunner

from gic.cli import main as gic_main
from tune.cli import main
from tune.results import rank_by_score
from tune.trials import trial_table


def test_retrain_best_with_baseline_writes_a_loadable_model_and_test_metrics(tiny_experiment, synth_dir, tmp_path):
    folder, spec, _ = tiny_experiment
    out = tmp_path / "retrain"
    result = CliRunner().invoke(main, ["retrain", str(folder), "--out", str(out), "--compare-baseline"])
    assert result.exit_code == 0, result.output
    best = rank_by_score(trial_table(folder))["trial_id"].iloc[0]  # the ranking retrain uses (ties: lower id)
    run = out / f"best-{best}" / "seed0"
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0 <= metrics["test_accuracy"] <= 1 and metrics["selected"]["weights"] == "best val_accuracy"
    assert metrics["epochs"] == spec.max_epochs and (run / "history.csv").is_file() and (run / "curves.png").is_file()
    image = sorted((synth_dir / "test" / "women").iterdir())[0]
    predicted = CliRunner().invoke(gic_main, ["predict", str(run / "model.keras"), str(image)])
    assert predicted.exit_code == 0, predicted.output
    assert predicted.stdout.splitlines()[1].split("\t")[1] in ("men", "women")  # after the header
    table = (out / "comparison.md").read_text()
    assert f"tuned: best-{best}" in table and "seed recipe (configs/baseline.yaml)" in table
    baseline = json.loads((out / "baseline" / "seed0" / "metrics.json").read_text())
    assert baseline["epochs"] == spec.max_epochs and baseline["train_images"] == metrics["train_images"]


def test_retrain_top_k_with_seeds_on_a_ray_cluster_reports_mean_and_std(tiny_experiment, tmp_path):
    folder, _, _ = tiny_experiment
    out = tmp_path / "retrain"
    result = CliRunner().invoke(main, ["retrain", str(folder), "--out", str(out), "--top", "2", "--seeds", "2",
                                       "--address", "local"])
    assert result.exit_code == 0, result.output
    assert "4 runs submitted to Ray" in result.output  # K x S runs as Ray tasks, not one after another
    # Ray's notices and the log lines its workers forward (TensorFlow's retracing warnings) go to ray.log
    assert (out / "ray.log").is_file()
    assert not [line for line in result.output.splitlines() if re.search(r"\t(DEBUG|INFO|WARNING) \S+:\d+ -- ", line)]
    top2 = rank_by_score(trial_table(folder))["trial_id"].iloc[:2]  # the ranking best_config.yaml uses
    runs = sorted(str(p.parent.relative_to(out)) for p in out.glob("*/seed*/metrics.json"))
    assert len(runs) == 4 and {r.split("/")[1] for r in runs} == {"seed0", "seed1"}
    table = (out / "comparison.md").read_text()
    assert table.splitlines()[0].endswith(": tuned")  # no seed recipe was trained: the title says so
    assert all(tid in table for tid in top2) and table.count(" ± ") >= 6  # accuracy, AUC, time per config
    for metrics_file in out.glob("*/seed*/metrics.json"):
        assert 0 <= json.loads(metrics_file.read_text())["test_accuracy"] <= 1
        assert (metrics_file.parent / "model.keras").is_file()


def test_warm_start_first_trials_are_the_old_ones(tiny_experiment, synth_dir, tmp_path):
    import optuna

    from tune.search import run_search
    from searches import tiny_search, write_and_load

    folder, _, _ = tiny_experiment
    old = trial_table(folder).set_index("trial_id")
    spec = write_and_load(tiny_search(synth_dir, tmp_path / "results", name="warm", num_samples=2),
                          tmp_path / "search.yaml")
    lines = []
    summary = run_search(spec, echo=lines.append, num_cpus=2, warm_start=str(folder))
    assert any(line.startswith(f"warm start: {len(old)} trials") for line in lines), lines
    newest = max(glob.glob(f"{summary.experiment_path}/searcher-state-*.pkl"))
    with open(newest, "rb") as f:
        study = pickle.load(f)["_ot_study"]
    trials = sorted(study.trials, key=lambda t: t.number)
    assert len(trials) == len(old) + 2
    for trial in trials[:len(old)]:
        row = old.loc[trial.user_attrs["ray_trial_id"]]
        assert trial.user_attrs["warm_start_from"] == str(folder.resolve())
        expected = optuna.trial.TrialState.PRUNED if row["status"] == "stopped" else optuna.trial.TrialState.COMPLETE
        assert trial.state == expected
        assert trial.params["model.dropout_rate"] == pytest.approx(row["param.model.dropout_rate"])
    assert all("warm_start_from" not in t.user_attrs for t in trials[len(old):])


def test_retrain_on_train_plus_validation_keeps_the_last_weights_and_measures_them(tiny_experiment, tmp_path):
    """Issue: this always ended in a traceback (checkpoint arrays assigned to the wrong variables)."""
    folder, spec, _ = tiny_experiment
    result = CliRunner().invoke(main, ["retrain", str(folder), "--out", str(tmp_path / "r"),
                                       "--train-on", "train+validation"])
    assert result.exit_code == 0, result.output
    (metrics_file,) = (tmp_path / "r").glob("best-*/seed0/metrics.json")
    metrics = json.loads(metrics_file.read_text())
    assert metrics["selected"]["weights"] == "last epoch" and metrics["train_on"] == "train+validation"
    assert metrics["train_images"] == 2 * (24 + 6) and 0 <= metrics["test_accuracy"] <= 1
    # the saved model is the last epoch's: predicting the test split reproduces the recorded accuracy
    import numpy as np
    from gic.data import load_dataset
    from gic.config import TrainConfig
    from gic.model import load_model
    import yaml

    cfg = TrainConfig.model_validate(yaml.safe_load((metrics_file.parent / "config.yaml").read_text()))
    test = load_dataset(cfg.data).test
    model = load_model(metrics_file.parent / "model.keras")
    probs = np.asarray(model.predict(test.images, verbose=0)).ravel()
    assert np.mean((probs >= 0.5) == test.labels) == pytest.approx(metrics["test_accuracy"], abs=1e-6)


def test_retrains_with_other_settings_get_their_own_folders_and_a_rerun_keeps_finished_runs(tiny_experiment, tmp_path):
    import shutil

    folder = shutil.copytree(tiny_experiment[0], tmp_path / "experiment")  # the default out is inside it
    first = CliRunner().invoke(main, ["retrain", str(folder), "--set", "phase2.epochs=1"])
    second = CliRunner().invoke(main, ["retrain", str(folder), "--set", "phase2.epochs=0"])
    assert first.exit_code == 0 and second.exit_code == 0, first.output + second.output
    folders = sorted(p.name for p in (folder / "retrain").iterdir())
    assert len(folders) == 2 and all(name.startswith("train-top1-seeds1-set-") for name in folders), folders
    runs = sorted((folder / "retrain").glob("*/best-*/seed0/metrics.json"))
    epochs = sorted(json.loads(p.read_text())["epochs"] for p in runs)
    assert epochs == [1, 2]  # phase1 1 epoch + phase2 1 or 0 epochs: both results kept
    before = runs[0].read_bytes()
    again = CliRunner().invoke(main, ["retrain", str(folder), "--set", "phase2.epochs=0"])
    assert again.exit_code == 0 and "1 of 1 runs already complete" in again.output, again.output
    assert runs[0].read_bytes() == before
