"""The hyperparameters against the score, at one budget: Optuna's slice, parallel-coordinate and
importance plots, with axes as the search space defines them.

    comparison = compare_at_rung(...)                          # tune.analysis: the budget, the trials
    study = score_study(comparison, frame, dists, order, categories_as_index=True)
    plot_params_vs_score(study, frame, dists, comparison, Path("params_vs_score.png"))

Every plot compares the trials at one budget they all reached (named in its title), each with only
the hyperparameters that acted in it. Axes: log ticks for log-scale dimensions, integer ticks for
integers, categories by name in the order the space lists them.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tune.analysis import Comparison
from tune.report.figures import BEST_COLOR, SCORE, empty_plot, optuna_plotting, pyplot, save
from tune.report.study import importance_setup, shared_params
from tune.results import best_row


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
    """An axis label on two lines, so that neighbours do not overlap: a dotted key after its first
    `.` (`phase1.` over `learning_rate`), another long name after its last `_`."""
    if "." in name:
        return name.replace(".", ".\n", 1)
    head, _, tail = name.rpartition("_")
    return f"{head}_\n{tail}" if head and len(name) > 12 else name


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


def plot_params_vs_score(study, frame: pd.DataFrame, distributions: dict[str, Any], comparison: Comparison,
                         path: Path) -> int:
    """One panel per hyperparameter: its value against each trial's objective at one budget (Optuna's
    slice plot).

    A panel holds the trials in which its hyperparameter was active (its title says how many when
    not all). Colour: the order the trials started in; x: stopped by ASHA; star: the best trial.

    Args:
        study: score_study(comparison, ..., categories_as_index=True), trials in start order.
        frame: the trial table.
        distributions: the search space's Optuna distributions.
        comparison: the budget compared at (named in the title).
        path: the PNG to write.

    Returns:
        The number of trials drawn.
    """
    from optuna.visualization.matplotlib import plot_slice

    names = sorted({name for t in study.trials for name in t.params})  # plot_slice's panel order
    if not names:
        return empty_plot(path, "no trial with a score yet")
    target = f"{SCORE} at {comparison.short}"
    with optuna_plotting():
        axes = np.atleast_1d(plot_slice(study, params=names, target_name=target))
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
            partial = len(trials) < len(study.trials)
            ax.set_title(f"active in {len(trials)} of {len(study.trials)}" if partial else "", fontsize=8)
            ax.set_xlabel(name, fontsize=9)
            ax.tick_params(axis="x", labelrotation=30, labelsize=8)
        _as_grid(fig, axes, dots, cols=min(3, len(axes)), ylabel=target)
        if handles:
            axes[0].legend(handles=list(handles.values()), fontsize=7, loc="lower left")
        fig.suptitle(f"hyperparameters against {SCORE} at {comparison.label}: "
                     f"{len(study.trials)} of {comparison.scored} trials")
        save(fig, path)
    return len(study.trials)


def _as_grid(fig, axes, mappable, cols: int, ylabel: str) -> None:
    """Optuna's slice panels (one row) as a grid of `cols` columns, y labels on the first column, one
    colour bar for all (integer ticks: trial numbers): readable on a narrow page."""
    rows = math.ceil(len(axes) / cols)
    for extra in [a for a in fig.axes if not any(a is b for b in axes)]:
        extra.remove()  # Optuna's colour bar, made for one row
    fig.set_size_inches(2.9 * cols + 1.3, 2.7 * rows + 0.7)
    fig.set_layout_engine("constrained")
    grid = fig.add_gridspec(rows, cols)
    for i, ax in enumerate(axes):
        ax.set_subplotspec(grid[i // cols, i % cols])
        ax.tick_params(axis="y", labelleft=i % cols == 0, labelsize=8)
        ax.set_ylabel(ylabel if i % cols == 0 else "", fontsize=9)
    from matplotlib.ticker import MaxNLocator

    bar = fig.colorbar(mappable, ax=list(axes), shrink=0.9)
    bar.locator = MaxNLocator(integer=True)
    bar.update_ticks()
    bar.set_label("trial, in start order (0: the first)", fontsize=9)


def plot_parallel_coordinates(study, frame: pd.DataFrame, distributions: dict[str, Any], comparison: Comparison,
                              path: Path) -> int:
    """One line per trial across the hyperparameters and its objective at one budget (Optuna's plot).

    Only the hyperparameters active in every trial are axes (Optuna drops a trial that lacks one);
    the title names the others. Lines are coloured by the objective; dashed: stopped by ASHA.
    Arguments and result as plot_params_vs_score.
    """
    from matplotlib.collections import LineCollection
    from optuna.visualization.matplotlib import plot_parallel_coordinate

    names, partial = shared_params(study)  # sorted: Optuna's axis order
    if not names:
        return empty_plot(path, "no trial with a score yet" if not study.trials else
                          "no hyperparameter is active in every trial compared")
    target = f"{SCORE} at {comparison.short}"
    with optuna_plotting(figsize=(max(8.0, 1.6 * (len(names) + 1)), 5.0)):
        ax = plot_parallel_coordinate(study, params=names, target_name=target)
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
        ax.set_xticks(range(len(names) + 1), [f"{SCORE.replace(' ', chr(10))}\nat {comparison.short}", *map(_wrap, names)], rotation=0,
                      fontsize=8, ha="center")  # Optuna's labels are cut at 20 characters
        title = f"parallel coordinates of {len(study.trials)} trials at {comparison.label}"
        if partial:
            title += "\nnot shown, active in some trials only: " + ", ".join(partial)
        ax.set_title(title, y=1.08, fontsize=10)
        save(fig, path)
    return len(study.trials)


def _best_trial(frame: pd.DataFrame, study):
    """The study's trial of the best row (tune.results.best_row: the one ranking of "best"), or None."""
    best = best_row(frame)
    return next((t for t in study.trials if best and t.user_attrs["ray_trial_id"] == best["trial_id"]), None)


def _visible_blues():
    """Optuna's colour map (Blues) without its near-white low end."""
    from matplotlib.colors import LinearSegmentedColormap

    return LinearSegmentedColormap.from_list("blues", pyplot().get_cmap("Blues")(np.linspace(0.3, 1.0, 256)))


def plot_importance(study, importance: dict[str, float], method: str, comparison: Comparison | None,
                    path: Path) -> None:
    """Optuna's importance bar chart, or the reason it was not computed.

    Args:
        study: the study param_importance ranked.
        importance: param_importance's result ({} when it could not run).
        method: the evaluator's name, or why there is no importance.
        comparison: the budget the trials were compared at (named in the title).
        path: the PNG to write.
    """
    from optuna.visualization.matplotlib import plot_param_importances

    if importance:
        evaluator, _, varying = importance_setup(study)
        try:
            with optuna_plotting(figsize=(7.0, 0.45 * max(3, len(importance)) + 1.4)):
                target = f"{SCORE} at {comparison.short}" if comparison else SCORE
                ax = plot_param_importances(study, evaluator=evaluator, params=varying, target_name=target)
                where = f" at {comparison.label}" if comparison else ""
                ax.set_title(f"importance for {SCORE}{where}\n({method}, {len(study.trials)} trials, the "
                             f"{len(varying)} hyperparameters active in all)", loc="left", fontsize=10)
                ax.set_xlabel("importance (sums to 1)")
                if ax.get_legend() is not None:  # one series: its legend says nothing
                    ax.get_legend().remove()
                save(ax.figure, path)
            return
        except (ValueError, RuntimeError, ZeroDivisionError) as err:
            method = f"{method} plot failed: {str(err).splitlines()[0][:160]}"
    empty_plot(path, f"importance not computed:\n{method}")
