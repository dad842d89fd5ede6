"""The search's driver: data once, then Ray Tune runs the trials that Optuna proposes and ASHA stops.

    spec = load_search_config("configs/demo.yaml")
    summary = run_search(spec)                 # a new experiment in results/<name>/
    summary = run_search(spec, resume=True)    # continue an interrupted one

The rooms it drives: tune.schedulers (the searcher and ASHA), tune.trainable (one trial),
tune.callbacks (progress lines, the trial table), tune.experiment (the experiment folder's files and
the driver's record). This module starts Ray, checks resources, runs the Tuner and writes the end.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml
from gic.errors import GicError

from tune.callbacks import ProgressPrinter, TrialsTableWriter
from tune.config import METRIC, MODE, SearchSpec
from tune.schedulers import PruningAwareOptunaSearch, ReplayASHA, build_scheduler, build_searcher, optuna_module
from tune.trainable import run_trial, trial_dirname
from tune.checkpoints import CheckpointSweeper
from tune.experiment import (OPTUNA_TRIALS, SCHEDULER_STATE, SEARCH_CONFIG, STUDY_DB, ExperimentFolder, join,
                             mark_driver, parent)


log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------- driver
@dataclass
class SearchSummary:
    experiment_path: str
    trials: Any  # DataFrame
    scheduler_stops: dict[str, int] = field(default_factory=dict)
    optuna_states: dict[str, str] = field(default_factory=dict)  # ray trial id -> optuna state
    wall_s: float = 0.0
    best: dict[str, Any] | None = None
    interrupted: bool = False  # Ctrl-C: saved by Ray, continue with --resume
    state: str = "finished"  # finished | failed (every trial errored) | interrupted | nothing-to-resume
    written: list[str] = field(default_factory=list)  # the experiment's output files that exist


class _DropPythonApiAdvice(logging.Filter):
    """Ray's end-of-run advice is for Python users (`Tuner.restore(path=...)`) or repeats what the
    summary says (`Trials did not complete`); a command-line user gets `--resume` from us instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        return not ("Tuner.restore(" in text or text.startswith("Trials did not complete"))


def _quiet_ray_advice() -> None:
    target = logging.getLogger("ray.tune.tune")
    if not any(isinstance(f, _DropPythonApiAdvice) for f in target.filters):
        target.addFilter(_DropPythonApiAdvice())


def experiment_path(spec: SearchSpec, name: str | None = None) -> str:
    """Where the experiment lives: `<storage_path>/<name>` (a local path made absolute, or a URI)."""
    storage = spec.search.storage_path
    if "://" not in storage:
        storage = str(Path(storage).expanduser().resolve())
    return join(storage, name or spec.search.name)  # a URI's query (?endpoint_override=...) stays at its end


def _is_uri(path: str) -> bool:
    return "://" in path


def init_ray(address: str | None, num_cpus: int | None = None) -> bool:
    """Join a cluster (`auto` or host:port), or start a local Ray without its dashboard.

    Without an address this always starts a new local Ray (`address="local"`): never the cluster that
    an earlier `ray start` on this machine recorded in /tmp/ray/ray_current_cluster, or RAY_ADDRESS
    (a plain ray.init() would join that cluster when it lives, and hang on its dead address when it
    is gone). With one, something must answer there within seconds (tune.preflight.check_address).

    Workers' output reaches this process's (log_to_driver): an error or a warning printed in a
    trial is seen where the search runs. The dashboard hosts Ray's job API, which runs arbitrary
    code for whoever reaches it: a local search does not start it. Ray 2.60's core ports (GCS,
    raylet, object manager) listen on every interface whatever the node IP, so they are guarded by
    Ray's token authentication (a local ray.init() turns it on in 2.60; `ray start` only with
    RAY_AUTH_MODE=token, see configs/cluster/) and, on a shared network, must sit behind a firewall.

    Returns:
        True when this call started Ray (the caller shuts it down).

    Raises:
        GicError: the address does not answer, or the cluster refuses this driver (authentication).
    """
    import ray

    if ray.is_initialized():
        return False
    # With workers' output forwarded, Ray's tqdm support would replace builtins.print in this process
    # on the first line a worker prints (and a search's echo=print could no longer be pickled).
    os.environ.setdefault("RAY_TQDM_PATCH_PRINT", "0")
    quiet = os.environ.get("GIC_TUNE_VERBOSE", "") in ("", "0")
    # Workers log at WARNING unless GIC_TUNE_VERBOSE: errors and warnings, not Ray's per-checkpoint notes.
    common = dict(log_to_driver=True, logging_level=logging.WARNING if quiet else logging.INFO,
                  logging_config=ray.LoggingConfig(log_level="WARNING" if quiet else "INFO"), include_dashboard=False)
    if not address or address == "local":
        ray.init(address="local", num_cpus=num_cpus, **common)
        return True
    from tune.preflight import check_address

    hostport = check_address(address)
    try:
        ray.init(address=address, **common)
    except (ConnectionError, ray.exceptions.AuthenticationError) as err:
        text = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
        hint = ("" if os.environ.get("RAY_AUTH_MODE") == "token" else
                "; a cluster with token authentication needs RAY_AUTH_MODE=token and its token here "
                "(~/.ray/auth_token, RAY_AUTH_TOKEN_PATH or RAY_AUTH_TOKEN)")
        raise GicError(f"--address {address}: the Ray cluster at {hostport} refused this driver ({text}){hint}") from None
    return True


def trial_settings(spec: SearchSpec, experiment_path: str = "") -> dict[str, Any]:
    """What every trial (and the phase-1 features task) is told besides its params."""
    r = spec.search.resources_per_trial
    d = spec.search.debug
    return {"cpu": r.cpu, "gpu": r.gpu, "gpu_memory_margin_mb": r.gpu_memory_margin_mb,
            "checkpoint_every": spec.search.checkpoint_every,
            "fail_once_at_epoch": d.fail_once_at_epoch, "fail_always_at_epoch": d.fail_always_at_epoch,
            "failing_trials": d.failing_trials, "dry_run": d.dry_run, "dry_run_epoch_s": d.dry_run_epoch_s,
            "experiment_path": experiment_path}


def build_trainable(spec: SearchSpec, shipped: Any, experiment_path: str = ""):
    """The trial function with the trial's resources, and what the driver resolved for all trials
    (tune.features.Shipped: train/validation data, base weights, phase-1 features) put in the object
    store once by tune.with_parameters. A plain Dataset is shipped as it is (no weights, no features)."""
    from ray import tune

    from tune.features import Shipped

    if not isinstance(shipped, Shipped):
        shipped = Shipped(data=shipped)
    r = spec.search.resources_per_trial
    trainable = tune.with_parameters(run_trial, data=shipped.data, base=spec.trainer.to_dict(),
                                     settings=trial_settings(spec, experiment_path), weights=shipped.weights,
                                     features=shipped.features)
    return tune.with_resources(trainable, {"cpu": r.cpu, "gpu": r.gpu})


def _resolve_for_trials(spec: SearchSpec, path: str, echo: Callable[[str], None]):
    """Everything trials need, resolved once here (tune.features): the base weights (before the data:
    an unresolvable weights setting fails in seconds, exit 2), the train and validation splits, and
    the phase-1 features (one Ray task)."""
    from gic.data import load_dataset

    from tune.features import Shipped, compute_features, needs_features, resolve_weights, without_test

    t = spec.trainer
    weights = None
    if not spec.search.debug.dry_run:
        echo(f"resolving the base weights ({t.model.weights}) once for all trials")
        weights = resolve_weights(t.model.weights, t.data.image_size, t.seed)
    echo(f"loading data ({t.data.source}, {t.data.image_size} px) once for all trials")
    data = without_test(load_dataset(t.data))
    features = None
    if needs_features(spec):
        features = compute_features(spec, data, weights, trial_settings(spec, path), echo)
    return Shipped(data=data, weights=weights, features=features)


def run_search(spec: SearchSpec, *, name: str | None = None, address: str | None = None,
               resume: bool = False, echo: Callable[[str], None] = print, command: str | None = None,
               num_cpus: int | None = None, warm_start: str | None = None,
               callbacks: list | None = None) -> SearchSummary:
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

    Returns:
        The experiment path, the trial table, the scheduler's early stops and the Optuna states.

    Raises:
        GicError: the experiment exists and resume is False, or it does not exist and resume is True.
    """
    # Ray's own progress tables are replaced by ProgressPrinter's lines; a forced experiment snapshot
    # after every checkpoint is what makes --resume lose nothing, so its warning is noise here.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    _quiet_ray_advice()
    from ray import tune

    name = name or spec.search.name
    path = experiment_path(spec, name)
    local = None if _is_uri(path) else Path(path)
    folder = ExperimentFolder(path)
    if local is not None and local.exists() and not local.is_dir():
        raise GicError(f"{path}: exists and is not a folder; expected an experiment folder or nothing")
    if local is not None and local.is_dir() and _killed_before_saved(local):
        # Killed before Ray saved anything a resume could use: no trial result exists, so starting
        # again loses nothing (and is the only way on: Ray cannot restore it).
        echo(f"note: {path} holds only the start of a search killed before Ray saved its state; starting it again")
        import shutil

        for entry in local.iterdir():
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        resume = False
    if local is not None and (done := _ended_already(folder, spec, path, local, resume, echo)) is not None:
        return done
    fresh = not resume
    created = local is not None and fresh and not local.exists()
    if local is not None:
        from gic.files import check_writable

        check_writable(local)  # a read-only or misplaced results folder fails now, not after the first trial
        mark_driver(local, "running")

    started = time.time()
    marked = local is not None
    try:
        owns_ray = init_ray(address or spec.search.address, num_cpus=num_cpus)
        try:
            check_resources(spec, owns_ray, echo)
            preflight(spec, path, echo)
            if local is None:  # a URI: reachable now (preflight), so its folder can be checked and marked
                if (done := _ended_already(folder, spec, path, local, resume, echo)) is not None:
                    return done
                mark_driver(folder, "running")
                marked = True
            return _run(spec, name, path, local, resume, echo, command, started, warm_start, callbacks)
        finally:
            if owns_ray:
                import ray

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
            import shutil

            shutil.rmtree(local, ignore_errors=True)
            if not created:
                local.mkdir(parents=True, exist_ok=True)
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


def _check_experiment_folder(folder: ExperimentFolder, path: str, resume: bool) -> None:
    """A new experiment needs an empty or absent folder; --resume one that Ray can restore."""
    if not resume and folder.entries():
        raise GicError(f"{path} already exists; add --resume to continue it or --name for a new experiment")
    if resume and not folder.is_file("tuner.pkl"):
        raise GicError(f"{path}: no experiment to resume (no tuner.pkl)")


def preflight(spec: SearchSpec, path: str, echo: Callable[[str], None] = print) -> None:
    """The checks that need Ray and run before any trial: storage every node can write, a GPU share
    with room for a memory cap (tune.preflight). The address was checked by init_ray, the resources
    by check_resources; the base weights are checked where the driver resolves them (_run)."""
    from tune.preflight import check_gpu_share, check_storage

    check_storage(spec, path, echo)
    check_gpu_share(spec)


def check_resources(spec: SearchSpec, owns_ray: bool, echo: Callable[[str], None] = print) -> None:
    """Refuse a trial that the cluster can never place, instead of waiting for it forever.

    On a local Ray (started here) the resources are all there is: an error. A cluster may grow
    (autoscaler), so there it is a warning.
    """
    import ray

    need = spec.search.resources_per_trial
    have = ray.cluster_resources()
    for key, wanted, label in (("GPU", need.gpu, "gpu"), ("CPU", need.cpu, "cpu")):
        available = float(have.get(key, 0))
        if wanted > 0 and wanted > available + 1e-9:
            text = (f"search.resources_per_trial.{label} = {wanted:g} but the Ray cluster has {available:g} {key}(s); "
                    + ("set it to 0 to train on CPUs" if key == "GPU" else f"use at most {available:g}"))
            if owns_ray:
                raise GicError(text)
            echo(f"warning: {text} (waiting for the cluster to grow)")


def _run(spec, name, path, local, resume, echo, command, started, warm_start=None, callbacks=None) -> SearchSummary:
    from ray import tune

    trainable = build_trainable(spec, _resolve_for_trials(spec, path, echo), path)
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
            callbacks=[ProgressPrinter(s.num_samples, echo, s.progress_every_s, s.max_concurrent),
                       TrialsTableWriter(spec.trainer.to_dict()),
                       *([] if s.keep_checkpoints else [CheckpointSweeper()]), *(callbacks or [])],
            verbose=0)
        tune_config = tune.TuneConfig(search_alg=limited, scheduler=scheduler, num_samples=s.num_samples,
                                      reuse_actors=s.reuse_actors, trial_dirname_creator=trial_dirname,
                                      time_budget_s=s.time_budget_s)
        tuner = tune.Tuner(trainable, tune_config=tune_config, run_config=run_config)
        _describe(path, spec, name, command)
        if warm_start:  # issue 4: a previous experiment's trials enter the study first (tune.warmstart)
            from tune.warmstart import warm_start_searcher

            echo(warm_start_searcher(searcher, warm_start, spec, path))
    echo(f"experiment {path}: {s.num_samples} trials, {s.max_concurrent} at a time, "
         f"{spec.search.resources_per_trial.cpu:g} CPU + {spec.search.resources_per_trial.gpu:g} GPU each, "
         f"ASHA on {s.budget} max_t {spec.max_t:g} grace {s.grace_period:g} rf {s.reduction_factor:g}")
    for dim in spec.space.dimensions.values():
        echo(f"  search {dim.describe()}")

    fit_started = time.time()
    grid = tuner.fit()
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
    summary = _finish(path, spec, grid, searcher, scheduler, time.time() - started)
    summary.interrupted = interrupted
    summary.state = end_state(summary.trials, interrupted)
    mark_driver(path, summary.state, **({"time_budget_s": float(budget_s), "time_budget_reached": reached}
                                        if budget_s else {}))
    if reached:
        echo(f"time budget of {float(budget_s):g} s reached: no trial started after it; trials still running "
             "were stopped (their rows say so)")
    summary.written = _written(path)
    echo(_final_line(summary))
    return summary


def _ended_already(folder, spec: SearchSpec, path: str, local: Path | None, resume: bool,
                   echo: Callable[[str], None]) -> SearchSummary | None:
    """Check the experiment folder for this start; with --resume, the summary of an experiment that has
    already ended (said, nothing touched), else None."""
    _check_experiment_folder(folder, path, resume)
    done = _resume_check(spec, path, local) if resume else None
    if done is not None:
        echo(_final_line(done))
    return done


def _killed_before_saved(local: Path) -> bool:
    """A folder whose driver is gone without Ray having saved a restorable state or any trial."""
    from tune.experiment import driver_gone, read_driver

    if read_driver(local) is None or not driver_gone(local) or (local / "tuner.pkl").is_file():
        return False
    return not any(p.is_dir() for p in local.iterdir())


def end_state(frame, interrupted: bool) -> str:
    """How a search ended: interrupted, failed (every trial errored) or finished."""
    if interrupted:
        return "interrupted"
    if not frame.empty and bool((frame["status"] == "errored").all()):
        return "failed"
    return "finished"


def _written(path: str) -> list[str]:
    """The experiment's summary files that exist (a summary never names a file it did not write)."""
    from tune.results import BEST_CONFIG, TRIALS_CSV

    folder = ExperimentFolder(path)
    return [folder.uri(name) for name in (TRIALS_CSV, BEST_CONFIG) if folder.is_file(name)]


# What --resume may change: where and how trials run, never what they train (their results would
# then mix two budgets). Anything else is refused, naming the keys.
RESUME_SAFE_KEYS = ("search.resources_per_trial.", "search.checkpoint_every", "search.address",
                    "search.keep_checkpoints", "search.shared_filesystem")


def _resume_check(spec: SearchSpec, path: str, local: Path | None) -> SearchSummary | None:
    """Before --resume: refuse settings that differ from the experiment's own, and return a summary
    (touching nothing) when the experiment has nothing left to run."""
    from gic.config import config_changes

    from tune.experiment import read_driver
    from tune.results import TRIALS_CSV

    folder = ExperimentFolder(path)
    record = read_driver(folder)
    ended = bool(record and record.get("state") in ("finished", "failed"))
    text = folder.read_text(SEARCH_CONFIG)
    if text is not None:
        stored = yaml.safe_load(text) or {}
        new = _search_doc(spec)
        keys = ("trainer", "space", "fixed", "search")
        changed = config_changes({k: stored.get(k) for k in keys}, {k: new.get(k) for k in keys},
                                 safe=(*RESUME_SAFE_KEYS, "search.name"))
        if changed:
            raise GicError(f"--resume: {path} was started with other settings ({'; '.join(changed)}); "
                           f"only {', '.join(k.rstrip('.') for k in RESUME_SAFE_KEYS)} may change on resume. "
                           "Drop those --set/--num-samples options, or start a new search with --name")
        allowed = [c for c in config_changes({k: stored.get(k) for k in keys}, {k: new.get(k) for k in keys},
                                             safe=("search.name",)) if c not in changed]
        if allowed and not ended:  # recorded: what each part of the search ran with
            stored.setdefault("resumed", []).append({"at": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                                     "command": " ".join(map(shlex.quote, sys.argv)),
                                                     "changed": allowed})
            folder.write_text(SEARCH_CONFIG, yaml.safe_dump(stored, sort_keys=False))
    if ended:
        import io

        import pandas as pd

        from tune.results import best_row

        csv = folder.read_text(TRIALS_CSV)
        frame = pd.read_csv(io.StringIO(csv)) if csv is not None else pd.DataFrame()
        return SearchSummary(experiment_path=path, trials=frame, state="nothing-to-resume",
                             best=best_row(frame) if not frame.empty else None)  # nothing written
    return None


def _describe(path: str, spec: SearchSpec, name: str, command: str | None) -> None:
    """Make the experiment folder (local or URI) self-describing: resolved config, command, versions."""
    import ray

    doc = {"command": command or " ".join(shlex.quote(a) for a in sys.argv), "source": spec.source,
           "name": name, **_search_doc(spec),
           "versions": {"python": sys.version.split()[0], "ray": ray.__version__, "optuna": optuna_module().__version__}}
    ExperimentFolder(path).write_text(SEARCH_CONFIG, yaml.safe_dump(doc, sort_keys=False))


def _search_doc(spec: SearchSpec) -> dict[str, Any]:
    """What defines a search's trials, as plain data: search settings, space, fixed keys, trainer."""
    doc = {"search": spec.search.model_dump(mode="json"),
           "space": {n: {k: v for k, v in vars(d).items() if not (v is None or v is False or v == ()) and k != "name"}
                     for n, d in spec.space.dimensions.items()},
           "fixed": spec.space.fixed, "trainer": spec.trainer.to_dict()}
    return json.loads(json.dumps(doc, default=list))


def _finish(path, spec, grid, searcher, scheduler, wall_s) -> SearchSummary:
    """Final trials.csv / best_config.yaml, the scheduler's stops and the Optuna study states."""
    from tune.results import TRIALS_CSV, best_row, load_trials

    stops: dict[str, int] = {}
    folder = ExperimentFolder(path)  # a local folder or a URI alike
    previous = folder.read_json(SCHEDULER_STATE) or {}
    stops.update(previous.get("stops", {}))
    state: dict[str, Any] = {"budget": spec.search.budget, "stops": stops, "rungs": previous.get("rungs", []),
                             "replayed": {}}
    if isinstance(scheduler, ReplayASHA):
        stops.update(scheduler.early_stops)
        # "at": the rung's milestone in budget units (compute used, or the epoch)
        state["rungs"] = [{"at": round(float(m), 6), "recorded": rec} for m, rec in scheduler.rungs()]
        state["replayed"] = scheduler.replayed
    folder.write_text(SCHEDULER_STATE, json.dumps(state, indent=1, sort_keys=True))
    states: dict[str, str] = {}
    if isinstance(searcher, PruningAwareOptunaSearch):
        rows = searcher.trial_rows()
        states = {row["trial_id"]: row["state"] for row in rows}
        if rows:
            import pandas as pd

            folder.write_text(OPTUNA_TRIALS, pd.DataFrame(rows).sort_values("number").to_csv(index=False))
    import io

    import pandas as pd

    text = folder.read_text(TRIALS_CSV)  # the table TrialsTableWriter wrote
    frame = pd.read_csv(io.StringIO(text)) if text is not None else load_trials(path)
    return SearchSummary(experiment_path=path, trials=frame, scheduler_stops=stops, optuna_states=states,
                         wall_s=wall_s, best=best_row(frame) if not frame.empty else None)


def _final_line(summary: SearchSummary) -> str:
    frame = summary.trials
    counts = frame["status"].value_counts().to_dict() if not frame.empty else {}
    text = ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) or "no trials"
    best = summary.best
    best_text = f"; best {best['best_val_accuracy']:.4f} ({best['trial_id']})" if best else ""
    head = {"finished": f"done in {summary.wall_s:.0f} s",
            "failed": f"failed after {summary.wall_s:.0f} s: every trial errored",
            "interrupted": f"interrupted after {summary.wall_s:.0f} s",
            "nothing-to-resume": f"nothing to resume: {summary.experiment_path} has ended (for more trials, "
                                 f"start a new search with --name NEW --warm-start {summary.experiment_path})"
            }[summary.state]
    files = "".join(f"\n  {name}" for name in summary.written)
    return f"{head}: {text}{best_text}{files}"
