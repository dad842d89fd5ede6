"""Ray Tune callbacks of a search: progress lines for the user, the trial table kept current, and
TensorBoard event files that hold the training metrics only.

    callbacks = [ProgressPrinter(num_samples, echo), TrialsTableWriter(spec.trainer.to_dict()),
                 *MetricsTBXLogger.if_installed()]
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable

from ray.tune import Callback
from ray.tune.logger import TBXLoggerCallback

from tune.config import METRIC
from tune.experiment import put_text
from tune.schedulers import stopped_early

log = logging.getLogger(__name__)

# What a trial's TensorBoard file shows, per epoch: what the trainer measured (gic.train), the
# objective, and the phase. A result's other keys are bookkeeping (worker pid, memory, node, planned
# epochs, compute used, Ray's own should_checkpoint, done, ...) and stay in result.json.
TENSORBOARD_METRICS = ("loss", "accuracy", "val_loss", "val_accuracy", METRIC, "phase", "epoch_time_s")


def _fmt_params(params: dict[str, Any]) -> str:
    """`key=value` per searched param, by its key in the space (the trial table's names too)."""
    return " ".join(f"{key}={value:.3g}" if isinstance(value, float) else f"{key}={value}"
                    for key, value in sorted(params.items()))


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


class ProgressPrinter(Callback):
    """Concise progress lines: trial starts and ends, retries, counts and the best so far; and every
    `every_s` seconds a status block (each running trial's epoch, phase and latest score, counts by
    state, the best so far, elapsed time and an estimate of what is left), so a long search is never
    silent."""

    def __init__(self, total: int, echo: Callable[[str], None] = print, every_s: float = 30.0,
                 concurrent: int = 1, phase1_epochs: int | None = None,
                 rungs: list[float] | None = None, reduction_factor: float = 1.0):
        self.total = total
        self.phase1_epochs = phase1_epochs  # where phase 2 starts: its epochs cost far more
        # ASHA on epochs: a trial runs epoch e with probability rf^-(rungs below e), for new trials' cost
        self.rungs, self.reduction_factor = sorted(rungs or []), max(1.0, reduction_factor)
        self.echo = echo
        self.every_s = every_s
        self.concurrent = max(1, concurrent)
        self.started = time.time()
        self.last_status = self.started
        self.best: tuple[float, str, int] | None = None
        self.epoch_s: dict[int, list[float]] = {1: [], 2: []}  # epoch wall times by phase, for the estimate

    def on_step_end(self, iteration, trials, **info):
        if self.every_s and time.time() - self.last_status >= self.every_s:
            self.last_status = time.time()
            for line in self.status_lines(trials):
                self._line(line)

    def status_lines(self, trials) -> list[str]:
        """The status block: one line per running trial, then counts, best and the estimate."""
        lines = []
        for trial in trials:
            if trial.status != "RUNNING":
                continue
            last = trial.last_result or {}
            if last.get("training_iteration"):
                lines.append(f"  {trial.trial_id} running: epoch {int(last['training_iteration'])}/"
                             f"{int(last.get('epochs_planned') or 0)} phase {int(last.get('phase') or 1)}, "
                             f"val_accuracy {float(last.get('val_accuracy', float('nan'))):.4f}")
            else:
                lines.append(f"  {trial.trial_id} running: starting")
        return lines + [f"{self._counts(trials)} | {self._estimate(trials)}"]

    def _estimate(self, trials) -> str:
        """Time left: the epochs the running trials still have (phase-1 and phase-2 epochs at their
        measured mean times; as if none were stopped early), plus each trial not started yet at its
        expected cost under ASHA's epoch rungs (epoch e runs with probability rf^-(rungs below e):
        ASHA keeps 1/rf of the trials at each rung) or, on other budgets, at a whole trial's epochs;
        shared among the trials at a time, and never less than the longest running trial needs."""
        ended = sum(t.status in ("TERMINATED", "ERROR") for t in trials)
        if self.total - ended <= 0:
            return "ending"
        t1 = _mean(self.epoch_s[1])
        t2 = _mean(self.epoch_s[2]) or None
        planned = max((int((t.last_result or {}).get("epochs_planned") or 0) for t in trials), default=0)
        e1 = self.phase1_epochs if self.phase1_epochs is not None else planned
        if t1 is None or (planned > e1 and t2 is None):
            return "estimate after the first " + ("epoch" if t1 is None else "phase-2 epoch")

        def seconds_for(done: int, total: int) -> float:
            return max(0, min(e1, total) - done) * t1 + max(0, total - max(done, e1)) * (t2 or 0.0)

        def expected_seconds(total: int) -> float:
            return sum((t1 if e <= e1 else (t2 or 0.0)) * self.reduction_factor ** -sum(r < e for r in self.rungs)
                       for e in range(1, total + 1))

        running = [seconds_for(int((t.last_result or {}).get("training_iteration") or 0),
                               int((t.last_result or {}).get("epochs_planned") or planned))
                   for t in trials if t.status == "RUNNING"]
        not_started = self.total - ended - len(running)
        per_trial = expected_seconds(planned)
        seconds = max(max(running, default=0.0), (sum(running) + not_started * per_trial) / self.concurrent)
        return f"about {seconds / 60:.0f} min left" if seconds >= 90 else f"about {seconds:.0f} s left"

    def _line(self, text: str) -> None:
        elapsed = int(time.time() - self.started)
        self.echo(f"[{elapsed // 60:3d}m{elapsed % 60:02d}s] {text}")

    def _counts(self, trials, ending=None, ending_status: str = "TERMINATED") -> str:
        counts = {"running": 0, "pending": 0, "stopped": 0, "finished": 0, "errored": 0}
        for trial in trials:
            status = ending_status if trial is ending else trial.status
            if status == "TERMINATED":
                counts["stopped" if stopped_early(trial.last_result) else "finished"] += 1
            elif status == "ERROR":
                counts["errored"] += 1
            elif status in ("RUNNING", "PENDING"):
                counts[status.lower()] += 1
        text = ", ".join(f"{v} {k}" for k, v in counts.items())
        best = f" | best {self.best[0]:.4f} ({self.best[1]}, epoch {self.best[2]})" if self.best else ""
        return f"{text} of {self.total}{best}"

    def on_trial_start(self, iteration, trials, trial, **info):
        self._line(f"{trial.trial_id} started: {_fmt_params(trial.config)}")

    def on_trial_restore(self, iteration, trials, trial, **info):
        self._line(f"{trial.trial_id} continues from its checkpoint")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if result.get("epoch_time_s") is not None:
            self.epoch_s[2 if int(result.get("phase") or 1) == 2 else 1].append(float(result["epoch_time_s"]))
        value = result.get(METRIC)
        # ties go to the lower trial id (tune.results.rank_by_score first prefers more epochs run)
        if value is not None and (self.best is None or (value, self.best[1]) > (self.best[0], trial.trial_id)):
            self.best = (float(value), trial.trial_id, int(result.get("training_iteration", 0)))

    def on_trial_complete(self, iteration, trials, trial, **info):
        last = trial.last_result or {}
        epochs, value = last.get("training_iteration"), last.get(METRIC, float("nan"))
        what = f"stopped by ASHA at epoch {epochs}" if stopped_early(last) else f"finished after {epochs} epochs"
        self._line(f"{trial.trial_id} {what}: val_accuracy {value:.4f}")
        self._line(self._counts(trials, trial))

    def on_trial_recover(self, iteration, trials, trial, **info):
        self._line(f"{trial.trial_id} failed ({trial.num_failures} so far); retrying from its last checkpoint")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._line(f"{trial.trial_id} errored after {trial.num_failures} failures; the search goes on")
        self._line(self._counts(trials, trial, "ERROR"))


class TrialsTableWriter(Callback):
    """Rewrites trials.csv and best_config.yaml in the experiment folder as trials end."""

    def __init__(self, base: dict[str, Any]):
        self.base = base

    def _write(self, trials) -> None:
        if not trials:
            return
        try:
            write_outputs(trials, self.base, trials[0].storage)
        except Exception as err:  # noqa: BLE001 - a table write must never stop the search
            log.warning("could not write trials.csv: %s", err)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._write(trials)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._write(trials)

    def on_experiment_end(self, trials, **info):
        self._write(trials)


def write_outputs(trials, base: dict[str, Any], storage) -> None:
    """trials.csv and best_config.yaml from Ray's Trial objects."""
    import tempfile

    from gic.config import TrainConfig

    from tune.results import BEST_CONFIG, TRIALS_CSV, round_metrics, rows_from_trials, table, write_best_config

    frame = table(rows_from_trials(trials))
    put_text(storage, TRIALS_CSV, round_metrics(frame).to_csv(index=False))
    with tempfile.TemporaryDirectory() as tmp:
        path = write_best_config(TrainConfig.model_validate(base), frame, tmp,
                                 shown_path=f"{storage.experiment_fs_path}/{BEST_CONFIG}")
        if path is not None:
            put_text(storage, BEST_CONFIG, Path(path).read_text())


class MetricsTBXLogger(TBXLoggerCallback):
    """Ray's TensorBoard logger (tensorboardX: an event file per trial folder, and the trial's params
    with its final metrics as TensorBoard HParams), handed only TENSORBOARD_METRICS of each result.

    Ray 2.60's TBXLoggerCallback writes every numeric key of a result (and a histogram for every list)
    and has no setting to choose them; given this logger among a run's callbacks, Ray adds no
    TBXLoggerCallback of its own (ray.tune.utils.callback._create_default_callbacks).
    """

    def log_trial_result(self, iteration: int, trial, result: dict[str, Any]) -> None:
        kept = {k: result[k] for k in ("training_iteration", *TENSORBOARD_METRICS) if k in result}
        super().log_trial_result(iteration, trial, kept)

    @classmethod
    def if_installed(cls) -> list["MetricsTBXLogger"]:
        """[the logger], or [] where tensorboardX is not installed (no TensorBoard files then)."""
        try:
            return [cls()]
        except ImportError:
            return []
