"""`gic-tune report`: files, trial counts in the plots, axes from the search space, trials compared
at one budget over their active hyperparameters, the rung warnings, the retrain results, the Optuna
SQLite study, and the page in a real browser at two widths."""

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
    compared = len(report.comparison.scores)  # the trials at one budget (see the next tests)
    assert 0 < compared <= n
    assert report.plotted_trials["params_vs_score"] == compared
    assert report.plotted_trials["parallel_coordinates"] == compared
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


def _figures(monkeypatch, tiny_experiment, tmp_path):
    """The report's hyperparameter figures as drawn (not saved), with what they were drawn from."""
    import tune.report.params as params
    from tune.analysis import active_params, compare_at_rung
    from tune.report.study import score_study
    from tune.trials import asha_rungs, phase_epochs, rung_budget, search_config, trial_curves
    from tune.warmstart import optuna_trials

    folder, _, _ = tiny_experiment
    figures = {}
    monkeypatch.setattr(params, "save", lambda fig, path: figures.__setitem__(path.stem, fig))
    frame, cfg, curves = trial_table(folder), search_config(folder), trial_curves(folder)
    _, distributions, _ = optuna_trials(folder)
    comparison = compare_at_rung(frame, curves, asha_rungs(folder, cfg), rung_budget(folder, cfg),
                                 sum(phase_epochs(cfg)), active_params(frame, cfg))
    study = score_study(comparison, frame, distributions, sorted(frame["trial_id"]), categories_as_index=True)
    params.plot_params_vs_score(study, frame, distributions, comparison, tmp_path / "slice.png")
    params.plot_parallel_coordinates(study, frame, distributions, comparison, tmp_path / "parallel.png")
    return figures, study, comparison, distributions


def test_plot_axes_follow_the_search_space(tiny_experiment, monkeypatch, tmp_path):
    """Log ticks for log dimensions, integer ticks for integers, categories in the order of the space."""
    import matplotlib.pyplot as plt
    from tune.report.study import shared_params

    figures, study, comparison, distributions = _figures(monkeypatch, tiny_experiment, tmp_path)
    panels = {ax.get_xlabel(): ax for ax in figures["slice"].axes if ax.get_xlabel()}
    assert set(panels) == {name for t in study.trials for name in t.params}
    assert {"phase1.learning_rate", "model.dropout_rate", "model.augmentation", "phase2.unfreeze_layers"} <= set(panels)
    assert panels["phase1.learning_rate"].get_xscale() == "log"
    assert panels["model.dropout_rate"].get_xscale() == "linear"
    seen = {t.params["model.augmentation"] for t in study.trials}  # positions in the space: none=0, light=1
    assert [t.get_text() for t in panels["model.augmentation"].get_xticklabels()] == ["none", "light"][min(seen):max(seen) + 1]
    assert all(float(t).is_integer() for t in panels["phase2.unfreeze_layers"].get_xticks())

    names, _ = shared_params(study)  # Optuna's axis order, left to right after the score
    ax = figures["parallel"].axes[0]
    twins = [a for a in figures["parallel"].axes if a is not ax and a in ax.get_shared_x_axes().get_siblings(ax)]
    axis = dict(zip(names, twins))
    assert axis["phase1.learning_rate"].get_yscale() == "log"
    assert [t.get_text() for t in axis["model.augmentation"].get_yticklabels()] == ["none", "light"][min(seen):max(seen) + 1]
    assert all(float(t).is_integer() for t in axis["phase2.unfreeze_layers"].get_yticks())
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert [label.replace("\n", "") for label in labels[1:]] == names  # on two lines, nothing cut
    assert all(len(line) <= 16 for label in labels for line in label.splitlines()), labels  # no overlap
    for fig in figures.values():
        plt.close(fig)


def test_plots_compare_trials_at_one_budget_over_active_parameters(tiny_experiment, monkeypatch, tmp_path):
    """Every compared trial reached the budget named in the titles, is valued by its objective there
    (not by its best after more epochs), and shows only the hyperparameters that acted in it."""
    import math

    import matplotlib.pyplot as plt
    from tune.analysis import COMPARE_SHARE, MIN_COMPARED, budget_points
    from tune.trials import asha_rungs, phase_epochs, rung_budget, search_config, trial_curves

    folder, spec, _ = tiny_experiment
    figures, study, comparison, _ = _figures(monkeypatch, tiny_experiment, tmp_path)
    frame, curves, cfg = trial_table(folder).set_index("trial_id"), trial_curves(folder), search_config(folder)

    # The budget: the latest point (a rung or the end) that enough scored trials reached.
    def reached(budget, at):
        return {t for t, c in curves.items() if (c[budget if budget == "compute" else "training_iteration"]
                                                 >= at - 1e-9).any()}

    scored = frame["best_val_accuracy"].notna().sum()
    need = min(scored, max(MIN_COMPARED, math.ceil(COMPARE_SHARE * scored)))
    points = budget_points(asha_rungs(folder, cfg), rung_budget(folder, cfg), sum(phase_epochs(cfg)))
    assert len(points) >= 2 and points[-1][1] == spec.max_epochs
    latest = [p for p in points if len(reached(p[0], p[1])) >= need][-1]
    assert (comparison.budget, comparison.at) == latest[:2] and set(comparison.scores) == reached(*latest[:2])
    assert len(study.trials) == len(comparison.scores) >= need

    # Each trial's value: its best val accuracy up to the epoch where it reached the budget.
    for trial in study.trials:
        trial_id = trial.user_attrs["ray_trial_id"]
        curve = curves[trial_id]
        upto = curve[curve["training_iteration"] <= comparison.at] if comparison.budget == "epoch" else \
            curve.iloc[: int((curve["compute"] < comparison.at - 1e-9).sum()) + 1]
        assert trial.value == pytest.approx(upto["val_accuracy"].max())
        row = frame.loc[trial_id]
        if row["epochs"] > comparison.at and comparison.budget == "epoch":
            assert trial.value <= row["best_val_accuracy"] + 1e-9
        # Only active params: no augmentation strength (or phase-1 augmentation) without an augmentation.
        augmented = trial.params["model.augmentation"] != 0  # position 0 is `none`
        assert ("augmentation_strength" in trial.params) == augmented
        assert ("phase1.augment" in trial.params) == augmented

    # The budget is named in every title, and a panel says when its parameter acted in only some trials.
    assert comparison.label in figures["slice"].get_suptitle()
    assert comparison.label in figures["parallel"].axes[0].get_title()
    panels = {ax.get_xlabel(): ax for ax in figures["slice"].axes if ax.get_xlabel()}
    strength = sum("augmentation_strength" in t.params for t in study.trials)
    if 0 < strength < len(study.trials):
        assert panels["augmentation_strength"].get_title() == f"active in {strength} of {len(study.trials)}"
        assert "augmentation_strength" in figures["parallel"].axes[0].get_title()  # named as not shown
    assert panels["model.dropout_rate"].get_title() == ""
    for fig in figures.values():
        plt.close(fig)


def test_report_names_the_budget_and_ranks_only_shared_parameters(tiny_experiment, report):
    from tune.report.study import score_study, shared_params
    from tune.warmstart import optuna_trials

    folder, _, _ = tiny_experiment
    comparison = report.comparison
    summary = (folder / "report" / "summary.md").read_text()
    assert f"Trials compared at **{comparison.label}**" in summary
    assert f"{len(comparison.scores)} of {comparison.scored} trials" in summary
    _, distributions, _ = optuna_trials(folder)
    shared, partial = shared_params(score_study(comparison, trial_table(folder), distributions))
    section = summary.split("## Hyperparameter importance", 1)[1].split("## Trials", 1)[0]
    ranked = re.findall(r"^- `([^`]+)`: \d\.\d{3}$", section, flags=re.M)
    assert set(ranked) <= set(shared) and not set(ranked) & set(partial)
    assert ranked or "- not computed" in section
    for name in partial:
        assert f"`{name}` (active in" in section
    html = (folder / "report" / "report.html").read_text()
    assert f"at {comparison.label}" in html  # the captions


def test_inactive_parameters_recorded_by_an_older_search_are_dropped(tiny_experiment, tmp_path):
    """A folder written before the space was conditional records every dimension in every trial."""
    import json

    from tune.analysis import active_params
    from tune.trials import search_config

    folder = shutil.copytree(tiny_experiment[0], tmp_path / "experiment")
    frame = trial_table(folder)
    plain = frame[frame["param.model.augmentation"] == "none"]["trial_id"]
    if plain.empty:
        pytest.skip("every trial of the tiny search drew an augmentation")
    params_file = next(folder.glob(f"*{plain.iloc[0]}*/params.json"))
    params = json.loads(params_file.read_text())
    params_file.write_text(json.dumps({**params, "augmentation_strength": 1.3, "phase1.augment": False}))
    frame = trial_table(folder)
    assert frame.set_index("trial_id").loc[plain.iloc[0], "param.augmentation_strength"] == 1.3
    active = active_params(frame, search_config(folder))[plain.iloc[0]]
    assert "augmentation_strength" not in active and "phase1.augment" not in active
    assert active["model.augmentation"] == "none" and "model.dropout_rate" in active


def test_rung_section_warns_for_each_rung_that_does_not_predict(tiny_experiment):
    """Spearman's rho per rung; a warning names every rung below WARN_BELOW."""
    from tune.analysis import WARN_BELOW, at_rung
    from tune.report.summary import _rungs_markdown
    from tune.trials import trial_curves

    folder, _, _ = tiny_experiment
    curves = trial_curves(folder)
    frame = trial_table(folder)
    # The same trials, each marked as run to the end with a final score in the reverse order of its
    # score at epoch 1: that rung's ranking is the opposite of the final one.
    reached = {t: at_rung(c, 1, "epoch") for t, c in curves.items()}
    reversed_final = frame.assign(status="finished", best_val_accuracy=[1.0 - reached[t] for t in frame["trial_id"]])
    lines = "\n".join(_rungs_markdown([1.0], "epoch", curves, reversed_final))
    assert "| 1 | 6 | 6 | -1.00 |" in lines, lines
    assert "**Warning:** the ranking at epoch 1 (rho -1.00)" in lines and f"rho < {WARN_BELOW}" in lines
    # In the order of the rung: no warning.
    same = frame.assign(status="finished", best_val_accuracy=[reached[t] for t in frame["trial_id"]])
    assert "Warning" not in "\n".join(_rungs_markdown([1.0], "epoch", curves, same))


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
    assert "retrained: test accuracy **0.9000 ± 0.0354** over 2 seed(s)" in summary  # on the best trial's line
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


def test_the_reproduce_command_runs_from_the_folder_the_search_ran_in():
    from tune.report.summary import _rerun_command

    command = "gic-tune run --config configs/demo.yaml --resume"
    assert _rerun_command(command, "demo", "/home/me/my project") == \
        "cd '/home/me/my project' && gic-tune run --config configs/demo.yaml --name demo-rerun"
    assert _rerun_command("gic-tune run --name demo", "demo", None) == "gic-tune run --name demo-rerun"
