"""The search's driver: data once, then Ray Tune runs the trials that Optuna proposes and ASHA stops.

    spec = load_search_config("configs/demo.yaml")
    summary = run_search(spec)                 # a new experiment in results/<name>/
    summary = run_search(spec, resume=True)    # continue an interrupted one

This module builds the trainable and runs the Tuner, start to end. The rooms it drives:
tune.ray_start (Ray started or joined; Ray's notices to the experiment's ray.log), tune.preflight
(checks before any trial), tune.resume (the folder a start needs; what --resume may change),
tune.schedulers (the searcher and ASHA), tune.trainable (one trial), tune.callbacks (progress lines,
the trial table, TensorBoard), tune.summary (how the search ended), and tune.experiment (the
experiment folder's files and the driver's record).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable

from gic.errors import GicError

from tune.analysis import milestones
from tune.callbacks import MetricsTBXLogger, ProgressPrinter, TrialsTableWriter
from tune.checkpoints import CheckpointSweeper
from tune.config import METRIC, MODE, SearchSpec
from tune.experiment import STUDY_DB, ExperimentFolder, is_uri, join, mark_driver, parent
from tune.ray_start import RayNotices, init_ray, quiet_ray_advice, verbose_from_env
from tune.resume import check_start, describe, killed_before_saved
from tune.schedulers import build_scheduler, build_searcher
from tune.summary import SearchSummary, end_state, final_line, finish, written
from tune.trainable import run_trial, trial_dirname

__all__ = ["SearchSummary", "build_trainable", "experiment_path", "run_search", "trial_settings"]


def experiment_path(spec: SearchSpec, name: str | None = None) -> str:
    """Where the experiment lives: `<storage_path>/<name>` (a local path made absolute, or a URI)."""
    storage = spec.search.storage_path
    if not is_uri(storage):
        storage = str(Path(storage).expanduser().resolve())
    return join(storage, name or spec.search.name)  # a URI's query (?endpoint_override=...) stays at its end


def trial_settings(spec: SearchSpec) -> dict[str, Any]:
    """What every trial (and the phase-1 features task) is told besides its params."""
    r = spec.search.resources_per_trial
    d = spec.search.debug
    return {"cpu": r.cpu, "gpu": r.gpu, "gpu_memory_margin_mb": r.gpu_memory_margin_mb,
            "checkpoint_every": spec.search.checkpoint_every, "dry_run": d.dry_run,
            "dry_run_epoch_s": d.dry_run_epoch_s}


def build_trainable(spec: SearchSpec, shipped: Any):
    """The trial function with the trial's resources, and what the driver resolved for all trials
    (tune.features.Shipped: train/validation data, base weights, phase-1 features) put in the object
    store once by tune.with_parameters. A plain Dataset is shipped as it is (no weights, no features)."""
    from ray import tune

    from tune.features import Shipped

    if not isinstance(shipped, Shipped):
        shipped = Shipped(data=shipped)
    r = spec.search.resources_per_trial
    trainable = tune.with_parameters(run_trial, data=shipped.data, base=spec.trainer.to_dict(),
                                     settings=trial_settings(spec), weights=shipped.weights,
                                     features=shipped.features)
    return tune.with_resources(trainable, {"cpu": r.cpu, "gpu": r.gpu})


def _resolve_for_trials(spec: SearchSpec, echo: Callable[[str], None]):
    """Everything trials need, resolved once here (tune.features): the base weights (before the data:
    an unresolvable weights setting fails in seconds, exit 2), the train and validation splits, and
    the phase-1 features (one Ray task)."""
    import ray
    from gic.data import load_dataset

    from tune.features import Shipped, compute_features, needs_features, resolve_weights, with_store, without_test

    t = spec.trainer
    warm = _warm_task_worker(spec) if needs_features(spec) else []
    weights = None
    if not spec.search.debug.dry_run:
        echo(f"resolving the base weights ({t.model.weights}) once for all trials")
        weights = resolve_weights(t.model.weights, t.data.image_size, t.seed)
    echo(f"loading data ({t.data.source}, {t.data.image_size} px) once for all trials")
    data = without_test(load_dataset(t.data))
    features = None
    if needs_features(spec):
        if warm:  # done or failed: either way the features task may start
            ray.wait(warm, timeout=60)
        features = compute_features(spec, data, weights, trial_settings(spec), echo)
    features = with_store(spec, features, echo)  # phase-1 augmented features shared as trials make them
    return Shipped(data=data, weights=weights, features=features)


def _warm_task_worker(spec: SearchSpec) -> list:
    """[a Ray task importing TensorFlow and Keras in a task worker while the driver resolves the
    weights, importing them too], or [] on a GPU search: the phase-1 features task then reuses that
    idle worker (Ray reuses task workers) instead of importing them after the weights: 3.5 s off
    the demo's driver start on 2 cores, on every slot (gic-tune bench)."""
    import ray

    r = spec.search.resources_per_trial
    warm = ray.remote(lambda: bool(__import__("gic.model"))).options(num_cpus=r.cpu, name="gic-warm-up")
    return [] if r.gpu > 0 else [warm.remote()]


def _epoch_rungs(spec: SearchSpec) -> tuple[list[float], float]:
    """ASHA's rungs and reduction factor when it stops trials on epochs (for the progress estimate)."""
    s = spec.search
    if not s.early_stopping or s.budget != "epoch":
        return [], 1.0
    return milestones(s.grace_period, s.reduction_factor, spec.max_t), s.reduction_factor


def run_search(spec: SearchSpec, *, name: str | None = None, address: str | None = None,
               resume: bool = False, echo: Callable[[str], None] = print, command: str | None = None,
               num_cpus: int | None = None, warm_start: str | None = None,
               callbacks: list | None = None, verbose: bool | None = None) -> SearchSummary:
    """Run (or resume) a search and write trials.csv and best_config.yaml.

    Args:
        spec: the validated search file.
        name: experiment name (default: `search.name`).
        address: Ray address (`auto`, host:port); default `search.address`, else a local Ray.
        resume: continue the experiment `<storage_path>/<name>` through Tuner.restore.
        echo: where progress lines go.
        command: the command line, recorded in the experiment folder.
        num_cpus: CPUs of a local Ray (default: all).
        warm_start: a previous experiment folder whose ended trials are added to the new study first.
        callbacks: extra Ray Tune callbacks for a new experiment (tune.bench's TrialClock).
        verbose: Ray's own notices on the terminal too, at INFO (default: GIC_TUNE_VERBOSE); without
            it they go to the experiment's ray.log only (tune.ray_start.RayNotices).

    Returns:
        The experiment path, the trial table, the scheduler's early stops and the Optuna states.

    Raises:
        GicError: the experiment exists and resume is False, or it does not exist and resume is True.
    """
    # Ray's own progress tables are replaced by ProgressPrinter's lines; a forced experiment snapshot
    # after every checkpoint is what makes --resume lose nothing, so its warning is noise here.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    quiet_ray_advice()
    verbose = verbose_from_env() if verbose is None else verbose
    from ray import tune

    name = name or spec.search.name
    path = experiment_path(spec, name)
    local = None if is_uri(path) else Path(path)
    folder = ExperimentFolder(path)
    if local is not None and local.exists() and not local.is_dir():
        raise GicError(f"{path}: exists and is not a folder; expected an experiment folder or nothing")
    if local is not None and local.is_dir() and killed_before_saved(local):
        # Killed before Ray saved anything a resume could use: no trial result exists, so starting
        # again loses nothing (and is the only way on: Ray cannot restore it).
        echo(f"note: {path} holds only the start of a search killed before Ray saved its state; starting it again")
        for entry in local.iterdir():
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        resume = False
    if local is not None and (done := check_start(folder, spec, path, resume, echo)) is not None:
        return done
    fresh = not resume
    created = local is not None and fresh and not local.exists()
    # the folders this start makes (the experiment's and its storage root's, e.g. results/): a start
    # that fails leaves none of them behind
    made = [d for d in (local, *local.parents) if not d.exists()] if created else []
    if local is not None:
        from gic.files import check_writable

        check_writable(local)  # a read-only or misplaced results folder fails now, not after the first trial
        mark_driver(local, "running")

    started = time.time()
    marked = local is not None
    try:
        with RayNotices(path, verbose) as notices:
            owns_ray = notices.start(init_ray, address or spec.search.address, num_cpus=num_cpus, verbose=verbose)
            try:
                from tune.preflight import preflight

                preflight(spec, path, owns_ray, echo)
                if local is None:  # a URI: reachable now (preflight), so its folder can be checked and marked
                    if (done := check_start(folder, spec, path, resume, echo)) is not None:
                        return done
                    mark_driver(folder, "running")
                    marked = True
                return _run(spec, name, path, local, resume, echo, command, started, warm_start, callbacks, notices)
            finally:
                if owns_ray:
                    import ray

                    notices.closing()  # workers stopped by the shutdown print Ray's tracebacks: not news
                    ray.shutdown()
    except BaseException:
        if marked and (local is None or local.is_dir()):
            try:
                mark_driver(folder, "interrupted")  # its running trials are orphans now, not "running"
            except OSError:
                pass
        # Nothing half-written: a new experiment that failed (or was interrupted) before Ray saved a
        # state that --resume can use leaves no folder behind, so the same command can run again.
        if fresh and local is not None and local.is_dir() and not tune.Tuner.can_restore(str(local)):
            shutil.rmtree(local, ignore_errors=True)
            if not created:
                local.mkdir(parents=True, exist_ok=True)
            for parent_dir in made[1:]:  # deepest first; rmdir removes only an empty folder
                try:
                    parent_dir.rmdir()
                except OSError:
                    break
        elif fresh and local is None and marked and not _can_restore(path):
            try:
                folder.remove("")
            except OSError:
                pass
        raise


def _can_restore(path: str) -> bool:
    from ray import tune

    try:
        return tune.Tuner.can_restore(path)
    except Exception:  # noqa: BLE001 - an unreachable URI cannot be restored either
        return False


def _run(spec, name, path, local, resume, echo, command, started, warm_start=None, callbacks=None,
         notices: RayNotices | None = None) -> SearchSummary:
    from ray import tune

    trainable = build_trainable(spec, _resolve_for_trials(spec, echo))
    s = spec.search
    if resume:
        if not tune.Tuner.can_restore(path):
            raise GicError(f"{path}: Ray cannot restore this experiment (no experiment state)")
        echo(f"resuming {path}: finished trials stay, unfinished ones continue from their checkpoints")
        tuner = tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True, resume_errored=False)
        searcher = scheduler = None
    else:
        # A local experiment keeps its Optuna study in its folder, written as trials start and end:
        # optuna-dashboard follows the search live. (On a URI the study is kept in memory and exported.)
        storage_url = f"sqlite:///{local / STUDY_DB}" if local is not None else None
        searcher, limited = build_searcher(spec, storage_url)
        scheduler = build_scheduler(spec)
        if local is not None:
            local.mkdir(parents=True, exist_ok=True)
        run_config = tune.RunConfig(
            name=name, storage_path=parent(path),
            failure_config=tune.FailureConfig(max_failures=s.max_failures),
            # The latest checkpoint is always kept besides the num_to_keep best: last + best.
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1, checkpoint_score_attribute=METRIC,
                                                    checkpoint_score_order=MODE),
            callbacks=[ProgressPrinter(s.num_samples, echo, s.progress_every_s, s.max_concurrent,
                                        spec.trainer.phase1.epochs, *_epoch_rungs(spec)),
                       TrialsTableWriter(spec.trainer.to_dict()), *MetricsTBXLogger.if_installed(),
                       *([] if s.keep_checkpoints else [CheckpointSweeper()]), *(callbacks or [])],
            verbose=0)
        tune_config = tune.TuneConfig(search_alg=limited, scheduler=scheduler, num_samples=s.num_samples,
                                      reuse_actors=s.reuse_actors, trial_dirname_creator=trial_dirname,
                                      time_budget_s=s.time_budget_s)
        tuner = tune.Tuner(trainable, tune_config=tune_config, run_config=run_config)
        describe(path, spec, name, command)
        if warm_start:  # a previous experiment's trials enter the study first (tune.warmstart)
            from tune.warmstart import warm_start_searcher

            echo(warm_start_searcher(searcher, warm_start, spec, path))
    echo(f"experiment {path}: {s.num_samples} trials, {s.max_concurrent} at a time, "
         f"{spec.search.resources_per_trial.cpu:g} CPU + {spec.search.resources_per_trial.gpu:g} GPU each, "
         f"ASHA on {s.budget} max_t {spec.max_t:g} grace {s.grace_period:g} rf {s.reduction_factor:g}")
    for dim in spec.space.dimensions.values():
        echo(f"  search {dim.describe()}")

    fit_started = time.time()
    tuner.fit()
    if notices is not None:
        notices.closing()  # Ray stops the trials' workers now: what they print then is Ray's business
    # Tuner.restore rebuilds the searcher and scheduler from the experiment: use those objects.
    internal = getattr(tuner, "_local_tuner", None)
    tune_config = getattr(internal, "_tune_config", None)
    if tune_config is not None:
        scheduler = tune_config.scheduler
        searcher = getattr(tune_config.search_alg, "searcher", searcher)
    # Ctrl-C (SIGINT) makes Ray stop the loop, snapshot the experiment and return normally, with the
    # trials it stopped marked as ended in memory. Its last snapshot on disk still says which were
    # running: an interrupted search has trials running there, or fewer trials than planned.
    # The same on a URI: its snapshot is read through pyarrow (tune.experiment.ExperimentFolder).
    from tune.results import load_trials, write_trials_csv

    expected = int(getattr(tune_config, "num_samples", None) or s.num_samples)
    # Ray's time budget (search.time_budget_s) ends a search with fewer trials than planned too.
    budget_s = getattr(tune_config, "time_budget_s", None) or s.time_budget_s
    reached = bool(budget_s) and time.time() - fit_started >= float(budget_s) - 1
    on_disk = load_trials(path)
    interrupted = ((len(on_disk) < expected and not reached)
                   or bool(on_disk["status"].isin(["running", "pending", "paused"]).any()))
    if interrupted:
        mark_driver(path, "interrupted")
        write_trials_csv(load_trials(path), path)  # not "stopped by ASHA": interrupted
    summary = finish(path, spec, searcher, scheduler, time.time() - started)
    summary.interrupted = interrupted
    summary.state = end_state(summary.trials, interrupted)
    mark_driver(path, summary.state, **({"time_budget_s": float(budget_s), "time_budget_reached": reached}
                                        if budget_s else {}))
    if reached:
        echo(f"time budget of {float(budget_s):g} s reached: no trial started after it; trials still running "
             "were stopped (their rows say so)")
    summary.written = written(path)
    echo(final_line(summary))
    return summary
