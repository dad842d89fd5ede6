"""The searcher and the scheduler: Optuna TPE behind Ray's OptunaSearch, and ASHA.

    searcher, limited = build_searcher(spec)   # PruningAwareOptunaSearch, and it behind a ConcurrencyLimiter
    scheduler = build_scheduler(spec)          # ReplayASHA

Two gaps in Ray Tune are closed here, with Ray's private attributes (`OptunaSearch._ot_trials`, `AsyncHyperBandScheduler._brackets`, `._trial_info`,
`._time_attr`, `._metric`, `._metric_op`, `_Bracket._rungs`);
tests/test_tune_resume.py pins them to the installed Ray version:
- Ray tells Optuna that an ASHA-stopped trial is COMPLETE with its last, low-epoch score, which
  misleads TPE. `PruningAwareOptunaSearch` tells Optuna such a trial is PRUNED, with its per-epoch
  values as intermediate values.
- Ray does not checkpoint scheduler state, so a resumed search would start with empty ASHA rungs
  and let through trials it would have stopped. `ReplayASHA` rebuilds the rungs from the per-epoch
  results Ray recorded for each trial (its result.json, read through tune.experiment), up to the
  result Ray's experiment state restored.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Callable

from ray.tune.schedulers import AsyncHyperBandScheduler, TrialScheduler
from ray.tune.search.optuna import OptunaSearch

from tune.config import METRIC, MODE, SearchSpec
from tune.trainable import PLANNED_KEY


def stopped_early(result: dict[str, Any] | None) -> bool:
    """True when a trial's last result ends before its planned epochs: ASHA stopped it.

    A trial ends early only when the scheduler stops it (errors are reported apart), and the
    trial states its own plan (E1 when it does not fine-tune), so a short plan is not mistaken
    for a stop.
    """
    if not result:
        return False
    epochs, planned = result.get("training_iteration"), result.get(PLANNED_KEY)
    return bool(epochs and planned and int(epochs) < int(planned))


class PruningAwareOptunaSearch(OptunaSearch):
    """OptunaSearch that records ASHA-stopped trials as PRUNED, with their intermediate values."""

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if error or trial_id in self._completed_trials or not stopped_early(result):
            if not error and result and trial_id in self._ot_trials and trial_id not in self._completed_trials:
                self._report_last(trial_id, result)  # ASHA's STOP at max_t kept it from on_trial_result
            return super().on_trial_complete(trial_id, result=result, error=error)
        ot_trial = self._ot_trials[trial_id]
        # The result that made ASHA stop the trial never reached on_trial_result: report it here.
        self._report_last(trial_id, result)
        # PRUNED takes the last intermediate value as the trial's value (optuna.study._tell).
        self._ot_study.tell(ot_trial, state=optuna_module().trial.TrialState.PRUNED)
        self._completed_trials.add(trial_id)

    def _report_last(self, trial_id: str, result: dict) -> None:
        step, value = result.get("training_iteration"), result.get(self.metric)
        if step is None or value is None:
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a step reported before a resume is kept as it was
            self._ot_trials[trial_id].report(float(value), int(step))

    def suggest(self, trial_id: str):
        params = super().suggest(trial_id)
        if trial_id in self._ot_trials:  # the live study names Ray's trial (optuna-dashboard, the report)
            self._ot_trials[trial_id].set_user_attr("ray_trial_id", trial_id)
        return params

    def restore(self, checkpoint_path: str) -> None:
        """Ray's restore (the searcher as last saved), then: a trial the study holds as RUNNING that the
        saved searcher does not know was started by a driver that died before saving it; Ray runs
        a new trial in its place, so it is told FAIL (in a persistent study it would stay RUNNING)."""
        super().restore(checkpoint_path)
        known = {t.number for t in self._ot_trials.values()}
        states = optuna_module().trial.TrialState
        for frozen in self._ot_study.get_trials(deepcopy=False, states=(states.RUNNING,)):
            if frozen.number not in known:
                self._ot_study.tell(frozen.number, state=states.FAIL)

    @property
    def study(self):
        return self._ot_study

    def trial_rows(self) -> list[dict[str, Any]]:
        """One row per Ray trial the study knows: its Optuna number, state, value, intermediate values
        and params (what optuna_trials.csv holds)."""
        import json

        if getattr(self, "_ot_study", None) is None:
            return []
        by_number = {t.number: t for t in self._ot_study.get_trials(deepcopy=False)}
        rows = []
        for trial_id, ot_trial in self._ot_trials.items():
            frozen = by_number.get(ot_trial.number)
            if frozen is not None:
                rows.append({"trial_id": trial_id, "number": frozen.number, "state": frozen.state.name,
                             "value": frozen.value, "intermediate_values": json.dumps(frozen.intermediate_values),
                             **{f"param.{k}": v for k, v in frozen.params.items()}})
        return rows


def optuna_module():
    """The optuna module, imported on first use (it is slow to import and only the driver needs it)."""
    import optuna

    return optuna


class ReplayASHA(AsyncHyperBandScheduler):
    """ASHA that rebuilds its rungs on resume and remembers which trials it stopped early.

    Ray adds every restored trial through `on_trial_add`, with its last result restored from the
    experiment state. The trial's results up to that one, as Ray recorded them (each epoch's first,
    the one ASHA saw then; a retry's repeats are left out), are replayed into the trial's bracket:
    each result's time (`time_attr`: the epoch, or the compute used) and objective, as in the search.

    Args:
        results_of: a trial's recorded results in order (default: tune.experiment.trial_results,
            its result.json in the experiment's storage).
        **kwargs: AsyncHyperBandScheduler's (time_attr, metric, mode, max_t, grace_period, ...).
    """

    def __init__(self, results_of: Callable[[Any], list[dict[str, Any]]] | None = None, **kwargs):
        super().__init__(**kwargs)
        self.results_of = results_of
        self.early_stops: dict[str, int] = {}  # trial id -> epoch at which this scheduler stopped it
        self.replayed: dict[str, int] = {}  # trial id -> epochs replayed into the rungs

    def on_trial_add(self, tune_controller, trial) -> None:
        super().on_trial_add(tune_controller, trial)
        upto = (trial.last_result or {}).get("training_iteration")
        if not upto:  # a new trial: nothing recorded
            return
        if self.results_of is not None:
            results = self.results_of(trial)
        else:
            from tune.experiment import trial_results

            results = trial_results(trial.storage)
        bracket = self._trial_info[trial.trial_id]
        seen: set[int] = set()
        for result in results:
            step = result.get("training_iteration")
            if step is None or int(step) in seen or int(step) > int(upto):
                continue
            seen.add(int(step))
            time_used, value = result.get(self._time_attr), result.get(self._metric)
            if time_used is None or value is None or not math.isfinite(float(value)):
                continue
            bracket.on_result(trial, float(time_used), self._metric_op * float(value))  # records; decision unused
        self.replayed[trial.trial_id] = len(seen)

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        decision = super().on_trial_result(tune_controller, trial, result)
        if decision == TrialScheduler.STOP and stopped_early(result):
            self.early_stops[trial.trial_id] = int(result["training_iteration"])
        return decision

    def rungs(self) -> list[tuple[float, dict[str, float]]]:
        """(milestone, {trial id: recorded value}) from the lowest milestone up."""
        return [(m, dict(rec)) for m, rec in reversed(self._brackets[0]._rungs)]


def build_searcher(spec: SearchSpec, storage_url: str | None = None):
    """Optuna TPE (seeded, multivariate, constant liar) on the conditional space, behind a concurrency
    limit; the study lives in `storage_url` (an Optuna RDB URL, e.g. the experiment's SQLite file, so
    optuna-dashboard follows it live), else in memory."""
    from ray.tune.search import ConcurrencyLimiter

    optuna = optuna_module()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # TPE's `group` (the conditional space) is marked experimental: a user can do nothing about it
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning, module="optuna")
    s = spec.search
    storage = optuna.storages.RDBStorage(storage_url) if storage_url else None
    sampler = optuna.samplers.TPESampler(seed=s.seed, multivariate=True, group=True, constant_liar=True,
                                         n_startup_trials=s.n_startup_trials)
    searcher = PruningAwareOptunaSearch(space=spec.space.define_by_run(spec.trainer), metric=METRIC, mode=MODE,
                                        sampler=sampler, study_name=s.name, storage=storage)
    return searcher, ConcurrencyLimiter(searcher, max_concurrent=s.max_concurrent)


def build_scheduler(spec: SearchSpec):
    """ASHA on `search.budget` (compute used, or the global epoch) up to max_t, on the objective;
    Ray's FIFO scheduler (no early stopping) with `search.early_stopping: false`."""
    s = spec.search
    if not s.early_stopping:
        from ray.tune.schedulers import FIFOScheduler

        return FIFOScheduler()
    # ASHA stops a trial whose time reaches max_t: the longest trial must end there, not before.
    return ReplayASHA(time_attr=spec.time_attr, metric=METRIC, mode=MODE,
                      max_t=spec.max_t + 1e-6, grace_period=s.grace_period, reduction_factor=s.reduction_factor)
