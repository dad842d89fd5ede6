"""The report of an experiment: plots, summary.md, a self-contained report.html and an Optuna study.

    gic-tune report results/demo          # -> results/demo/report/{report.html,summary.md,*.png}
                                          #    and results/demo/optuna_study.db

What it shows (the tuning playbook's questions): how every trial learned over both phases and where
ASHA cut it, the best trial drawn over the others; each hyperparameter against the score, to see
bounds that are too narrow or too wide; parallel coordinates; which hyperparameters mattered
(Optuna's importance evaluators); whether the rungs predict the final score; and the numbers to
quote: counts, best trial, compute time, the command that reproduces the search, and the retrain's
test accuracy against the seed recipe when `gic-tune retrain` has written them in
<experiment>/retrain/.

The hyperparameter plots and the importance compare trials at one budget that all of them reached
(tune.analysis.compare_at_rung: the latest rung, or the end, that at least half the scored trials
reached), each by its best val accuracy up to there and with only the hyperparameters that acted in
it (the space is conditional). Hyperparameters are named by their key in the space
(tune.trials.param_name) everywhere.

One room per part: `curves` (learning curves), `params` (Optuna's slice, parallel-coordinate and
importance plots), `study` (the Optuna studies: in memory, and the SQLite file), `retrained`
(retrain results), `summary` (summary.md), `page` (report.html), `figures` (what plots share).
Everything is read from the folder (tune.trials), so a folder copied from a cluster reports the same
on a laptop with no Ray running. The PNGs are embedded in report.html, so that file alone is enough
to share.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from gic.errors import GicError
from gic.files import atomic_write_text

from tune.analysis import Comparison, active_params, compare_at_rung
from tune.experiment import REPORT_DIR
from tune.report.curves import plot_learning_curves, start_order
from tune.report.figures import empty_plot
from tune.report.page import markdown_to_html, write_html
from tune.report.params import plot_importance, plot_parallel_coordinates, plot_params_vs_score
from tune.report.retrained import RetrainResults, retrain_results
from tune.report.study import export_study, param_importance, score_study, shared_params
from tune.report.summary import build_summary, summary_markdown
from tune.trials import asha_rungs, phase_epochs, require_experiment, rung_budget, search_config, trial_curves, trial_table

__all__ = ["Report", "RetrainResults", "export_study", "make_report", "markdown_to_html", "param_importance",
           "retrain_results", "score_study", "summary_markdown"]


@dataclass
class Report:
    """What make_report wrote.

    Attributes:
        folder: the report folder.
        html: report.html.
        summary: summary.md.
        pngs: plot name -> PNG.
        study_db: the Optuna SQLite export, None when skipped.
        plotted_trials: plot name -> trials drawn in it.
        retrain: the retrain folders whose results the report shows, the newest first.
        notes: lines for the user (trials left out of the study, ...).
        comparison: the budget the hyperparameter plots and importance compared trials at.
    """

    folder: Path
    html: Path
    summary: Path
    pngs: dict[str, Path] = field(default_factory=dict)
    study_db: Path | None = None
    plotted_trials: dict[str, int] = field(default_factory=dict)  # plot name -> trials drawn
    retrain: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    comparison: Comparison | None = None


def make_report(experiment: str | Path, out: str | Path | None = None, export: bool = True) -> Report:
    """Plots, summary.md, report.html (in `out`, default <experiment>/report/) and optuna_study.db.

    Args:
        experiment: the experiment folder.
        out: the report folder (default <experiment>/report/).
        export: also write the Optuna study to <experiment>/optuna_study.db.

    Returns:
        What was written (Report).

    Raises:
        GicError: not an experiment folder, or no trial has started yet.
    """
    from tune.warmstart import optuna_trials

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    folder = require_experiment(Path(experiment)).resolve()
    out = Path(out) if out is not None else folder / REPORT_DIR
    out.mkdir(parents=True, exist_ok=True)
    frame = trial_table(folder)
    if frame.empty:
        raise GicError(f"{folder}: no trial has reported yet; nothing to report")
    cfg = search_config(folder)
    curves = trial_curves(folder)
    e1, e2 = phase_epochs(cfg)
    rungs = asha_rungs(folder, cfg)
    budget = rung_budget(folder, cfg)
    trials, distributions, skipped = optuna_trials(folder)
    study_name = str(cfg.get("name") or folder.name)
    order = start_order(frame, curves)

    report = Report(folder=out, html=out / "report.html", summary=out / "summary.md")
    pngs = {"learning_curves": out / "learning_curves.png", "params_vs_score": out / "params_vs_score.png",
            "parallel_coordinates": out / "parallel_coordinates.png", "importance": out / "importance.png"}
    report.plotted_trials["learning_curves"] = plot_learning_curves(frame, curves, rungs, e1, pngs["learning_curves"],
                                                                   budget)
    # The trials at one budget they all reached, each with its active params (this experiment's
    # trials: a warm start's inherited ones are not in the table).
    comparison = compare_at_rung(frame, curves, rungs, budget, e1 + e2, active_params(frame, cfg))
    report.comparison = comparison
    if comparison is None:
        for name in ("params_vs_score", "parallel_coordinates", "importance"):
            report.plotted_trials[name] = empty_plot(pngs[name], "no trial with a score yet")
        importance, method, left_out = {}, "no trial has a score", {}
    else:
        by_index = score_study(comparison, frame, distributions, order, categories_as_index=True)
        report.plotted_trials["params_vs_score"] = plot_params_vs_score(by_index, frame, distributions, comparison,
                                                                        pngs["params_vs_score"])
        report.plotted_trials["parallel_coordinates"] = plot_parallel_coordinates(
            by_index, frame, distributions, comparison, pngs["parallel_coordinates"])
        study = score_study(comparison, frame, distributions, order)
        importance, method = param_importance(study)
        left_out = shared_params(study)[1]
        plot_importance(study, importance, method, comparison, pngs["importance"])
        report.plotted_trials["importance"] = len(study.trials) if importance else 0
    report.pngs = pngs
    if skipped:
        report.notes.append(f"{skipped} trials left out of the Optuna study (params outside the search space)")

    if export:
        report.study_db = export_study(folder, trials, study_name)
    retrain = retrain_results(folder)
    report.retrain = [r.folder for r in retrain]
    summary = build_summary(folder, cfg, frame, study_name, importance, method, retrain, comparison, left_out, curves)
    atomic_write_text(report.summary, summary.markdown())
    at = comparison.label if comparison else "-"
    captions = {
        "learning_curves": "val accuracy and loss of every trial over both phases, the best in red; purple: "
                           + (f"ASHA rungs at compute {[round(r, 2) for r in rungs]} (diamonds: where each trial reached them)"
                              if budget == "compute" else f"ASHA rungs at epochs {[int(r) for r in rungs]}")
                           + "; dashed black: start of phase 2; dashed grey with x: stopped by ASHA",
        "params_vs_score": f"each hyperparameter against the trial's best val accuracy at {at} (Optuna's slice "
                           "plot, each panel over the trials in which it was active; colour: the order trials "
                           "started in; star: the best trial; x: stopped by ASHA): a best score at the edge of a "
                           "range says the range is too narrow",
        "parallel_coordinates": f"the trials across the hyperparameters active in all of them, coloured by best val "
                                f"accuracy at {at} (Optuna's parallel coordinates; dashed: stopped by ASHA)",
        "importance": f"hyperparameter importance for best val accuracy at {at} ({method})"}
    write_html(report.html, f"gic-tune report: {study_name}", summary, frame, pngs, captions)
    return report
