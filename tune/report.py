"""The report of an experiment: plots, summary.md, a self-contained report.html and an Optuna study.

    gic-tune report results/demo          # -> results/demo/report/{report.html,summary.md,*.png}
                                          #    and results/demo/optuna_study.db

What it shows (the tuning playbook's questions): how every trial learned over both phases and where
ASHA cut it, the best trial drawn over the others; each hyperparameter against the best val
accuracy, to see bounds that are too narrow or too wide; parallel coordinates; which
hyperparameters mattered (Optuna's importance evaluators); and the numbers to quote: counts, best
trial, compute time, the command that reproduces the search, and the retrain's test accuracy
against the seed recipe when `gic-tune retrain` has written them in <experiment>/retrain/.

The last three plots are Optuna's matplotlib visualizations (plot_slice, plot_parallel_coordinate,
plot_param_importances) over a study of the trials scored by their best val accuracy; their axes
are then set to the search space: log ticks for log-scale dimensions, integer ticks for integers,
categories in the order the space lists them. Hyperparameters are named by their key in the space
(tune.trials.param_name) everywhere.

Everything is read from the folder (tune.trials), so a folder copied from a cluster reports the same
on a laptop with no Ray running. The PNGs are also embedded in report.html as base64, so the HTML
file alone is enough to share.
"""

from __future__ import annotations

import base64
import html
import math
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from gic.errors import GicError
from gic.files import atomic_path, atomic_write_text

from tune.experiment import REPORT_DIR, RETRAIN_DIR, STUDY_DB
from tune.results import best_row, params_of, rank_by_score
from tune.trials import (asha_rungs, experiment_started, phase_epochs, require_experiment, rung_budget, search_config,
                         text_columns, trial_curves, trial_table, trial_view)

# Line style per status; every trial is grey but the best.
STATUS_STYLE = {"finished": "-", "running": "-", "stopped": "--", "errored": ":", "interrupted": ":", "pending": ":",
                "paused": ":"}
OTHERS_COLOR, BEST_COLOR = "#9a9a9a", "tab:red"
SCORE = "best val_accuracy"


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
    """

    folder: Path
    html: Path
    summary: Path
    pngs: dict[str, Path] = field(default_factory=dict)
    study_db: Path | None = None
    plotted_trials: dict[str, int] = field(default_factory=dict)  # plot name -> trials drawn
    retrain: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


@contextmanager
def _optuna_plotting(figsize: tuple[float, float] | None = None) -> Iterator[None]:
    """Around an Optuna matplotlib plot: its experimental warning silenced here only, and the global
    matplotlib style it switches to (ggplot) put back afterwards."""
    import matplotlib
    import optuna

    with warnings.catch_warnings(), matplotlib.rc_context({"figure.figsize": figsize} if figsize else None):
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", message="Attempting to set identical")  # a constant dimension
        yield


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:  # a kill never leaves half a PNG
        fig.savefig(tmp, dpi=100, bbox_inches="tight", facecolor="white")
    _plt().close(fig)


# ---------------------------------------------------------------------------------- plots
def plot_learning_curves(frame: pd.DataFrame, curves: dict[str, pd.DataFrame], rungs: list[float],
                         e1: int, path: Path, budget: str = "epoch") -> int:
    """val_accuracy and val_loss per epoch of every trial; rungs, phase boundary and stops marked.

    The best trial (tune.results.best_row) is drawn thick, coloured and labelled over the others,
    which are grey, with a line style per status (dashed: stopped by ASHA, dotted: errored).

    Args:
        frame: the trial table.
        curves: per trial, its per-epoch results (tune.trials.trial_curves).
        rungs: ASHA's milestones: epochs (drawn as lines) or, with `budget` "compute", compute used
            (each trial's crossing is marked on its curve: trials cross a compute rung at other epochs).
        budget: what the rungs measure (tune.trials.rung_budget).
        e1: phase-1 epochs (the phase boundary is drawn after it).
        path: the PNG to write.

    Returns:
        The number of trials drawn.
    """
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    status = dict(zip(frame["trial_id"], frame["status"]))
    best = best_row(frame)
    best_id = best["trial_id"] if best is not None else None
    drawn = 0
    for trial_id, curve in sorted(curves.items(), key=lambda item: item[0] == best_id):  # the best on top
        if trial_id not in status:
            continue
        is_best = trial_id == best_id
        style = STATUS_STYLE.get(status[trial_id], "-")
        color = BEST_COLOR if is_best else OTHERS_COLOR
        for ax, key in zip(axes, ("val_accuracy", "val_loss")):
            if key not in curve:
                continue
            x, y = curve["training_iteration"].to_numpy(), curve[key].to_numpy(dtype=float)
            ax.plot(x, y, style, color=color, marker="o", ms=4 if is_best else 2.5, lw=2.8 if is_best else 1,
                    alpha=1 if is_best else 0.75, zorder=3 if is_best else 2)
            if status[trial_id] in ("stopped", "errored"):
                ax.plot(x[-1:], y[-1:], "x", color=color, ms=8, mew=2, zorder=3)
            if budget == "compute" and "compute" in curve:
                used = curve["compute"].to_numpy(dtype=float)
                for rung in rungs:
                    crossed = np.flatnonzero(used >= rung - 1e-9)
                    if len(crossed):
                        ax.plot(x[crossed[0]], y[crossed[0]], "D", color="tab:purple", ms=4, zorder=4)
            if is_best and len(x):
                ax.annotate(f"best: {trial_id}", (x[-1], y[-1]), xytext=(6, 0), textcoords="offset points",
                            color=BEST_COLOR, fontsize=9, fontweight="bold", va="center")
        drawn += 1
    for ax, key in zip(axes, ("val_accuracy", "val_loss")):
        for i, rung in enumerate(rungs if budget != "compute" else []):
            ax.axvline(rung, color="tab:purple", ls=":", lw=1, label="ASHA rung" if i == 0 else None)
        if budget == "compute" and rungs and ax is axes[0]:
            ax.plot([], [], "D", color="tab:purple", ms=4, label="reached an ASHA rung (compute)")
        planned = pd.to_numeric(frame["epochs_planned"], errors="coerce").max()  # NaN when no trial reported
        if e1 and pd.notna(planned) and planned > e1:
            ax.axvline(e1 + 0.5, color="black", ls="--", lw=1, label="phase 2: fine-tuning")
        ax.set_xlabel("epoch (both phases)")
        ax.set_ylabel(key)
        ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
        ax.margins(x=0.12)  # room for the best trial's label
        ax.grid(alpha=0.3)
    if best is not None:
        axes[0].plot([], [], "-", color=BEST_COLOR, lw=2.8,
                     label=f"best: {best_id} ({best['best_val_accuracy']:.4f})")
    counts = pd.Series(list(status.values())).value_counts()
    for name, style in STATUS_STYLE.items():
        if name in counts:
            axes[0].plot([], [], style, color=OTHERS_COLOR, label=f"{name} ({counts[name]})")
    axes[0].plot([], [], "x", color="black", label="stopped / errored here")
    axes[0].legend(fontsize=8, loc="best")
    fig.suptitle(f"learning curves of {drawn} trials")
    fig.tight_layout()
    _save(fig, path)
    return drawn


def _start_order(frame: pd.DataFrame, curves: dict[str, pd.DataFrame]) -> list[str]:
    """Trial ids in the order the trials started (first report's time less its run time), as far as
    the files tell; Ray's ids are random, so their order says nothing."""
    def started(trial_id: str) -> float:
        curve = curves.get(trial_id)
        if curve is None or "timestamp" not in curve or curve.empty:
            return math.inf
        first = curve.iloc[0]
        return float(first["timestamp"]) - float(first.get("time_total_s", 0) or 0)

    return sorted(frame["trial_id"], key=lambda t: (started(t), t))


def score_study(frame: pd.DataFrame, distributions: dict[str, Any], order: list[str] | None = None,
                statuses: tuple[str, ...] | None = None, categories_as_index: bool = False):
    """An in-memory Optuna study of the trials, each COMPLETE with its best val accuracy as value.

    A trial stopped by ASHA counts with its best before the stop, which is what the search learned
    about its configuration. Trials whose params do not fit `distributions` are left out.

    Args:
        frame: the trial table.
        distributions: {param key: Optuna distribution} of the search space.
        order: trial ids in the order to add them (Optuna numbers trials in that order).
        statuses: only trials with these statuses (default: every trial with a score).
        categories_as_index: store a categorical as its position in the space's choices
            (an IntDistribution), so that plots put categories in the order of the space.

    Returns:
        The study; each trial has user attrs `ray_trial_id` and `status`.
    """
    import optuna

    dists = {}
    for name, dist in distributions.items():
        if categories_as_index and isinstance(dist, optuna.distributions.CategoricalDistribution):
            dists[name] = optuna.distributions.IntDistribution(0, max(1, len(dist.choices) - 1))
        else:
            dists[name] = dist
    rows = {row["trial_id"]: row for row in frame.to_dict("records")}
    study = optuna.create_study(direction="maximize")
    for trial_id in order or sorted(rows):
        row = rows.get(trial_id)
        if row is None or pd.isna(row["best_val_accuracy"]) or (statuses and row["status"] not in statuses):
            continue
        params = {k: v for k, v in params_of(row).items() if k in dists}
        try:
            for name, value in params.items():
                original = distributions[name]
                if isinstance(original, optuna.distributions.CategoricalDistribution):
                    value = _choice(original.choices, value)
                    params[name] = original.choices.index(value) if categories_as_index else value
                elif isinstance(original, optuna.distributions.IntDistribution):
                    params[name] = int(value)
                else:
                    params[name] = float(value)
            study.add_trial(optuna.trial.create_trial(
                state=optuna.trial.TrialState.COMPLETE, value=float(row["best_val_accuracy"]), params=params,
                distributions={k: dists[k] for k in params},
                user_attrs={"ray_trial_id": trial_id, "status": row["status"]}))
        except ValueError:  # a value outside the space (create_trial checks each)
            continue
    return study


def _choice(choices: tuple[Any, ...], value: Any) -> Any:
    """The space's choice equal to a value read from disk (a numpy or JSON-typed copy of it)."""
    for choice in choices:
        if choice == value or str(choice) == str(value):
            return choice
    raise ValueError(f"{value!r} is not one of {choices}")


def _set_axis(axis, dist: Any, seen: list[float]) -> None:
    """Ticks of one parameter axis from its distribution: integers as integers, categories by name in
    the order of the space (they are plotted as their positions, see score_study)."""
    import optuna
    from matplotlib.ticker import MaxNLocator

    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        low, high = (min(seen), max(seen)) if seen else (0, len(dist.choices) - 1)
        shown = [i for i in range(len(dist.choices)) if low <= i <= high]
        axis.set_ticks(shown, [str(dist.choices[i]) for i in shown])
    elif isinstance(dist, optuna.distributions.IntDistribution) and not dist.log:
        axis.set_major_locator(MaxNLocator(integer=True))


def _wrap(name: str) -> str:
    """An axis label: a dotted key on two lines (`phase1.` over `learning_rate`)."""
    return name.replace(".", ".\n", 1)


def _pad(ax, which: str, ratio: float = 0.12) -> None:
    """Widen an axis' limits by `ratio` of its span on each side (in log space on a log axis), so
    that markers at the edge are drawn whole."""
    low, high = ax.get_xlim() if which == "x" else ax.get_ylim()
    log = (ax.get_xscale() if which == "x" else ax.get_yscale()) == "log" and low > 0
    if log:
        low, high = np.log10(low), np.log10(high)
    span = (high - low) or 1.0
    low, high = low - ratio * span, high + ratio * span
    if log:
        low, high = 10 ** low, 10 ** high
    (ax.set_xlim if which == "x" else ax.set_ylim)(low, high)


def plot_params_vs_score(frame: pd.DataFrame, distributions: dict[str, Any], order: list[str], path: Path) -> int:
    """One panel per hyperparameter: its value against the trial's best val accuracy (Optuna's slice plot).

    Colour: the order the trials started in; x: stopped by ASHA; star: the best trial.

    Args:
        frame: the trial table.
        distributions: the search space's Optuna distributions.
        order: trial ids in start order (colours).
        path: the PNG to write.

    Returns:
        The number of trials drawn.
    """
    from optuna.visualization.matplotlib import plot_slice

    _plt()  # the Agg backend
    study = score_study(frame, distributions, order, categories_as_index=True)
    names = sorted({name for t in study.trials for name in t.params})  # plot_slice's panel order
    if not study.trials or not names:
        return _empty_plot(path, "no trial with a score yet")
    with _optuna_plotting():
        axes = np.atleast_1d(plot_slice(study, params=names, target_name=SCORE))
        fig = axes[0].figure
        dots = axes[0].collections[0]  # the trials, coloured by number (start order)
        best = _best_trial(frame, study)
        handles: dict[str, Any] = {}
        for ax, name in zip(axes, names):
            trials = [t for t in study.trials if name in t.params]
            _set_axis(ax.xaxis, distributions[name], [t.params[name] for t in trials])
            _pad(ax, "x")
            stopped = [t for t in trials if t.user_attrs["status"] == "stopped"]
            if stopped:
                handles["stopped"] = ax.scatter([t.params[name] for t in stopped], [t.value for t in stopped],
                                                marker="x", c="tab:orange", s=30, zorder=4, label="stopped by ASHA")
            if best is not None and name in best.params:
                handles["best"] = ax.scatter([best.params[name]], [best.value], marker="*", s=220, c=BEST_COLOR,
                                             edgecolors="black", zorder=5,
                                             label=f"best: {best.user_attrs['ray_trial_id']}")
            ax.set_title("")
            ax.set_xlabel(name, fontsize=9)
            ax.tick_params(axis="x", labelrotation=30, labelsize=8)
        _as_grid(fig, axes, dots, cols=min(4, len(axes)))
        if handles:
            axes[0].legend(handles=list(handles.values()), fontsize=7, loc="lower left")
        fig.suptitle(f"hyperparameters against {SCORE} ({len(study.trials)} trials)")
        _save(fig, path)
    return len(study.trials)


def _as_grid(fig, axes, mappable, cols: int) -> None:
    """Optuna's slice panels (one row) as a grid of `cols` columns, y labels on the first column, one
    colour bar for all: readable on a narrow page."""
    rows = math.ceil(len(axes) / cols)
    for extra in [a for a in fig.axes if not any(a is b for b in axes)]:
        extra.remove()  # Optuna's colour bar, made for one row
    fig.set_size_inches(2.9 * cols + 1.3, 2.7 * rows + 0.7)
    fig.set_layout_engine("constrained")
    grid = fig.add_gridspec(rows, cols)
    for i, ax in enumerate(axes):
        ax.set_subplotspec(grid[i // cols, i % cols])
        ax.tick_params(axis="y", labelleft=i % cols == 0, labelsize=8)
        ax.set_ylabel(SCORE if i % cols == 0 else "", fontsize=9)
    fig.colorbar(mappable, ax=list(axes), shrink=0.9).set_label("trial, in start order", fontsize=9)


def plot_parallel_coordinates(frame: pd.DataFrame, distributions: dict[str, Any], order: list[str], path: Path) -> int:
    """One line per trial across every hyperparameter and the best val accuracy (Optuna's plot).

    Lines are coloured by best val accuracy; dashed: stopped by ASHA.

    Args:
        frame: the trial table.
        distributions: the search space's Optuna distributions.
        order: trial ids in start order.
        path: the PNG to write.

    Returns:
        The number of trials drawn.
    """
    from matplotlib.collections import LineCollection
    from optuna.visualization.matplotlib import plot_parallel_coordinate

    _plt()  # the Agg backend
    study = score_study(frame, distributions, order, categories_as_index=True)
    names = sorted({name for t in study.trials for name in t.params})  # Optuna's axis order
    if not study.trials or not names:
        return _empty_plot(path, "no trial with a score yet")
    with _optuna_plotting(figsize=(max(8.0, 1.6 * (len(names) + 1)), 5.0)):
        ax = plot_parallel_coordinate(study, params=names, target_name=SCORE)
        fig = ax.figure
        twins = [a for a in fig.axes if a is not ax and a in ax.get_shared_x_axes().get_siblings(ax)]
        if len(twins) == len(names):  # one axis per parameter, left to right
            for twin, name in zip(twins, names):
                _set_axis(twin.yaxis, distributions[name], [t.params[name] for t in study.trials if name in t.params])
                twin.tick_params(axis="y", which="both", labelsize=7)
        lines = [c for c in ax.collections if isinstance(c, LineCollection)]
        segments = lines[0].get_segments() if len(lines) == 1 else []
        # One segment per trial, in the study's order: each starts at its trial's score (the first axis).
        if len(segments) == len(study.trials) and all(
                math.isclose(seg[0][1], t.value, abs_tol=1e-9) for seg, t in zip(segments, study.trials)):
            lines[0].set_linestyle(["--" if t.user_attrs["status"] == "stopped" else "-" for t in study.trials])
            lines[0].set_linewidth(1.8)
            lines[0].set_cmap(_visible_blues())  # Optuna's Blues starts at white: the worst trials vanish
            ax.plot([], [], "--", color="grey", label="stopped by ASHA")
            ax.plot([], [], "-", color="grey", label="finished / other")
            ax.legend(fontsize=7, loc="lower right", bbox_to_anchor=(1.0, 1.02), ncol=2, frameon=False)
        ax.set_xticks(range(len(names) + 1), [SCORE.replace(" ", "\n", 1), *map(_wrap, names)], rotation=0,
                      fontsize=8, ha="center")  # Optuna's labels are cut at 20 characters
        ax.set_title(f"parallel coordinates of {len(study.trials)} trials", y=1.08)
        _save(fig, path)
    return len(study.trials)


def _best_trial(frame: pd.DataFrame, study):
    """The study's trial of the best row (tune.results.best_row: the one ranking of "best"), or None."""
    best = best_row(frame)
    return next((t for t in study.trials if best and t.user_attrs["ray_trial_id"] == best["trial_id"]), None)


def _visible_blues():
    """Optuna's colour map (Blues) without its near-white low end."""
    from matplotlib.colors import LinearSegmentedColormap

    return LinearSegmentedColormap.from_list("blues", _plt().get_cmap("Blues")(np.linspace(0.3, 1.0, 256)))


def _empty_plot(path: Path, text: str) -> int:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 2))
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center")
    _save(fig, path)
    return 0


def _importance_setup(study):
    """(evaluator, its name, the params it can rank) for a study of scored trials."""
    import optuna

    varying = sorted({n for t in study.trials for n, d in t.distributions.items() if not (
        isinstance(d, optuna.distributions.CategoricalDistribution) and len(d.choices) < 2)})
    try:
        import sklearn  # noqa: F401

        return optuna.importance.FanovaImportanceEvaluator(seed=0), "fANOVA", varying
    except ImportError:
        # With few trials, a top quantile of 0.1 holds no trial: compare the best third instead.
        evaluator = optuna.importance.PedAnovaImportanceEvaluator(target_quantile=max(0.1, 1 / 3), evaluate_on_local=True)
        return evaluator, "PED-ANOVA", varying


def param_importance(study) -> tuple[dict[str, float], str]:
    """Importance of each hyperparameter for the best val accuracy, by Optuna's evaluators.

    fANOVA needs scikit-learn; without it, PED-ANOVA (no extra dependency) is used.

    Args:
        study: a study of the ended trials scored by their best val accuracy (score_study with
            statuses finished and stopped).

    Returns:
        ({param: importance} summing to 1, the evaluator's name); ({}, reason) when it cannot run.
    """
    import optuna

    evaluator, name, varying = _importance_setup(study)
    if len(study.trials) < 4 or not varying:
        return {}, f"needs at least 4 scored trials and a varying hyperparameter (has {len(study.trials)})"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            values = optuna.importance.get_param_importances(study, evaluator=evaluator, params=varying)
    except (ValueError, RuntimeError, ZeroDivisionError) as err:
        return {}, f"{name} failed: {str(err).splitlines()[0][:160]}"
    values = {k: float(v) if math.isfinite(float(v)) else 0.0 for k, v in values.items()}
    return values, name


def plot_importance(study, importance: dict[str, float], method: str, path: Path) -> None:
    """Optuna's importance bar chart, or the reason it was not computed.

    Args:
        study: the study param_importance ranked.
        importance: param_importance's result ({} when it could not run).
        method: the evaluator's name, or why there is no importance.
        path: the PNG to write.
    """
    from optuna.visualization.matplotlib import plot_param_importances

    if importance:
        evaluator, _, varying = _importance_setup(study)
        try:
            with _optuna_plotting(figsize=(7.0, 0.45 * max(3, len(importance)) + 1.4)):
                ax = plot_param_importances(study, evaluator=evaluator, params=varying, target_name=SCORE)
                ax.set_title(f"importance for {SCORE} ({method}, {len(study.trials)} trials)", loc="left", fontsize=10)
                ax.set_xlabel("importance (sums to 1)")
                if ax.get_legend() is not None:  # one series: its legend says nothing
                    ax.get_legend().remove()
                _save(ax.figure, path)
            return
        except (ValueError, RuntimeError, ZeroDivisionError) as err:
            method = f"{method} plot failed: {str(err).splitlines()[0][:160]}"
    _empty_plot(path, f"importance not computed:\n{method}")


# ---------------------------------------------------------------------------------- study
EXPORT_SOURCE = "gic-tune report: ASHA-stopped trials are PRUNED, as the search told TPE"


def export_study(folder: Path, trials: list[Any], study_name: str) -> Path:
    """The experiment's Optuna study as an RDB storage (SQLite) in the folder.

    A local search records its study there live (tune.search), with the real order, times and
    intermediate values: that file is kept as it is. Otherwise (a search on a URI, or from before
    live studies) the trials are exported to it from Ray's files, replacing an older export.
    Open it with `optuna-dashboard sqlite:///<folder>/optuna_study.db` or
    `optuna.load_study(study_name=..., storage="sqlite:///...")`.
    """
    import optuna

    db = folder / STUDY_DB
    if db.is_file() and _live_study(db):
        return db
    tmp = folder / f".{STUDY_DB}.tmp"
    tmp.unlink(missing_ok=True)
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp.resolve()}")
    study = optuna.create_study(storage=storage, study_name=study_name, direction="maximize")
    study.set_user_attr("source", EXPORT_SOURCE)
    study.add_trials(trials)
    storage.remove_session()
    storage.engine.dispose()
    tmp.replace(db)
    return db


def _live_study(db: Path) -> bool:
    """True when `db` holds a study the search itself recorded (not a report's export)."""
    import optuna

    try:
        summaries = optuna.get_all_study_summaries(f"sqlite:///{db.resolve()}")
    except Exception:  # noqa: BLE001 - a damaged or foreign file is re-exported
        return False
    return any(s.user_attrs.get("source") != EXPORT_SOURCE for s in summaries)


# ---------------------------------------------------------------------------------- retrain
@dataclass
class RetrainResults:
    """What one `gic-tune retrain` wrote in <experiment>/retrain/<settings>/ (tune.retrain).

    Attributes:
        folder: the retrain's folder.
        table: comparison.csv (config, seeds, test_accuracy, test_auc, train_time_s as "mean ± std",
            and the *_mean columns); None when only comparison.md is there.
        markdown: comparison.md without its title; used when comparison.csv is missing.
        train_on: `train` or `train+validation` (from summary.csv), None when unknown.
    """

    folder: Path
    table: pd.DataFrame | None
    markdown: str | None
    train_on: str | None = None

    def row(self, config: str) -> dict[str, Any] | None:
        """The comparison row of a configuration (`best-<trial id>`, `top2-<id>`, `baseline`), or None."""
        if self.table is None:
            return None
        rows = self.table[self.table["config"] == config].to_dict("records")
        return rows[0] if rows else None


def retrain_results(experiment: str | Path) -> list[RetrainResults]:
    """The retrain results of an experiment: what `gic-tune retrain` wrote inside its folder.

    Args:
        experiment: the experiment folder. Its retrain/<settings>/ folders are read (retrain's
            default output), and retrain/ itself (the layout of earlier versions).

    Returns:
        One RetrainResults per folder holding comparison.csv or comparison.md, the newest first;
        [] when there is none.
    """
    root = Path(experiment) / RETRAIN_DIR
    if not root.is_dir():
        return []
    found = []
    for folder in [root, *sorted(p for p in root.iterdir() if p.is_dir())]:
        results = _retrain_folder(folder)
        if results is not None:
            files = [f for f in (folder / "comparison.csv", folder / "comparison.md") if f.is_file()]
            found.append((max(f.stat().st_mtime for f in files), results))
    return [results for _, results in sorted(found, key=lambda item: -item[0])]


def _retrain_folder(folder: Path) -> RetrainResults | None:
    csv, md, runs = folder / "comparison.csv", folder / "comparison.md", folder / "summary.csv"
    table = markdown = train_on = None
    try:
        if csv.is_file():
            table = pd.read_csv(csv)
            if not {"config", "seeds", "test_accuracy"} <= set(table.columns) or table.empty:
                table = None
        if runs.is_file():
            modes = pd.read_csv(runs).get("train_on")
            train_on = ", ".join(sorted(set(modes.dropna().astype(str)))) if modes is not None else None
    except (OSError, ValueError, pd.errors.ParserError):
        table = None
    if table is None and md.is_file():
        lines = md.read_text().splitlines()
        markdown = "\n".join(lines[1:] if lines and lines[0].startswith("# ") else lines).strip()
    if table is None and not markdown:
        return None
    return RetrainResults(folder=folder, table=table, markdown=markdown, train_on=train_on or None)


def _retrain_markdown(found: list[RetrainResults], folder: Path) -> list[str]:
    """The report's test-accuracy section: per retrain, its test-split table and tuned vs seed recipe;
    or how to get them."""
    if not found:
        return ["## Test accuracy", "", "Not measured yet: the search's val accuracy picks a configuration; retrain "
                "it from scratch with the full epoch budget and measure it on the test split:", "", "```",
                f"gic-tune retrain {folder} --seeds 3 --compare-baseline", "```", ""]
    lines = ["## Test accuracy (retrain)", "",
             "Each configuration trained again from scratch with the full epoch budget and evaluated once on the "
             "test split" + (f"; {len(found)} retrains, the newest first" if len(found) > 1 else "") + ".", ""]
    for results in found:
        where = results.folder.relative_to(folder) if results.folder.is_relative_to(folder) else results.folder
        lines += [f"### `{where}`" + (f" (trained on `{results.train_on}`)" if results.train_on else ""), ""]
        if results.table is None:
            lines += [results.markdown or "", ""]
            continue
        lines += ["| configuration | seeds | test accuracy | test AUC | training time (s) |", "|---|---:|---:|---:|---:|"]
        for row in results.table.to_dict("records"):
            label = "seed recipe (configs/baseline.yaml)" if row["config"] == "baseline" else f"tuned: {row['config']}"
            cells = [label, *(row.get(k) for k in ("seeds", "test_accuracy", "test_auc", "train_time_s"))]
            lines.append("| " + " | ".join(_md_cell(c) for c in cells) + " |")
        baseline = results.row("baseline")
        tuned = [r for r in results.table.to_dict("records") if r["config"] != "baseline"]
        if baseline is not None and tuned and "test_accuracy_mean" in results.table:
            first = tuned[0]
            delta = float(first["test_accuracy_mean"]) - float(baseline["test_accuracy_mean"])
            lines += ["", f"Tuned `{first['config']}` against the seed recipe: test accuracy {first['test_accuracy']} "
                          f"vs {baseline['test_accuracy']} ({delta:+.4f} in the mean)."]
        elif baseline is None:
            lines += ["", f"No seed-recipe row: `gic-tune retrain {folder} --compare-baseline` adds one."]
        lines.append("")
    return lines


# ---------------------------------------------------------------------------------- summary
def _fmt_s(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


@dataclass
class _Summary:
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


def _rerun_command(command: str | None, name: str) -> str:
    """The recorded command with a new `--name`, so that it runs as printed (the old name exists)."""
    import shlex

    if not command:
        return "(command not recorded)"
    args = [a for a in shlex.split(command) if a != "--resume"]
    if "--name" in args[:-1]:
        args[args.index("--name") + 1] = f"{name}-rerun"
    else:
        args += ["--name", f"{name}-rerun"]
    return shlex.join(args)


def _rungs_markdown(folder: Path, cfg: dict[str, Any], frame: pd.DataFrame) -> list[str]:
    """Do the rungs predict? Spearman's rho between the objective at each rung and the final one
    (tune.analysis), with a warning when the first rung hardly predicts."""
    from tune.analysis import WARN_BELOW, finished_scores, rung_correlations

    rungs, budget = asha_rungs(folder, cfg), rung_budget(folder, cfg)
    if not rungs:
        return []
    table = rung_correlations(trial_curves(folder), finished_scores(frame), rungs, budget)
    unit = "compute" if budget == "compute" else "epoch"
    lines = ["## Do the rungs predict the final score?", "",
             "Spearman's rank correlation between each trial's best val accuracy where it reached a rung and "
             "at its end, over the trials that ran to the end (trials ASHA stopped have no end: a search run "
             "with `--set search.early_stopping=false` measures it on every trial; `gic-tune rungs` compares "
             "schemes).", "", f"| rung ({unit}) | trials reached | ran to the end | Spearman rho |", "|---|---|---|---|"]
    for row in table.to_dict("records"):
        rho = "-" if row["spearman"] is None or pd.isna(row["spearman"]) else f"{row['spearman']:.2f}"
        lines.append(f"| {row['rung']:g} | {row['reached']} | {row['finished']} | {rho} |")
    first = table.iloc[0]
    if first["spearman"] is not None and not pd.isna(first["spearman"]) and first["spearman"] < WARN_BELOW:
        lines += ["", f"**Warning:** at the first rung the ranking hardly predicts the final one (rho "
                      f"{first['spearman']:.2f} < {WARN_BELOW}): trials stopped there may have been good. Consider "
                      "a later first rung (search.grace_period) or search.budget."]
    return lines + [""]


def _summary(folder: Path, cfg: dict[str, Any], frame: pd.DataFrame, study_name: str,
             importance: dict[str, float], method: str, retrain: list[RetrainResults]) -> _Summary:
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
        head.append(f"- best trial: **{best['trial_id']}**, best val_accuracy **{best['best_val_accuracy']:.4f}** "
                    f"at epoch {int(best['best_epoch'])} ({best['status']}, {int(best['epochs'])} epochs): {params}"
                    + (f"; retrained: test accuracy **{tested['test_accuracy']}** over {tested['seeds']} seed(s)"
                       if tested else ""))
    head += [f"- compute: {_fmt_s(wall.sum())} of trial time in total; per trial mean {_fmt_s(wall.mean())}, "
             f"min {_fmt_s(wall.min())}, max {_fmt_s(wall.max())}" if len(wall) else "- compute: -", ""]
    head += (_retrain_markdown(retrain, folder) if best is not None or retrain
             else ["## Test accuracy", "", "No trial has a val accuracy: nothing to retrain.", ""])
    head += _rungs_markdown(folder, cfg, frame)
    body = ["## Reproduce", "", "The same search again, as a new experiment beside this one:", "",
            "```", _rerun_command(cfg.get("command"), study_name), "```", "",
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
    body += ["", f"## Hyperparameter importance ({method})", ""]
    body += [f"- `{k}`: {v:.3f}" for k, v in importance.items()] or ["- not computed"]
    body.append("")
    return _Summary("\n".join(head), "\n".join(body), _markdown_table(trial_view(rank_by_score(frame))))


def summary_markdown(folder: Path, cfg: dict[str, Any], frame: pd.DataFrame, study_name: str,
                     importance: dict[str, float], method: str, retrain: list[RetrainResults] | None = None) -> str:
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

    Returns:
        The Markdown text.
    """
    return _summary(folder, cfg, frame, study_name, importance, method, retrain or []).markdown()


def _value(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _md_cell(value: Any) -> str:
    text = "-" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _markdown_table(view: pd.DataFrame) -> str:
    """A text table (trial_view) as a Markdown table: numbers right-aligned."""
    text = text_columns(view)
    align = ["---" if c in text else "---:" for c in view.columns]
    rows = ["| " + " | ".join(view.columns) + " |", "| " + " | ".join(align) + " |"]
    rows += ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in view.itertuples(index=False)]
    return "\n".join(rows)


# ---------------------------------------------------------------------------------- html
CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;max-width:1300px;margin:2em auto;padding:0 1em;
  line-height:1.45;color:#222}
img{max-width:100%;height:auto;border:1px solid #ddd}
code{overflow-wrap:anywhere;background:#f4f4f4;padding:0 .2em}
pre{background:#f4f4f4;padding:.6em;white-space:pre-wrap;overflow-wrap:anywhere}
pre code{padding:0}
figure{margin:1.5em 0}figcaption{color:#555;font-size:14px}
.table-scroll{overflow-x:auto;max-width:100%;margin:.5em 0 1.5em}
table{border-collapse:collapse;font-size:12px}
td,th{border:1px solid #ccc;padding:2px 6px;text-align:left;vertical-align:top}
th{background:#f4f4f4;font-weight:600}
table.trials{font-size:11px;font-variant-numeric:tabular-nums}
table.trials td{text-align:right;white-space:nowrap}
table.trials th{text-align:left;vertical-align:bottom}
table.trials tbody tr:first-child{font-weight:bold;background:#fff3f0}
"""


def _markdown_it():
    from markdown_it import MarkdownIt

    # CommonMark with tables; raw HTML off: trial errors and paths are shown as text, never markup.
    return MarkdownIt("commonmark", {"html": False}).enable("table")


def markdown_to_html(markdown: str) -> str:
    """CommonMark (plus tables) as HTML, by markdown-it-py; raw HTML in the text is escaped.

    Args:
        markdown: the Markdown text.

    Returns:
        The HTML fragment. Tables are wrapped in a `<div class="table-scroll">` that scrolls
        sideways on a narrow page instead of widening it.
    """
    out = _markdown_it().render(markdown)
    return out.replace("<table>", "<div class=\"table-scroll\"><table>").replace("</table>", "</table></div>")


def trials_html(frame: pd.DataFrame) -> str:
    """The trial table as HTML (pandas to_html): best first, the best row highlighted, in a container
    that scrolls sideways when the table is wider than the page.

    Cells do not wrap (a status stays on one line); a header longer than 12 characters may break
    after a `.` or `_`, so a long hyperparameter name takes two lines rather than a wide column.

    Args:
        frame: the trial table.

    Returns:
        The HTML fragment, with its own style lines for the columns of words (aligned left).
    """
    view = trial_view(rank_by_score(frame))
    table = view.to_html(index=False, escape=True, border=0, classes="trials")
    head, rest = table.split("</thead>", 1)
    head = re.sub(r"(<th>)(.{13,}?)(</th>)", lambda m: m[1] + re.sub(r"([._])", r"\1<wbr>", m[2]) + m[3], head)
    left = ",".join(f"table.trials td:nth-child({i + 1})" for i, c in enumerate(view.columns)
                    if c in text_columns(view))
    style = f"<style>{left}{{text-align:left}}</style>" if left else ""
    return f"{style}<div class=\"table-scroll\">{head}</thead>{rest}</div>"


def write_html(path: Path, title: str, summary: _Summary, frame: pd.DataFrame, pngs: dict[str, Path],
               captions: dict[str, str]) -> Path:
    """report.html: the summary, the plots (PNGs embedded as base64 data URIs) and the trial table, one file."""
    figures = []
    for name, png in pngs.items():
        data = base64.b64encode(png.read_bytes()).decode()
        figures.append(f"<figure id='{name}'><img alt='{html.escape(name)}' src='data:image/png;base64,{data}'>"
                       f"<figcaption>{html.escape(captions.get(name, name))} ({html.escape(png.name)})</figcaption></figure>")
    parts = ["<!doctype html><html lang='en'><head><meta charset='utf-8'>",
             "<meta name='viewport' content='width=device-width, initial-scale=1'>",
             f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>",
             markdown_to_html(summary.head), "<h2>Plots</h2>", *figures, markdown_to_html(summary.body),
             "<h2>Trials</h2>", trials_html(frame), "</body></html>"]
    atomic_write_text(path, "\n".join(parts))
    return path


# ---------------------------------------------------------------------------------- driver
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
    e1, _ = phase_epochs(cfg)
    rungs = asha_rungs(folder, cfg)
    budget = rung_budget(folder, cfg)
    trials, distributions, skipped = optuna_trials(folder)
    study_name = str(cfg.get("name") or folder.name)
    order = _start_order(frame, curves)

    report = Report(folder=out, html=out / "report.html", summary=out / "summary.md")
    pngs = {"learning_curves": out / "learning_curves.png", "params_vs_score": out / "params_vs_score.png",
            "parallel_coordinates": out / "parallel_coordinates.png", "importance": out / "importance.png"}
    report.plotted_trials["learning_curves"] = plot_learning_curves(frame, curves, rungs, e1, pngs["learning_curves"],
                                                                   budget)
    report.plotted_trials["params_vs_score"] = plot_params_vs_score(frame, distributions, order, pngs["params_vs_score"])
    report.plotted_trials["parallel_coordinates"] = plot_parallel_coordinates(frame, distributions, order,
                                                                              pngs["parallel_coordinates"])
    # Importance: this experiment's ended trials (a warm start's inherited ones are not in the table).
    ended = score_study(frame, distributions, order, statuses=("finished", "stopped"))
    importance, method = param_importance(ended)
    plot_importance(ended, importance, method, pngs["importance"])
    report.plotted_trials["importance"] = len(ended.trials) if importance else 0
    report.pngs = pngs
    if skipped:
        report.notes.append(f"{skipped} trials left out of the Optuna study (params outside the search space)")

    if export:
        report.study_db = export_study(folder, trials, study_name)
    retrain = retrain_results(folder)
    report.retrain = [r.folder for r in retrain]
    summary = _summary(folder, cfg, frame, study_name, importance, method, retrain)
    atomic_write_text(report.summary, summary.markdown())
    captions = {
        "learning_curves": "val accuracy and loss of every trial over both phases, the best in red; purple: "
                           + (f"ASHA rungs at compute {[round(r, 2) for r in rungs]} (diamonds: where each trial reached them)"
                              if budget == "compute" else f"ASHA rungs at epochs {[int(r) for r in rungs]}")
                           + "; dashed black: start of phase 2; dashed grey with x: stopped by ASHA",
        "params_vs_score": "each hyperparameter against the trial's best val accuracy (Optuna's slice plot; colour: "
                           "the order trials started in; star: the best trial; x: stopped by ASHA): a best score at "
                           "the edge of a range says the range is too narrow",
        "parallel_coordinates": "every trial across the hyperparameters, coloured by best val accuracy "
                                "(Optuna's parallel coordinates; dashed: stopped by ASHA)",
        "importance": f"hyperparameter importance for best val accuracy ({method})"}
    write_html(report.html, f"gic-tune report: {study_name}", summary, frame, pngs, captions)
    return report
