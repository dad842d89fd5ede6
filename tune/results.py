"""Experiment folder -> trial table (DataFrame), trials.csv and best_config.yaml.

One row per trial: its params, status (finished, stopped by ASHA, errored, running, pending, or
interrupted: running or pending when the search's driver stopped or was killed), the
epoch ASHA stopped it at, best and last val accuracy, epochs run and planned, wall time and node.
The same row builder serves the live search (from Ray's Trial objects, see tune.search) and a folder
on disk (from each trial's params.json and result.json), so a results folder copied from a
cluster reads the same on a laptop with no Ray running.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
from gic.config import TrainConfig, save_config
from gic.errors import GicError

from tune.trainable import BEST_EPOCH_KEY, PLANNED_KEY
from tune.experiment import BEST_CONFIG, RESULTS, TRIALS_CSV, parse_results

PARAM_PREFIX = "param."
METRIC_COLUMNS = ("best_val_accuracy", "last_val_accuracy", "wall_time_s")  # rounded when written
SIGNIFICANT_DIGITS = 6


def _finite(value: Any) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def trial_row(trial_id: str, params: dict[str, Any], status: str, last: dict[str, Any] | None,
              error: str | None = None) -> dict[str, Any]:
    """One row of the trial table.

    Args:
        trial_id: Ray's trial id.
        params: the trial's searched params.
        status: Ray's status (PENDING, RUNNING, PAUSED, TERMINATED, ERROR), or INTERRUPTED for a
            trial Ray last saw running whose driver is gone (tune.experiment).
        last: the trial's last reported result (None before its first epoch).
        error: the first line of its error, if it errored.
    """
    last = last or {}
    best = _finite(last.get("best_val_accuracy"))
    epochs = int(last.get("training_iteration") or 0)
    planned = int(last.get(PLANNED_KEY) or 0)
    if status == "ERROR":
        state = "errored"
    elif status == "TERMINATED":
        state = "stopped" if epochs and planned and epochs < planned else "finished"
    else:
        state = status.lower()
    row: dict[str, Any] = {"trial_id": trial_id, "status": state,
                           "stopped_at_epoch": epochs if state == "stopped" else None,
                           "epochs": epochs, "epochs_planned": planned or None,
                           "best_val_accuracy": best,
                           "best_epoch": (int(last.get(BEST_EPOCH_KEY) or 0) or None) if best is not None else None,
                           "last_val_accuracy": _finite(last.get("val_accuracy")),
                           "wall_time_s": _finite(last.get("time_total_s")),
                           "node_ip": last.get("node_ip"), "node_id": last.get("node_id"),
                           "error": (error or "").strip().splitlines()[0][:300] if error else None}
    for key, value in sorted(params.items()):
        row[PARAM_PREFIX + key] = value
    return row


def rows_from_trials(trials) -> list[dict[str, Any]]:
    """Rows from Ray Trial objects (the driver, while the search runs)."""
    rows = []
    for trial in trials:
        error = None
        if trial.status == "ERROR":
            path = getattr(trial, "error_file", None)
            try:
                error = Path(path).read_text() if path else None
            except OSError:
                error = None
            error = _error_line(error) or "error"
        rows.append(trial_row(trial.trial_id, dict(trial.config), trial.status, trial.last_result, error))
    return rows


def _error_line(text: str | None) -> str | None:
    """The last line of a traceback, which names the exception."""
    if not text:
        return None
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else None


def table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows -> DataFrame sorted by trial id, with the fixed columns first."""
    frame = pd.DataFrame(rows)
    if frame.empty:  # no trial yet: the columns every reader expects, and no rows
        frame = pd.DataFrame(columns=list(trial_row("", {}, "PENDING", None)))
    else:
        frame = frame.sort_values("trial_id").reset_index(drop=True)
        for column in ("stopped_at_epoch", "epochs", "epochs_planned", "best_epoch"):
            frame[column] = frame[column].astype("Int64")
    return frame


def round_metrics(frame: pd.DataFrame, digits: int = SIGNIFICANT_DIGITS) -> pd.DataFrame:
    """A copy of a trial table with its metrics rounded to `digits` significant digits.

    Keras reports float32 values, so an accuracy of 0.925 arrives as 0.925000011920929; rounded to 6
    significant digits it is written as 0.925. Hyperparameters are left exact: they reproduce a trial.

    Args:
        frame: a trial table (columns METRIC_COLUMNS are rounded where present).
        digits: significant digits to keep.

    Returns:
        The rounded copy (same columns, same dtypes).
    """
    out = frame.copy()
    for column in METRIC_COLUMNS:
        if column in out.columns:
            values = pd.to_numeric(out[column], errors="coerce")
            out[column] = values.map(lambda v: float(f"{v:.{digits}g}") if math.isfinite(v) else v)
    return out


def write_trials_csv(frame: pd.DataFrame, experiment_dir: str | Path) -> str:
    """Write trials.csv atomically (a reader never sees half a file), metrics rounded, into a local
    folder or a URI; returns where it went."""
    from tune.experiment import ExperimentFolder

    return ExperimentFolder(experiment_dir).write_text(TRIALS_CSV, round_metrics(frame).to_csv(index=False))


def rank_by_score(frame: pd.DataFrame, best_first: bool = True) -> pd.DataFrame:
    """Trials by best val accuracy; ties go to more epochs, then the lower id. The one ranking of
    "best" that best_config.yaml, `gic-tune trials`, retrain and the progress lines share."""
    return frame.sort_values(["best_val_accuracy", "epochs", "trial_id"],
                             ascending=[not best_first, not best_first, True], na_position="last", kind="stable")


def best_row(frame: pd.DataFrame) -> dict[str, Any] | None:
    """The trial with the highest best val accuracy (ties: more epochs, then lower id)."""
    if frame.empty or frame["best_val_accuracy"].isna().all():
        return None
    return rank_by_score(frame.dropna(subset=["best_val_accuracy"])).iloc[0].to_dict()


def params_of(row: dict[str, Any]) -> dict[str, Any]:
    """The searched params of a row, as `{dotted key: value}` (NaN cells dropped)."""
    out = {}
    for key, value in row.items():
        if key.startswith(PARAM_PREFIX) and not (isinstance(value, float) and math.isnan(value)):
            out[key[len(PARAM_PREFIX):]] = value.item() if hasattr(value, "item") else value
    return out


def write_best_config(base: TrainConfig, frame: pd.DataFrame, experiment_dir: str | Path,
                      shown_path: str | None = None) -> Path | None:
    """best_config.yaml: a complete trainer config that `gic train --config` accepts as is."""
    from tune.space import apply_params

    row = best_row(frame)
    if row is None:
        return None
    cfg = apply_params(base, params_of(row))
    path = Path(experiment_dir) / BEST_CONFIG
    tmp = path.with_suffix(".yaml.tmp")
    save_config(cfg, tmp)
    header = (f"# best trial {row['trial_id']} ({row['status']}, {int(row['epochs'])} epochs): "
              f"best val_accuracy {row['best_val_accuracy']:.4f} at epoch {int(row['best_epoch'])}\n"
              f"# retrain: gic train --config {shown_path or path}\n")
    tmp.write_text(header + tmp.read_text())
    tmp.replace(path)
    return path


def load_trials(experiment_dir: str | Path) -> pd.DataFrame:
    """The trial table of an experiment folder, local or on a URI (no Ray needed).

    Reads each trial folder's params.json and the last line of result.json, and Ray's
    experiment state for statuses; trials without a state are reported as they look on disk.

    Raises:
        GicError: when the folder is not an experiment.
    """
    from tune.experiment import ExperimentFolder, driver_gone

    folder = ExperimentFolder(experiment_dir)
    entries = folder.entries()
    states = [(name, mtime) for name, is_dir, mtime in entries
              if not is_dir and name.startswith("experiment_state-") and name.endswith(".json")]
    if not states:
        raise GicError(f"{folder.location}: not an experiment folder (no experiment_state-*.json)")
    statuses = _statuses(folder, states)
    # Ray's snapshot says RUNNING for trials that were running when the driver stopped or was killed
    orphaned = driver_gone(folder)
    rows = []
    for name in sorted(name for name, is_dir, _ in entries if is_dir):
        params_text = folder.read_text(f"{name}/params.json")
        if params_text is None:
            continue
        params = json.loads(params_text)
        last = None
        results = parse_results(folder.read_text(f"{name}/{RESULTS}"))
        last = results[-1] if results else None
        trial_id = (last or {}).get("trial_id") or name.removeprefix("trial_")
        if statuses and trial_id not in statuses:
            continue  # a folder from an interrupted run that Ray's snapshot never recorded
        status, error = statuses.get(trial_id, ("TERMINATED" if last else "PENDING", None))
        if status == "ERROR":
            error = _error_line(folder.read_text(f"{name}/error.txt")) or error
        if orphaned and status in ("RUNNING", "PENDING", "PAUSED"):
            status = "INTERRUPTED"
        rows.append(trial_row(trial_id, params, status, last, error))
    return table(rows)


def _statuses(folder, states: list[tuple[str, float]]) -> dict[str, tuple[str, str | None]]:
    """{trial_id: (status, None)} from the newest experiment_state-*.json."""
    # By the start time in the name: a resumed run writes a new file, and syncing the experiment
    # folder also touches the old one, so modification times do not tell which is current.
    newest = max(states)[0]
    try:
        state = json.loads(folder.read_text(newest) or "")
    except (OSError, json.JSONDecodeError):
        return {}
    out = {}
    for entry in state.get("trial_data", []):
        try:
            trial = json.loads(entry[0]) if isinstance(entry[0], str) else entry[0]  # (trial, run metadata)
            out[trial["trial_id"]] = (trial["status"], None)
        except (KeyError, TypeError, json.JSONDecodeError, IndexError):
            continue
    return out
