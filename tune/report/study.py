"""The trials as Optuna studies: one in memory for importance and plots, one in SQLite for the dashboard.

    study = score_study(comparison, frame, distributions)      # the trials at one budget
    importance, method = param_importance(study)               # fANOVA, or PED-ANOVA without sklearn
    export_study(folder, trials, "demo")                       # <experiment>/optuna_study.db

The in-memory study holds each compared trial once, COMPLETE, valued by its objective at the
comparison's budget and with only its active params, so that Optuna's importance evaluators and
plots compare like with like. The SQLite study is the search's own (PRUNED stops, per-epoch values).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import pandas as pd

from tune.analysis import Comparison
from tune.experiment import STUDY_DB


def score_study(comparison: Comparison, frame: pd.DataFrame, distributions: dict[str, Any],
                order: list[str] | None = None, categories_as_index: bool = False):
    """An in-memory Optuna study of the trials compared at one budget, each COMPLETE with its
    objective there (tune.analysis.compare_at_rung) and only its active params.

    Trials whose params do not fit `distributions` are left out.

    Args:
        comparison: the trials, their scores at one budget and their active params.
        frame: the trial table (each trial's status).
        distributions: {param key: Optuna distribution} of the search space.
        order: trial ids in the order to add them (Optuna numbers trials in that order).
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
    status = dict(zip(frame["trial_id"], frame["status"]))
    study = optuna.create_study(direction="maximize")
    for trial_id in [t for t in order or sorted(comparison.scores) if t in comparison.scores]:
        params = {k: v for k, v in comparison.params.get(trial_id, {}).items() if k in dists}
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
                state=optuna.trial.TrialState.COMPLETE, value=float(comparison.scores[trial_id]), params=params,
                distributions={k: dists[k] for k in params},
                user_attrs={"ray_trial_id": trial_id, "status": status.get(trial_id, "-")}))
        except ValueError:  # a value outside the space (create_trial checks each)
            continue
    return study


def shared_params(study) -> tuple[list[str], dict[str, int]]:
    """The params every trial of the study has, and how many trials have each of the others.

    A dimension of the conditional space is active in some trials only (tune.space.active); a
    comparison over it would compare trials where it acted with trials where it did not.

    Args:
        study: score_study's study.

    Returns:
        (sorted names active in every trial, {name: trials it is active in} for the rest).
    """
    counts: dict[str, int] = {}
    for trial in study.trials:
        for name in trial.params:
            counts[name] = counts.get(name, 0) + 1
    every = sorted(n for n, c in counts.items() if c == len(study.trials))
    return every, {n: c for n, c in sorted(counts.items()) if c < len(study.trials)}


def _choice(choices: tuple[Any, ...], value: Any) -> Any:
    """The space's choice equal to a value read from disk (a numpy or JSON-typed copy of it)."""
    for choice in choices:
        if choice == value or str(choice) == str(value):
            return choice
    raise ValueError(f"{value!r} is not one of {choices}")


def importance_setup(study):
    """(evaluator, its name, the params it can rank) for a study of scored trials: those active in
    every trial (shared_params) that can take more than one value."""
    import optuna

    every, _ = shared_params(study)
    single = {n for t in study.trials for n, d in t.distributions.items()
              if isinstance(d, optuna.distributions.CategoricalDistribution) and len(d.choices) < 2}
    varying = [n for n in every if n not in single]
    try:
        import sklearn  # noqa: F401

        return optuna.importance.FanovaImportanceEvaluator(seed=0), "fANOVA", varying
    except ImportError:
        # With few trials, a top quantile of 0.1 holds no trial: compare the best third instead.
        evaluator = optuna.importance.PedAnovaImportanceEvaluator(target_quantile=max(0.1, 1 / 3), evaluate_on_local=True)
        return evaluator, "PED-ANOVA", varying


def param_importance(study) -> tuple[dict[str, float], str]:
    """Importance of each hyperparameter for the objective at one budget, by Optuna's evaluators.

    Only the params active in every trial of the study are ranked (shared_params). fANOVA needs
    scikit-learn; without it, PED-ANOVA (no extra dependency) is used.

    Args:
        study: score_study's study (the trials compared at one budget).

    Returns:
        ({param: importance} summing to 1, the evaluator's name); ({}, reason) when it cannot run.
    """
    import optuna

    evaluator, name, varying = importance_setup(study)
    if len(study.trials) < 4 or not varying:
        return {}, f"needs at least 4 scored trials and a varying hyperparameter (has {len(study.trials)})"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            values = optuna.importance.get_param_importances(study, evaluator=evaluator, params=varying)
    except (ValueError, RuntimeError, ZeroDivisionError) as err:
        return {}, f"{name} failed: {str(err).splitlines()[0][:160]}"
    values = {k: float(v) if math.isfinite(float(v)) else 0.0 for k, v in values.items()}
    if len(values) > 1 and max(values.values()) - min(values.values()) < 1e-9:
        # PED-ANOVA gives every param the same share when its top quantile holds all the trials.
        return {}, f"{name} could not tell the hyperparameters apart with {len(study.trials)} trials"
    return values, name


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
