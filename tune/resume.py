"""Before a search starts or resumes: what its folder holds, and whether --resume may continue it.

    check_start(folder, spec, path, resume, echo)   # None: go on; a summary: an ended search, said
    describe(path, spec, name, command)             # search_config.yaml: what defines the trials

A new experiment needs an empty or absent folder; --resume one that Ray can restore, started with
the same settings. Only where and how trials run may change on resume (RESUME_SAFE_KEYS), never
what they train: their results would then mix two budgets. Each allowed change is recorded in
search_config.yaml. An experiment that has ended (finished, or every trial errored) has nothing to
resume: that is said, and nothing is touched.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Callable

import yaml
from gic.errors import GicError

from tune.config import SearchSpec
from tune.experiment import SEARCH_CONFIG, TRIALS_CSV, ExperimentFolder, driver_gone, read_driver
from tune.summary import SearchSummary, final_line

# What --resume may change: where and how trials run, never what they train. Anything else is
# refused, naming the keys.
RESUME_SAFE_KEYS = ("search.resources_per_trial.", "search.checkpoint_every", "search.address",
                    "search.keep_checkpoints", "search.shared_filesystem")


def check_folder(folder: ExperimentFolder, path: str, resume: bool) -> None:
    """A new experiment needs an empty or absent folder; --resume one that Ray can restore.

    Raises:
        GicError: naming the folder and what to do.
    """
    if not resume and folder.entries():
        raise GicError(f"{path} already exists; add --resume to continue it or --name for a new experiment")
    if resume and not folder.is_file("tuner.pkl"):
        raise GicError(f"{path}: no experiment to resume (no tuner.pkl)")


def check_start(folder: ExperimentFolder, spec: SearchSpec, path: str, resume: bool,
                echo: Callable[[str], None]) -> SearchSummary | None:
    """Check the experiment folder for this start (check_folder, then check_resume); with --resume,
    the summary of an experiment that has already ended (its final line echoed), else None."""
    check_folder(folder, path, resume)
    done = check_resume(spec, path) if resume else None
    if done is not None:
        echo(final_line(done))
    return done


def killed_before_saved(local: Path) -> bool:
    """A folder whose driver is gone without Ray having saved a restorable state or any trial."""
    if read_driver(local) is None or not driver_gone(local) or (local / "tuner.pkl").is_file():
        return False
    return not any(p.is_dir() for p in local.iterdir())


def check_resume(spec: SearchSpec, path: str) -> SearchSummary | None:
    """Before --resume: refuse settings that differ from the experiment's own, record the allowed
    changes, and return a summary (touching nothing) when the experiment has nothing left to run.

    Raises:
        GicError: a setting outside RESUME_SAFE_KEYS differs, naming each.
    """
    from gic.config import config_changes

    folder = ExperimentFolder(path)
    record = read_driver(folder)
    ended = bool(record and record.get("state") in ("finished", "failed"))
    text = folder.read_text(SEARCH_CONFIG)
    if text is not None:
        stored = yaml.safe_load(text) or {}
        new = search_doc(spec)
        keys = ("trainer", "space", "fixed", "search")
        # search.debug keys that this version no longer has (fault drills, now in the tests) changed nothing
        debug = (stored.get("search") or {}).get("debug") or {}
        for key in set(debug) - set(new["search"]["debug"]):
            debug.pop(key)
        old_part, new_part = {k: stored.get(k) for k in keys}, {k: new.get(k) for k in keys}
        changed = config_changes(old_part, new_part, safe=(*RESUME_SAFE_KEYS, "search.name"))
        if changed:
            raise GicError(f"--resume: {path} was started with other settings ({'; '.join(changed)}); "
                           f"only {', '.join(k.rstrip('.') for k in RESUME_SAFE_KEYS)} may change on resume. "
                           "Drop those --set/--num-samples options, or start a new search with --name")
        allowed = config_changes(old_part, new_part, safe=("search.name",))
        if allowed and not ended:  # recorded: what each part of the search ran with
            stored.setdefault("resumed", []).append({"at": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                                     "command": " ".join(map(shlex.quote, sys.argv)),
                                                     "changed": allowed})
            folder.write_text(SEARCH_CONFIG, yaml.safe_dump(stored, sort_keys=False))
    if not ended:
        return None
    import io

    import pandas as pd

    from tune.results import best_row

    csv = folder.read_text(TRIALS_CSV)
    frame = pd.read_csv(io.StringIO(csv)) if csv is not None else pd.DataFrame()
    return SearchSummary(experiment_path=path, trials=frame, state="nothing-to-resume",
                         best=best_row(frame) if not frame.empty else None)  # nothing written


def describe(path: str, spec: SearchSpec, name: str, command: str | None) -> None:
    """Make the experiment folder (local or URI) self-describing: resolved config, command, versions."""
    import ray

    from tune.schedulers import optuna_module

    doc = {"command": command or " ".join(shlex.quote(a) for a in sys.argv), "cwd": os.getcwd(), "source": spec.source,
           "name": name, **search_doc(spec),
           "versions": {"python": sys.version.split()[0], "ray": ray.__version__, "optuna": optuna_module().__version__}}
    ExperimentFolder(path).write_text(SEARCH_CONFIG, yaml.safe_dump(doc, sort_keys=False))


def search_doc(spec: SearchSpec) -> dict[str, Any]:
    """What defines a search's trials, as plain data: search settings, space, fixed keys, trainer."""
    doc = {"search": spec.search.model_dump(mode="json"),
           "space": {n: {k: v for k, v in vars(d).items() if not (v is None or v is False or v == ()) and k != "name"}
                     for n, d in spec.space.dimensions.items()},
           "fixed": spec.space.fixed, "trainer": spec.trainer.to_dict()}
    return json.loads(json.dumps(doc, default=list))
