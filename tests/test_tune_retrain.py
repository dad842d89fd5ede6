"""`gic-tune retrain` and `gic-tune run --warm-start`, on the session's tiny (moved) search."""

import glob
import json
import pickle

import pytest
from click.testing import CliRunner

from gic.cli import main as gic_main
from tune.cli import main
from tune.trials import trial_table


def test_retrain_best_with_baseline_writes_a_loadable_model_and_test_metrics(tiny_experiment, synth_dir, tmp_path):
    folder, spec, _ = tiny_experiment
    out = tmp_path / "retrain"
    result = CliRunner().invoke(main, ["retrain", str(folder), "--out", str(out), "--compare-baseline"])
    assert result.exit_code == 0, result.output
    best = trial_table(folder).sort_values("best_val_accuracy", ascending=False).iloc[0]["trial_id"]
    run = out / f"best-{best}" / "seed0"
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0 <= metrics["test_accuracy"] <= 1 and metrics["selected"]["weights"] == "best val_accuracy"
    assert metrics["epochs"] == spec.max_t and (run / "history.csv").is_file() and (run / "curves.png").is_file()
    image = sorted((synth_dir / "test" / "women").iterdir())[0]
    predicted = CliRunner().invoke(gic_main, ["predict", str(run / "model.keras"), str(image)])
    assert predicted.exit_code == 0, predicted.output
    assert predicted.output.split("\t")[1] in ("men", "women")
    table = (out / "comparison.md").read_text()
    assert f"tuned: best-{best}" in table and "seed recipe (configs/baseline.yaml)" in table
    baseline = json.loads((out / "baseline" / "seed0" / "metrics.json").read_text())
    assert baseline["epochs"] == spec.max_t and baseline["train_images"] == metrics["train_images"]


def test_warm_start_first_trials_are_the_old_ones(tiny_experiment, synth_dir, tmp_path):
    import optuna

    from tune.search import run_search
    from tune.testing import tiny_search, write_and_load

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
