"""Do the rungs predict? The rank correlation between the objective at each ASHA rung and at the end;
and which budget to compare trials at.

    table = rung_correlations(curves, finished, rungs=[1, 3, 9], budget="compute")
    gic-tune rungs results/demo --budget epoch --grace 2 --rf 3     # any scheme, on any experiment
    comparison = compare_at_rung(frame, curves, rungs, "epoch", 12, active_params(frame, cfg))

ASHA stops a trial at a rung when its objective there is in the bottom 1 - 1/rf of the trials
recorded at that rung. That only pays when the rung's ranking predicts the final ranking. For every
rung this gives Spearman's rank correlation between the objective (best val accuracy so far) where
each trial reached the rung and its final objective, over the trials that ran to the end. Measured
on a search run without early stopping (`--set search.early_stopping=false`), it compares rung
schemes on the same trials (README, "A search that learns").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from tune.config import TIME_ATTR

WARN_BELOW = 0.5  # a rung whose Spearman rho is below this hardly predicts the final score
# Trials compared at one budget: the latest budget point that at least this share of the scored
# trials reached, and at least MIN_COMPARED of them (or all when fewer have a score).
COMPARE_SHARE, MIN_COMPARED = 0.5, 4


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


@dataclass(frozen=True)
class Replay:
    """What an ASHA scheme would have done to a search's trials (`replay_asha`)."""
    scheme: str
    trials: int
    stopped: int
    epoch_time_share: float  # epoch seconds the scheme would have spent / what the trials spent (0..1)
    best_found: float  # the highest best val accuracy any trial reached before its stop or end
    best_kept: bool  # the trial with the highest final score was not stopped
    kept_ranks: list[int]  # final ranks (1 = best) of the trials it let run to the end


def replay_asha(curves: dict[str, pd.DataFrame], rungs: list[float], budget: str, reduction_factor: float,
                scheme: str = "") -> Replay | None:
    """Replay asynchronous ASHA over trials that ran every epoch (a search with early stopping off).

    Trials reach each rung in the order their results arrived (Ray's `timestamp`, whole seconds; in
    one second, the trial that started first goes first: the replay of trials that ran side by side
    at the first rungs is one of the orders ASHA could have seen, not the only one); at a rung a
    trial stops when its objective there (best val accuracy so far) is below the (1 - 1/rf)
    quantile of the objectives recorded at that rung before it, which is Ray's ASHA rule, and the
    first trial at a rung always goes on. Costs are the trials' measured `epoch_time_s` (seconds).
    None when the curves lack those columns.
    """
    import numpy as np

    column = TIME_ATTR[budget]
    need = {column, "val_accuracy", "epoch_time_s", "epoch"}
    curves = {t: c for t, c in curves.items() if need <= set(c.columns)}
    if not curves:
        return None
    final = {t: float(pd.to_numeric(c["val_accuracy"]).max()) for t, c in curves.items()}
    ranked = sorted(final, key=final.get, reverse=True)
    arrivals = []
    for tid, curve in curves.items():
        used = pd.to_numeric(curve[column], errors="coerce").to_numpy()
        when = pd.to_numeric(curve.get("timestamp", pd.Series(range(len(curve)))), errors="coerce").to_numpy()
        for milestone in rungs:
            hits = [i for i, u in enumerate(used) if u >= milestone - 1e-9]
            if hits:
                i = hits[0]
                score = float(pd.to_numeric(curve["val_accuracy"]).iloc[: i + 1].max())
                arrivals.append(((when[i], when[0], tid), tid, milestone, score, i))
    # Ray's timestamps are whole seconds: arrivals in the same second go in the order the trials started.
    arrivals.sort(key=lambda a: a[0])
    recorded: dict[float, list[float]] = {m: [] for m in rungs}
    stopped_at: dict[str, int] = {}
    for _, tid, milestone, score, i in arrivals:
        if tid in stopped_at:
            continue
        seen = recorded[milestone]
        if seen and score < float(np.nanpercentile(seen, (1 - 1 / reduction_factor) * 100)):
            stopped_at[tid] = i
        seen.append(score)
    spent = total = 0.0
    best = 0.0
    for tid, curve in curves.items():
        times = pd.to_numeric(curve["epoch_time_s"], errors="coerce").fillna(0).to_numpy()
        last = stopped_at.get(tid, len(curve) - 1)
        spent, total = spent + float(times[: last + 1].sum()), total + float(times.sum())
        best = max(best, float(pd.to_numeric(curve["val_accuracy"]).iloc[: last + 1].max()))
    kept = sorted(ranked.index(t) + 1 for t in curves if t not in stopped_at)
    return Replay(scheme=scheme, trials=len(curves), stopped=len(stopped_at),
                  epoch_time_share=spent / total if total else float("nan"), best_found=best,
                  best_kept=ranked[0] not in stopped_at, kept_ranks=kept)


def scheme_replays(experiment: str, schemes: list[tuple[str, float, float]]) -> list[Replay]:
    """`replay_asha` of each scheme (budget, grace, rf) on an experiment whose trials all ran to the
    end; [] when some trial did not (an early-stopped search cannot be replayed)."""
    from tune.trials import max_t, search_config, trial_curves, trial_table

    frame, curves, cfg = trial_table(experiment), trial_curves(experiment), search_config(experiment)
    if frame.empty or not (frame["status"] == "finished").all():
        return []
    out = []
    for budget, grace, rf in schemes:
        doc: dict[str, Any] = {**cfg, "search": {**(cfg.get("search") or {}), "budget": budget}}
        replay = replay_asha(curves, milestones(grace, rf, max_t(doc)), budget, rf, f"{budget} grace {grace:g} rf {rf:g}")
        if replay is not None:
            out.append(replay)
    return out


@dataclass(frozen=True)
class Comparison:
    """Trials compared at one budget: a point every one of them reached, and each one's objective there.

    A stopped trial's best score came after fewer epochs than a finished one's; comparing both at a
    budget they all reached is what ASHA itself does at a rung, and what the report's importance
    and score-vs-parameter plots do.

    Attributes:
        budget: the units of `at`: "epoch" (the global epoch) or "compute" (gic.cost units).
        at: the budget point, in `budget` units.
        label: the point in words, for titles: "epoch 2 (ASHA rung 2)", "epoch 3 (the end)".
        scores: trial id -> its objective (best val accuracy so far) when its budget reached `at`.
        params: trial id -> its active params ({dotted key: value}, see active_params), for the
            trials in `scores`.
        scored: how many trials had any score (the most that could have been compared).
        finished: how many compared trials ran to the end.
        spearman: Spearman's rho between the scores at `at` and the final ones, over the compared
            trials that ran to the end; None at the end itself or when it cannot be computed.
        at_end: `at` is the end (E1 + E2 epochs): the scores are final.
    """

    budget: str
    at: float
    label: str
    scores: dict[str, float] = field(default_factory=dict)
    params: dict[str, dict[str, Any]] = field(default_factory=dict)
    scored: int = 0
    finished: int = 0
    spearman: float | None = None
    at_end: bool = False

    @property
    def short(self) -> str:
        """The point without its gloss: "epoch 2", "compute 1.5"."""
        return f"{self.budget} {self.at:g}"


def budget_points(rungs: list[float], budget: str, epochs: int) -> list[tuple[str, float, str]]:
    """The points trials can be compared at, earliest first: ASHA's rungs, then the end.

    Args:
        rungs: ASHA's milestones, in `budget` units.
        budget: "epoch" or "compute".
        epochs: E1 + E2 of the search (0 when unknown: no end point).

    Returns:
        [(budget, milestone, label)]; the end is the epoch `epochs` (a trial that ran all its epochs),
        merged with the last rung when that rung is the end.
    """
    points = [(budget, float(r), f"{budget} {r:g} (ASHA rung {i + 1})") for i, r in enumerate(rungs)]
    if epochs > 0:
        if budget == "epoch" and points and math.isclose(points[-1][1], epochs):
            points[-1] = ("epoch", float(epochs), f"epoch {epochs} (the end; ASHA rung {len(points)})")
        else:
            points.append(("epoch", float(epochs), f"epoch {epochs} (the end)"))
    return points


def compare_at_rung(frame: pd.DataFrame, curves: dict[str, pd.DataFrame], rungs: list[float], budget: str,
                    epochs: int, params: dict[str, dict[str, Any]]) -> Comparison | None:
    """The latest budget point that enough trials reached, with every such trial's objective there.

    Enough: at least COMPARE_SHARE of the trials with a score and at least MIN_COMPARED of them (all
    of them when fewer have a score). When no point has enough, the one the most trials reached
    (the latest of equals). A later point ranks more like the final score (see rung_correlations);
    an earlier one compares more trials.

    Args:
        frame: the trial table (tune.trials.trial_table).
        curves: per trial, its per-epoch results (tune.trials.trial_curves).
        rungs: ASHA's milestones, in `budget` units (tune.trials.asha_rungs).
        budget: "epoch" or "compute" (tune.trials.rung_budget).
        epochs: E1 + E2 (tune.trials.phase_epochs).
        params: trial id -> its active params (active_params).

    Returns:
        The Comparison; None when no trial has a score.
    """
    scored = [t for t, s in zip(frame["trial_id"], frame["best_val_accuracy"]) if pd.notna(s) and t in curves]
    if not scored:
        return None
    need = min(len(scored), max(MIN_COMPARED, math.ceil(COMPARE_SHARE * len(scored))))
    reached = []
    for unit, milestone, label in budget_points(rungs, budget, epochs):
        scores = {t: s for t in scored if (s := at_rung(curves[t], milestone, unit)) is not None}
        reached.append((unit, milestone, label, scores))
    enough = [r for r in reached if len(r[3]) >= need]
    if not enough:
        enough = [r for r in reached if len(r[3]) == max(len(x[3]) for x in reached)]
    unit, milestone, label, scores = enough[-1]
    if not scores:
        return None
    final = {t: s for t, s in finished_scores(frame).items() if t in scores}
    is_end = unit == "epoch" and math.isclose(milestone, epochs)
    rho = float("nan") if is_end else spearman([scores[t] for t in final], list(final.values()))
    return Comparison(budget=unit, at=milestone, label=label, scores=scores,
                      params={t: params.get(t, {}) for t in scores}, scored=len(scored), finished=len(final),
                      spearman=None if math.isnan(rho) else round(rho, 3), at_end=is_end)


def active_params(frame: pd.DataFrame, cfg: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """trial id -> the params that had an effect on the trial (tune.space.active).

    The search samples only active dimensions, so its trials hold no others; a trial table written
    before the space was conditional holds every dimension, and the inactive ones are dropped here.

    Args:
        frame: the trial table.
        cfg: the experiment's search_config.yaml: its trainer gives the values a trial's params
            leave as they are (augmentation, unfrozen layers, phase-2 epochs).

    Returns:
        {trial id: {dotted key: value}}.
    """
    from gic.config import TrainConfig
    from tune.results import params_of
    from tune.space import SearchSpace, active

    try:
        trainer = TrainConfig.model_validate(cfg.get("trainer") or {})
    except ValueError:  # a hand-edited or older file: the trainer's defaults
        trainer = TrainConfig()
    given = SearchSpace(dimensions={}, fixed={}).define_by_run(trainer)  # the values a trial starts from
    base = {"augmentation": given.augmentation, "unfreeze_layers": given.unfreeze_layers,
            "phase2_epochs": given.phase2_epochs}
    out = {}
    for row in frame.to_dict("records"):
        params = params_of(row)
        out[row["trial_id"]] = {k: v for k, v in params.items() if active(k, params, **base)}
    return out
