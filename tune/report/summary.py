"""summary.md: what the search found and how far to trust it, in Markdown.

    summary = build_summary(folder, cfg, frame, "demo", importance, method, retrain, comparison)
    text = summary.markdown()                  # head + body + the trial table

The head: counts, the end state, the best trial, compute, the test accuracy (retrain), whether the
rungs predict the final score. The body: the command that reproduces the search, the configuration,
the comparison budget and the hyperparameter importance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from tune.analysis import COMPARE_SHARE, WARN_BELOW, Comparison, finished_scores, rung_correlations
from tune.experiment import STUDY_DB
from tune.report.page import markdown_table
from tune.report.retrained import RetrainResults, retrain_markdown
from tune.results import best_row, params_of, rank_by_score
from tune.trials import asha_rungs, experiment_started, phase_epochs, rung_budget, trial_curves, trial_view


def _fmt_s(seconds: float | None) -> str:
    """A duration for people: `95 s`, `3.2 min`, `-` when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


@dataclass
class Summary:
    """summary.md in three parts, so report.html can put the plots and its own table between them."""

    head: str  # title, counts, best trial, compute, test accuracy
    body: str  # reproduce, configuration, importance
    trials: str  # the trial table in Markdown

    def markdown(self) -> str:
        return "\n".join([self.head, self.body, "## Trials", "", self.trials, ""])


def _end_state(folder: Path) -> str:
    """How the search ended, from the driver's record (tune.experiment)."""
    from tune.experiment import driver_gone, read_driver

    record = read_driver(folder)
    if record is None:
        return "unknown (no driver.json: written by an older gic-tune)"
    state = record.get("state")
    if state == "running" and driver_gone(folder):
        return "interrupted: its driver was killed; `gic-tune run ... --resume` continues it"
    return {"finished": "finished", "failed": "failed: every trial errored",
            "interrupted": "interrupted; `gic-tune run ... --resume` continues it",
            "running": "running (this report is a snapshot)"}.get(state, str(state))


def _rerun_command(command: str | None, name: str, cwd: str | None = None) -> str:
    """The recorded command with a new `--name` (the old name exists), run from the folder it was run
    in (its relative paths, and the default config, are resolved there), so that it runs as printed."""
    import shlex

    if not command:
        return "(command not recorded)"
    args = [a for a in shlex.split(command) if a != "--resume"]
    if "--name" in args[:-1]:
        args[args.index("--name") + 1] = f"{name}-rerun"
    else:
        args += ["--name", f"{name}-rerun"]
    return (f"cd {shlex.quote(cwd)} && " if cwd else "") + shlex.join(args)


def _rungs_markdown(rungs: list[float], budget: str, curves: dict[str, pd.DataFrame], frame: pd.DataFrame) -> list[str]:
    """Do the rungs predict? Spearman's rho between the objective at each rung and the final one
    (tune.analysis), with a warning for every rung whose ranking hardly predicts."""
    table = rung_correlations(curves, finished_scores(frame), rungs, budget)
    if table.empty:
        return []
    unit = "compute" if budget == "compute" else "epoch"
    lines = ["## Do the rungs predict the final score?", "",
             "Spearman's rank correlation between each trial's best val accuracy where it reached a rung and "
             "at its end, over the trials that ran to the end (trials ASHA stopped have no end: a search run "
             "with `--set search.early_stopping=false` measures it on every trial; `gic-tune rungs` compares "
             "schemes).", "", f"| rung ({unit}) | trials reached | ran to the end | Spearman rho |", "|---|---|---|---|"]
    for row in table.to_dict("records"):
        lines.append(f"| {row['rung']:g} | {row['reached']} | {row['finished']} | {_rho(row['spearman'])} |")
    weak = [row for row in table.to_dict("records") if _known(row["spearman"]) and row["spearman"] < WARN_BELOW]
    if weak:
        where = ", ".join(f"{unit} {row['rung']:g} (rho {row['spearman']:.2f})" for row in weak)
        lines += ["", f"**Warning:** the ranking at {where} hardly predicts the final one (rho < {WARN_BELOW}): "
                      "trials stopped there may have been good. Consider a later first rung (search.grace_period), "
                      "another search.budget, or `search.early_stopping: false`."]
    elif not any(_known(row["spearman"]) for row in table.to_dict("records")):
        lines += ["", "Too few trials ran to the end (at least 3 are needed) to tell whether the rungs predict."]
    return lines + [""]


def _known(rho: Any) -> bool:
    return rho is not None and not pd.isna(rho)


def _rho(rho: Any) -> str:
    return f"{rho:.2f}" if _known(rho) else "-"


def _importance_markdown(comparison: Comparison | None, importance: dict[str, float], method: str,
                         left_out: dict[str, int]) -> list[str]:
    """The importance section: the budget the trials were compared at, how far its ranking predicts
    the final one, the hyperparameters ranked and those left out."""
    if comparison is None:
        return ["## Hyperparameter importance", "", "- not computed: no trial has a score", ""]
    lines = [f"## Hyperparameter importance ({method})", "",
             f"Trials compared at **{comparison.label}**, the latest budget at least {COMPARE_SHARE:.0%} of the "
             f"scored trials reached: {len(comparison.scores)} of {comparison.scored} trials, each by its best val "
             "accuracy up to there"
             + ("" if len(comparison.scores) == comparison.scored else
                " (the others ended before it: stopped, or with no phase 2 to run)")
             + "; the score-vs-parameter and parallel-coordinate plots show the same."]
    if comparison.spearman is None and not comparison.at_end:
        lines.append(f"Too few of the compared trials ran to the end ({comparison.finished}; at least 3 are needed) "
                     "to tell whether the ranking at this budget predicts the final one.")
    elif comparison.spearman is not None:
        lines.append(f"There the ranking agrees with the final one by Spearman rho {comparison.spearman:.2f} "
                     f"({comparison.finished} of the compared trials ran to the end)"
                     + (f". **Warning:** below {WARN_BELOW}: importance at this budget may not be importance for "
                        "the final score." if comparison.spearman < WARN_BELOW else "."))
    if left_out:
        lines.append("Only hyperparameters active in every compared trial are ranked; left out: "
                     + ", ".join(f"`{k}` (active in {n} of {len(comparison.scores)})" for k, n in left_out.items())
                     + ".")
    lines.append("")
    lines += [f"- `{k}`: {v:.3f}" for k, v in importance.items()] or ["- not computed"]
    return lines + [""]


def build_summary(folder: Path, cfg: dict[str, Any], frame: pd.DataFrame, study_name: str,
                  importance: dict[str, float], method: str, retrain: list[RetrainResults],
                  comparison: Comparison | None = None, left_out: dict[str, int] | None = None,
                  curves: dict[str, pd.DataFrame] | None = None) -> Summary:
    """summary.md in parts (see summary_markdown for the arguments)."""
    counts = frame["status"].value_counts().to_dict() if not frame.empty else {}
    best = best_row(frame) if not frame.empty else None
    wall = frame["wall_time_s"].dropna()
    search, trainer = cfg.get("search") or {}, cfg.get("trainer") or {}
    e1, e2 = phase_epochs(cfg)
    started = experiment_started(folder)
    head = [f"# Search report: {study_name}", "",
            f"- experiment folder: `{folder}`" + (f", started {started:%Y-%m-%d %H:%M}" if started else ""),
            f"- study name: `{study_name}`; Optuna study exported to `{STUDY_DB}` "
            f"(`optuna-dashboard sqlite:///{(folder / STUDY_DB).resolve()}`)",
            f"- trials: {len(frame)} (" + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) + ")",
            f"- state: {_end_state(folder)}"]
    if best is not None:
        params = ", ".join(f"`{k}={_value(v)}`" for k, v in params_of(best).items())
        tested = next((r.row(f"best-{best['trial_id']}") for r in retrain if r.row(f"best-{best['trial_id']}")), None)
        at = f" at epoch {int(best['best_epoch'])}" if pd.notna(best.get("best_epoch")) else ""
        head.append(f"- best trial: **{best['trial_id']}**, best val_accuracy **{best['best_val_accuracy']:.4f}**"
                    f"{at} ({best['status']}, {int(best['epochs'])} epochs): {params}"
                    + (f"; retrained: test accuracy **{tested['test_accuracy']}** over {tested['seeds']} seed(s)"
                       if tested else ""))
    head += [f"- compute: {_fmt_s(wall.sum())} of trial time in total; per trial mean {_fmt_s(wall.mean())}, "
             f"min {_fmt_s(wall.min())}, max {_fmt_s(wall.max())}" if len(wall) else "- compute: -", ""]
    head += (retrain_markdown(retrain, folder) if best is not None or retrain
             else ["## Test accuracy", "", "No trial has a val accuracy: nothing to retrain.", ""])
    rungs = asha_rungs(folder, cfg)
    if rungs:
        head += _rungs_markdown(rungs, rung_budget(folder, cfg), trial_curves(folder) if curves is None else curves,
                                frame)
    body = ["## Reproduce", "", "The same search again, as a new experiment beside this one (it reads the search file as it is now; "
            "the settings this search ran with are in `search_config.yaml`):", "",
            "```", _rerun_command(cfg.get("command"), study_name, cfg.get("cwd")), "```", "",
            "## Configuration", "",
            f"- source: `{cfg.get('source', '-')}`",
            f"- data: {(trainer.get('data') or {}).get('source', '-')} `{(trainer.get('data') or {}).get('dir', '-')}` "
            f"at {(trainer.get('data') or {}).get('image_size', '-')} px; weights "
            f"`{(trainer.get('model') or {}).get('weights', '-')}`; epochs {e1} + {e2} (ASHA max_t)",
            f"- search: {search.get('num_samples', '-')} trials, {search.get('max_concurrent', '-')} at a time, "
            f"TPE seed {search.get('seed', '-')}, n_startup_trials {search.get('n_startup_trials', '-')}; ASHA grace "
            f"{search.get('grace_period', '-')}, reduction factor {search.get('reduction_factor', '-')}; "
            f"resources {search.get('resources_per_trial', '-')}",
            "- space:"]
    for name, dim in (cfg.get("space") or {}).items():
        if "choices" in dim:
            body.append(f"  - `{name}` in {dim['choices']}")
        else:
            body.append(f"  - `{name}` {dim.get('kind', '')} [{dim.get('low', 0)}, {dim.get('high', 0)}]"
                        + (" log" if dim.get("log") else ""))
    if cfg.get("fixed"):
        body.append(f"- fixed: {cfg['fixed']}")
    body += ["", *_importance_markdown(comparison, importance, method, left_out or {})]
    return Summary("\n".join(head), "\n".join(body), markdown_table(trial_view(rank_by_score(frame))))


def summary_markdown(folder: Path, cfg: dict[str, Any], frame: pd.DataFrame, study_name: str,
                     importance: dict[str, float], method: str, retrain: list[RetrainResults] | None = None,
                     comparison: Comparison | None = None, left_out: dict[str, int] | None = None) -> str:
    """summary.md: study, counts, best trial, compute, test accuracy, reproduce, configuration,
    importance and the trial table.

    Args:
        folder: the experiment folder.
        cfg: its search_config.yaml.
        frame: the trial table.
        study_name: the study's name.
        importance: {param: importance} (param_importance).
        method: the importance evaluator's name, or why there is none.
        retrain: retrain_results(folder); none: the section says how to measure test accuracy.
        comparison: the budget the importance compared the trials at (tune.analysis.compare_at_rung).
        left_out: hyperparameters not ranked, active in only some compared trials -> in how many.

    Returns:
        The Markdown text.
    """
    return build_summary(folder, cfg, frame, study_name, importance, method, retrain or [], comparison,
                         left_out).markdown()


def _value(v: Any) -> str:
    """A hyperparameter's value in a sentence: floats to 4 significant digits."""
    return f"{v:.4g}" if isinstance(v, float) else str(v)
