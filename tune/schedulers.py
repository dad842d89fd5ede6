"""The searcher and the scheduler: Optuna TPE behind Ray's OptunaSearch, and ASHA.

    searcher, limited = build_searcher(spec)   # PruningAwareOptunaSearch, and it behind a ConcurrencyLimiter
    scheduler = build_scheduler(spec)          # ReplayASHA

Two gaps in Ray Tune are closed here, the only two places of the project that touch Ray's private
attributes (`OptunaSearch._ot_trials`, `AsyncHyperBandScheduler._brackets`, `_Bracket._rungs`);
tests/test_tune_resume.py pins them to the installed Ray version:
- Ray tells Optuna that an ASHA-stopped trial is COMPLETE with its last, low-epoch score, which
  misleads TPE. `PruningAwareOptunaSearch` tells Optuna such a trial is PRUNED, with its per-epoch
  values as intermediate values.
- Ray does not checkpoint scheduler state, so a resumed search would start with empty ASHA rungs
  and let through trials it would have stopped. `ReplayASHA` rebuilds the rungs from the per-epoch
  history that every trial carries in its last result (saved in Ray's experiment state).
"""

from __future__ import annotations

import warnings
from typing import Any

from ray.tune.schedulers import AsyncHyperBandScheduler, TrialScheduler
from ray.tune.search.optuna import OptunaSearch

from tune.config import METRIC, MODE, SearchSpec
from tune.trainable import HISTORY_KEY, PLANNED_KEY


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
    import optuna

    return optuna


class ReplayASHA(AsyncHyperBandScheduler):
    """ASHA that rebuilds its rungs on resume and remembers which trials it stopped early.

    Ray adds every restored trial through `on_trial_add`, with its last result restored from the
    experiment state. That result carries the trial's per-epoch val_accuracy, which is replayed
    into the trial's bracket, epoch by epoch, as the objective (the best so far) at the time ASHA
    saw then: the epoch, or the compute used (gic.cost, from the trial's own config).
    """

    def __init__(self, base: dict[str, Any] | None = None, **kwargs):
        super().__init__(**kwargs)
        self.base = base  # the search's trainer config: a trial's compute per epoch follows from it
        self.early_stops: dict[str, int] = {}  # trial id -> epoch at which this scheduler stopped it
        self.replayed: dict[str, int] = {}  # trial id -> epochs replayed into the rungs

    def _times(self, trial, epochs: int) -> list[float]:
        if self._time_attr == "training_iteration":
            return [float(e) for e in range(1, epochs + 1)]
        from gic.config import TrainConfig
        from gic.cost import trial_costs

        from tune.space import apply_params

        return trial_costs(apply_params(TrainConfig.model_validate(self.base or {}), dict(trial.config)))[:epochs]

    def on_trial_add(self, tune_controller, trial) -> None:
        super().on_trial_add(tune_controller, trial)
        history = (trial.last_result or {}).get(HISTORY_KEY) or []
        if not history:
            return
        bracket = self._trial_info[trial.trial_id]
        best = None
        for time_used, value in zip(self._times(trial, len(history)), history):
            if value is not None:
                best = value if best is None else max(best, value)
            if best is not None:
                bracket.on_result(trial, time_used, self._metric_op * float(best))  # records; decision unused
        self.replayed[trial.trial_id] = len(history)

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
    return ReplayASHA(base=spec.trainer.to_dict(), time_attr=spec.time_attr, metric=METRIC, mode=MODE,
                      max_t=spec.max_t + 1e-6, grace_period=s.grace_period, reduction_factor=s.reduction_factor)
