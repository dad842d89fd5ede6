"""An experiment folder as Optuna trials: for the report's SQLite study and for warm starts.

    trials, dists, skipped = optuna_trials("results/demo")          # FrozenTrial list, no Ray needed
    gic-tune run --warm-start results/demo --name demo2             # the new study starts with them

Each trial keeps the state the search gave it: finished -> COMPLETE with its last val_accuracy (what
Ray's OptunaSearch tells the study), stopped by ASHA -> PRUNED with its per-epoch values as
intermediate values, errored -> FAIL. Running and pending trials are left out. A warm start adds
these trials to the new search's Optuna study before the first suggestion, so TPE models them from
the start (they also count towards `n_startup_trials`). Ray's `points_to_evaluate` +
`evaluated_rewards` would do the same but record every old trial as COMPLETE, stopped ones included,
which is the mistake tune.search avoids.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from gic.errors import GicError

from tune.experiment import WARM_START_FILE
from tune.results import params_of
from tune.trials import require_experiment, search_config, trial_curves, trial_table



def _optuna():
    import optuna

    return optuna


def space_distributions(cfg: dict[str, Any]) -> dict[str, Any]:
    """The Optuna distributions of a search_config.yaml's `space` section."""
    from tune.space import Dimension

    out = {}
    for name, fields in (cfg.get("space") or {}).items():
        fields = dict(fields)
        if "choices" in fields:
            fields["choices"] = tuple(fields["choices"])
        elif fields.get("kind") in ("float", "int"):
            # search_config.yaml leaves out falsy fields, so a bound of 0 is missing there.
            fields.setdefault("low", 0)
            fields.setdefault("high", 0)
        out[name] = Dimension(name=name, **fields).distribution()
    return out


def _inferred_distributions(frame) -> dict[str, Any]:
    """Distributions from the values seen, for a folder without search_config.yaml."""
    dist = _optuna().distributions
    out = {}
    for column in [c for c in frame.columns if c.startswith("param.")]:
        values = [v for v in frame[column].tolist() if not (isinstance(v, float) and math.isnan(v))]
        if not values:
            continue
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        name = column[len("param."):]
        if numeric and all(float(v).is_integer() for v in values) and all(isinstance(v, int) for v in values):
            out[name] = dist.IntDistribution(int(min(values)), max(int(max(values)), int(min(values)) + 1))
        elif numeric:
            low, high = float(min(values)), float(max(values))
            out[name] = dist.FloatDistribution(low, high if high > low else low + 1e-12)
        else:
            out[name] = dist.CategoricalDistribution(sorted(set(values), key=repr))
    return out


def trial_records(path: str | Path) -> list[dict[str, Any]]:
    """The ended trials of an experiment as plain records (state, value, params, intermediate values).

    Records, not FrozenTrials, so that they can be written to warm_start.json and read back.
    """
    path = require_experiment(path)
    frame = trial_table(path)
    curves = trial_curves(path)
    records = []
    for row in frame.to_dict("records"):
        state = {"finished": "COMPLETE", "stopped": "PRUNED", "errored": "FAIL"}.get(row["status"])
        if state is None:
            continue
        curve = curves.get(row["trial_id"])
        steps: dict[int, float] = {}  # the objective per epoch: the best val accuracy so far (tune.config.METRIC)
        if curve is not None and "val_accuracy" in curve:
            best = None
            for step, value in zip(curve["training_iteration"], curve["val_accuracy"]):
                if value is not None and math.isfinite(float(value)):
                    best = float(value) if best is None else max(best, float(value))
                    steps[int(step)] = best
        value = row["best_val_accuracy"] if state != "FAIL" else None
        if value is None or (isinstance(value, float) and math.isnan(value)):
            value = steps[max(steps)] if steps and state != "FAIL" else None
            if value is None and state != "FAIL":
                state = "FAIL"  # ended without a single score: nothing for TPE to learn
        records.append({"ray_trial_id": row["trial_id"], "state": state, "value": value,
                        "params": params_of(row), "intermediate_values": steps,
                        "status_detail": row["status_detail"], "epochs": int(row["epochs"] or 0),
                        "best_val_accuracy": None if row["best_val_accuracy"] is None or
                        (isinstance(row["best_val_accuracy"], float) and math.isnan(row["best_val_accuracy"]))
                        else float(row["best_val_accuracy"]),
                        "wall_time_s": row.get("wall_time_s")})
    return records


def to_frozen(record: dict[str, Any], distributions: dict[str, Any], source: str | None = None):
    """A record as an Optuna FrozenTrial over `distributions`; None when its params do not fit them."""
    optuna = _optuna()
    params = record["params"]
    if not params or not set(params) <= set(distributions):  # a conditional space: a subset is a trial
        return None
    attrs = {"ray_trial_id": record["ray_trial_id"], "status": record.get("status_detail", ""),
             "epochs": record.get("epochs"), "best_val_accuracy": record.get("best_val_accuracy")}
    if source:
        attrs["warm_start_from"] = source
    state = optuna.trial.TrialState[record["state"]]
    try:
        return optuna.trial.create_trial(
            state=state, value=record["value"] if state != optuna.trial.TrialState.FAIL else None,
            params=params, distributions={k: distributions[k] for k in params},
            intermediate_values={int(k): float(v) for k, v in record["intermediate_values"].items()},
            user_attrs=attrs)
    except ValueError:  # a value outside the distribution (create_trial checks every param)
        return None


def optuna_trials(path: str | Path) -> tuple[list[Any], dict[str, Any], int]:
    """(FrozenTrials in trial-id order, distributions, number of trials left out) of an experiment.

    A warm-started experiment's inherited trials come first, as they did in its study.
    """
    path = require_experiment(path)
    cfg = search_config(path)
    distributions = space_distributions(cfg)
    records = trial_records(path)
    if not distributions:
        distributions = _inferred_distributions(trial_table(path))
    inherited = []
    warm_file = path / WARM_START_FILE
    if warm_file.is_file():
        doc = json.loads(warm_file.read_text())
        inherited = [(r, doc.get("source")) for r in doc.get("trials", [])]
    frozen, skipped = [], 0
    for record, source in [*inherited, *((r, None) for r in records)]:
        trial = to_frozen(record, distributions, source)
        if trial is None:
            skipped += 1
        else:
            frozen.append(trial)
    return frozen, distributions, skipped


def warm_start_searcher(searcher, source: str | Path, spec, experiment_path: str | Path) -> str:
    """Add a previous experiment's ended trials to a new search's Optuna study; return a progress line.

    Trials whose params do not fit the new search space (a dimension added, removed or narrowed)
    are left out. The trials added are recorded in the new experiment's warm_start.json.

    Raises:
        GicError: `source` is not an experiment, or none of its trials fits the new space.
    """
    source = Path(source).resolve()
    records = trial_records(source)
    distributions = spec.space.distributions()
    kept = [(r, to_frozen(r, distributions, str(source))) for r in records]
    kept = [(r, t) for r, t in kept if t is not None]
    if not kept:
        raise GicError(f"--warm-start {source}: none of its {len(records)} ended trials fits this search space "
                       f"({', '.join(sorted(distributions))})")
    searcher.study.add_trials([t for _, t in kept])
    old_cfg = search_config(source)
    note = ""
    if old_cfg.get("trainer") and (old_cfg["trainer"].get("phase1", {}).get("epochs"),
                                   old_cfg["trainer"].get("phase2", {}).get("epochs")) != (
            spec.trainer.phase1.epochs, spec.trainer.phase2.epochs):
        note = " (note: its epoch budget differs from this search's)"
    from tune.experiment import ExperimentFolder

    # on a local folder or a URI alike: report and --resume read it from the experiment
    ExperimentFolder(experiment_path).write_json(WARM_START_FILE, {"source": str(source), "trials": [r for r, _ in kept]})
    states = {}
    for r, _ in kept:
        states[r["state"]] = states.get(r["state"], 0) + 1
    counts = ", ".join(f"{v} {k}" for k, v in sorted(states.items()))
    return (f"warm start: {len(kept)} trials of {source} added to the study ({counts}); "
            f"{len(records) - len(kept)} left out{note}")
