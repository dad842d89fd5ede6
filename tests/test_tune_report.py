"""`gic-tune report`: files, trial counts in the plots, the Optuna SQLite study, a real browser."""

import pytest
from click.testing import CliRunner

from tune.cli import main
from tune.report import STUDY_DB, browser_check, find_browser
from tune.trials import trial_table


@pytest.fixture(scope="module")
def report(tiny_experiment):
    folder, _, _ = tiny_experiment
    result = CliRunner().invoke(main, ["report", str(folder)])
    assert result.exit_code == 0, result.output
    from tune.report import make_report

    return make_report(folder, export=False)  # the same files again, with the counts it plotted


def test_report_files_and_trial_counts(tiny_experiment, report):
    folder, spec, _ = tiny_experiment
    for name in ("report.html", "summary.md", "learning_curves.png", "params_vs_score.png",
                 "parallel_coordinates.png", "importance.png"):
        assert (folder / "report" / name).stat().st_size > 0, name
    n = spec.search.num_samples
    assert report.plotted_trials["learning_curves"] == n
    assert report.plotted_trials["params_vs_score"] == n
    assert report.plotted_trials["parallel_coordinates"] == n
    summary = (folder / "report" / "summary.md").read_text()
    assert "gic-tune run --config search.yaml" in summary and f"trials: {n}" in summary
    assert "best trial" in summary and "compute:" in summary
    html = (folder / "report" / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 4


def test_sqlite_study_has_the_scheduler_states(tiny_experiment, report):
    import optuna

    folder, spec, summary = tiny_experiment
    study = optuna.load_study(study_name="inspect", storage=f"sqlite:///{folder / STUDY_DB}")
    by_id = {t.user_attrs["ray_trial_id"]: t for t in study.trials}
    assert set(by_id) == set(trial_table(folder)["trial_id"])
    for trial_id, trial in by_id.items():
        if trial_id in summary.scheduler_stops:
            assert trial.state == optuna.trial.TrialState.PRUNED
            assert max(trial.intermediate_values) == summary.scheduler_stops[trial_id]
        else:
            assert trial.state == optuna.trial.TrialState.COMPLETE
            assert sorted(trial.intermediate_values) == list(range(1, spec.max_t + 1))
        assert set(trial.params) == set(spec.space.dimensions)


@pytest.mark.skipif(find_browser() is None, reason="no chromium on PATH (apt-get install -y chromium)")
def test_report_renders_in_a_headless_browser_with_its_images(tiny_experiment, report, tmp_path):
    folder, _, _ = tiny_experiment
    result = browser_check(folder / "report" / "report.html", tmp_path / "shot.png")
    assert result["title"] == "gic-tune report: inspect"
    assert len(result["images"]) == 4
    assert all(image["complete"] and image["width"] > 100 for image in result["images"]), result["images"]
    assert (tmp_path / "shot.png").stat().st_size > 10_000
