"""How every trial learned: val accuracy and loss per epoch over both phases, the best trial singled out.

    plot_learning_curves(frame, curves, rungs=[2, 6], e1=4, path=Path("learning_curves.png"))

ASHA's rungs are marked (lines at epoch rungs; on a compute budget, a diamond where each trial
reached a rung), the start of phase 2 is a dashed line, and a trial stopped or errored ends in an x.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from tune.report.figures import BEST_COLOR, OTHERS_COLOR, STATUS_STYLE, pyplot, save
from tune.results import best_row


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
    plt = pyplot()
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
    save(fig, path)
    return drawn


def start_order(frame: pd.DataFrame, curves: dict[str, pd.DataFrame]) -> list[str]:
    """Trial ids in the order the trials started (first report's time less its run time), as far as
    the files tell; Ray's ids are random, so their order says nothing."""
    def started(trial_id: str) -> float:
        curve = curves.get(trial_id)
        if curve is None or "timestamp" not in curve or curve.empty:
            return math.inf
        first = curve.iloc[0]
        return float(first["timestamp"]) - float(first.get("time_total_s", 0) or 0)

    return sorted(frame["trial_id"], key=lambda t: (started(t), t))
