"""Do the rungs predict? The rank correlation between the objective at each ASHA rung and at the end.

    table = rung_correlations(curves, finished, rungs=[1, 3, 9], budget="compute")
    gic-tune rungs results/demo --budget epoch --grace 2 --rf 3     # any scheme, on any experiment

ASHA stops a trial at a rung when its objective there is in the bottom 1 - 1/rf of the trials
recorded at that rung. That only pays when the rung's ranking predicts the final ranking. For every
rung this gives Spearman's rank correlation between the objective (best val accuracy so far) where
each trial reached the rung and its final objective, over the trials that ran to the end. Measured
on a search run without early stopping (`--set search.early_stopping=false`), it compares rung
schemes on the same trials (README, "A search that learns").
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from tune.config import TIME_ATTR

WARN_BELOW = 0.5  # a first rung whose Spearman rho is below this hardly predicts the final score


def milestones(grace: float, reduction_factor: float, max_t: float) -> list[float]:
    """Ray's ASHA milestones, as its `_Bracket` places them: grace * rf^k for
    k < int(log(max_t / grace) / log(rf) + 1), so max_t itself is one when it is grace * rf^k."""
    if grace <= 0 or max_t < grace:
        return []
    count = int(math.log(max_t / grace) / math.log(reduction_factor) + 1 + 1e-9)
    return [round(grace * reduction_factor ** k, 6) for k in range(count)]


def at_rung(curve: pd.DataFrame, milestone: float, budget: str) -> float | None:
    """The objective (best val accuracy so far) when the trial's budget first reached `milestone`,
    or None when it never did."""
    column = TIME_ATTR[budget]
    if column not in curve or "val_accuracy" not in curve:
        return None
    used = pd.to_numeric(curve[column], errors="coerce").to_numpy()
    reached = [i for i, u in enumerate(used) if u >= milestone - 1e-9]
    if not reached:
        return None
    best = pd.to_numeric(curve["val_accuracy"], errors="coerce").iloc[: reached[0] + 1].max()
    return None if pd.isna(best) else float(best)


def spearman(x: list[float], y: list[float]) -> float:
    """Spearman's rank correlation (average ranks for ties); NaN with fewer than 3 pairs or no spread."""
    if len(x) < 3:
        return float("nan")
    rx, ry = pd.Series(x).rank(), pd.Series(y).rank()
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(rx.corr(ry))


def rung_correlations(curves: dict[str, pd.DataFrame], final: dict[str, float], rungs: list[float],
                      budget: str) -> pd.DataFrame:
    """One row per rung: its milestone, the trials that reached it, the finished ones among them and
    Spearman's rho between their objective at the rung and their final objective.

    Args:
        curves: per trial, its per-epoch results (tune.trials.trial_curves): `val_accuracy` and the
            budget's column (`compute` or `training_iteration`).
        final: trial id -> final best val accuracy, for the trials that ran all their epochs.
        rungs: the milestones, in `budget` units.
        budget: "compute" or "epoch".
    """
    rows = []
    for milestone in rungs:
        scores = {tid: s for tid, curve in curves.items() if (s := at_rung(curve, milestone, budget)) is not None}
        both = [tid for tid in scores if tid in final]
        rho = spearman([scores[t] for t in both], [final[t] for t in both])
        rows.append({"budget": budget, "rung": milestone, "reached": len(scores), "finished": len(both),
                     "spearman": None if math.isnan(rho) else round(rho, 3)})
    return pd.DataFrame(rows, columns=["budget", "rung", "reached", "finished", "spearman"])


def finished_scores(frame: pd.DataFrame) -> dict[str, float]:
    """trial id -> best val accuracy of the trials that ran all their planned epochs."""
    done = frame[frame["status"] == "finished"].dropna(subset=["best_val_accuracy"])
    return dict(zip(done["trial_id"], done["best_val_accuracy"].astype(float)))


def scheme_table(experiment: str, schemes: list[tuple[str, float, float]]) -> pd.DataFrame:
    """Rung correlations of several rung schemes (budget, grace, rf) on one experiment's trials."""
    from tune.trials import max_t, search_config, trial_curves, trial_table

    frame, curves, cfg = trial_table(experiment), trial_curves(experiment), search_config(experiment)
    final = finished_scores(frame)
    tables = []
    for budget, grace, rf in schemes:
        doc: dict[str, Any] = {**cfg, "search": {**(cfg.get("search") or {}), "budget": budget}}
        table = rung_correlations(curves, final, milestones(grace, rf, max_t(doc)), budget)
        table.insert(1, "scheme", f"{budget} grace {grace:g} rf {rf:g}")
        tables.append(table)
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
