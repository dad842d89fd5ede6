"""`gic-tune report`: files, trial counts in the plots, axes from the search space, the retrain
results, the Optuna SQLite study, and the page in a real browser at two widths."""

import re
import shutil
import warnings

import pytest
from browser import browser_check, find_browser, problems
from click.testing import CliRunner

from tune.cli import main
from tune.experiment import STUDY_DB
from tune.report import make_report
from tune.trials import trial_table


@pytest.fixture(scope="module")
def report(tiny_experiment):
    folder, _, _ = tiny_experiment
    result = CliRunner().invoke(main, ["report", str(folder)])
    assert result.exit_code == 0, result.output
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


def test_hyperparameters_have_one_name_everywhere(tiny_experiment, report):
    """The key in the search space: `model.dropout_rate` keeps its prefix like `phase1.learning_rate`."""
    folder, spec, _ = tiny_experiment
    summary = (folder / "report" / "summary.md").read_text()
    header = next(line for line in summary.splitlines() if line.startswith("| trial |"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    assert set(spec.space.dimensions) <= set(columns)
    assert "dropout_rate" not in columns
    html = (folder / "report" / "report.html").read_text()
    assert "model.<wbr>dropout_<wbr>rate" in html  # the HTML header may break there


def test_html_is_markdown_it_with_a_scrolling_trial_table(tiny_experiment, report):
    folder, _, _ = tiny_experiment
    html = (folder / "report" / "report.html").read_text()
    # The space is a nested list in summary.md: it stays nested.
    assert re.search(r"<li>space:\s*<ul>\s*<li><code>model\.dropout_rate</code>", html), html[:3000]
    assert re.search(r'<div class="table-scroll"><table[^>]*class="dataframe trials"', html)
    assert "overflow-x:auto" in html and "white-space:nowrap" in html
    assert "Not measured yet" in html and "gic-tune retrain" in html  # no retrain/ in this folder


def test_plot_axes_follow_the_search_space(tiny_experiment, monkeypatch, tmp_path):
    """Log ticks for log dimensions, integer ticks for integers, categories in the order of the space."""
    import tune.report as rep
    from tune.warmstart import optuna_trials

    folder, _, _ = tiny_experiment
    figures = {}
    monkeypatch.setattr(rep, "_save", lambda fig, path: figures.__setitem__(path.stem, fig))
    frame = trial_table(folder)
    _, distributions, _ = optuna_trials(folder)
    order = sorted(frame["trial_id"])
    rep.plot_params_vs_score(frame, distributions, order, tmp_path / "slice.png")
    rep.plot_parallel_coordinates(frame, distributions, order, tmp_path / "parallel.png")

    panels = {ax.get_xlabel(): ax for ax in figures["slice"].axes if ax.get_xlabel()}
    assert set(panels) == set(distributions)
    assert panels["phase1.learning_rate"].get_xscale() == "log"
    assert panels["model.dropout_rate"].get_xscale() == "linear"
    assert [t.get_text() for t in panels["model.augmentation"].get_xticklabels()] == ["none", "light"]
    assert all(float(t).is_integer() for t in panels["phase2.unfreeze_layers"].get_xticks())

    names = sorted(distributions)  # Optuna's axis order, left to right after the score
    ax = figures["parallel"].axes[0]
    twins = [a for a in figures["parallel"].axes if a is not ax and a in ax.get_shared_x_axes().get_siblings(ax)]
    axis = dict(zip(names, twins))
    assert axis["phase1.learning_rate"].get_yscale() == "log"
    assert [t.get_text() for t in axis["model.augmentation"].get_yticklabels()] == ["none", "light"]
    assert all(float(t).is_integer() for t in axis["phase2.unfreeze_layers"].get_yticks())
    assert [t.get_text() for t in ax.get_xticklabels()][1:] == [n.replace(".", ".\n", 1) for n in names]
    import matplotlib.pyplot as plt

    for fig in figures.values():
        plt.close(fig)


def test_no_experimental_warning_escapes(tiny_experiment, tmp_path):
    import optuna

    folder, _, _ = tiny_experiment
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        make_report(folder, out=tmp_path / "report", export=False)
    assert not [w for w in caught if issubclass(w.category, optuna.exceptions.ExperimentalWarning)]


def test_retrain_results_replace_the_hint(tiny_experiment, tmp_path):
    """Test accuracy and the seed-recipe comparison, from what `gic-tune retrain` writes."""
    from tune.results import best_row
    from tune.retrain import RETRAIN_DIR, comparison, retrain_folder_name

    folder = shutil.copytree(tiny_experiment[0], tmp_path / "experiment")
    best = best_row(trial_table(folder))["trial_id"]
    out = folder / RETRAIN_DIR / retrain_folder_name(1, 2, "train", True, None)
    out.mkdir(parents=True)
    runs = [{"name": name, "seed": seed, "train_on": "train", "test_accuracy": acc, "test_auc": 0.9,
             "train_time_s": 10.0 + seed} for name, accs in ((f"best-{best}", (0.925000011920929, 0.875)),
                                                              ("baseline", (0.75, 0.8))) for seed, acc in enumerate(accs)]
    comparison(runs).to_csv(out / "comparison.csv", index=False)
    import pandas as pd

    pd.DataFrame(runs).to_csv(out / "summary.csv", index=False)
    result = make_report(folder, export=False)
    assert result.retrain == [out]
    summary = result.summary.read_text()
    assert "Not measured yet" not in summary
    assert "| tuned: best-" in summary and "| seed recipe (configs/baseline.yaml) | 2 | 0.7750 ± 0.0354 |" in summary
    assert "test accuracy 0.9000 ± 0.0354 vs 0.7750 ± 0.0354 (+0.1250 in the mean)" in summary
    assert f"retrained: test accuracy **0.9000 ± 0.0354** over 2 seed(s)" in summary  # on the best trial's line
    html = result.html.read_text()
    assert "<h2>Test accuracy (retrain)</h2>" in html and "0.7750 ± 0.0354" in html


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
            assert sorted(trial.intermediate_values) == list(range(1, spec.max_epochs + 1))
        from tune.space import active  # the conditional space: only the dimensions that had an effect

        assert set(trial.params) == {d for d in spec.space.dimensions
                                     if active(d, trial.params, "none", spec.trainer.phase2.unfreeze_layers)}


@pytest.mark.skipif(find_browser() is None, reason="no chromium on PATH (apt-get install -y chromium)")
@pytest.mark.parametrize("width", [1400, 800])
def test_report_renders_in_a_headless_browser_and_fits_the_page(tiny_experiment, report, tmp_path, width):
    folder, _, _ = tiny_experiment
    result = browser_check(folder / "report" / "report.html", width, tmp_path / f"report-{width}.png")
    assert result["title"] == "gic-tune report: inspect"
    assert len(result["images"]) == 4
    assert all(image["complete"] and image["width"] > 100 for image in result["images"]), result["images"]
    assert problems(result) == [], problems(result)  # no page-wide scrolling: the table box scrolls
    trials_box = [b for b in result["scrollers"] if "trials" in (b["table_class"] or "")]
    assert len(trials_box) == 1 and trials_box[0]["nowrap_status"] == "nowrap"
    assert trials_box[0]["right"] <= result["page"]["viewport"]
    assert (tmp_path / f"report-{width}.png").stat().st_size > 10_000
