"""An experiment folder as data: the trial table, per-epoch curves, the search's settings and rungs.

    frame = trial_table("results/demo")          # one row per trial, with status_detail
    curves = trial_curves("results/demo")        # {trial_id: DataFrame of epochs}
    rungs = asha_rungs("results/demo")           # [1.0, 2.0]: where ASHA compares trials

Everything here reads files that Ray writes while the search runs (each trial's params.json and
result.json, the experiment_state snapshot) plus the search's own search_config.yaml and asha.json,
so it works during a run, after it, and on a folder copied or moved to another machine.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
from gic.errors import GicError

from tune.experiment import SCHEDULER_STATE, SEARCH_CONFIG
from tune.results import load_trials


def is_experiment(path: str | Path) -> bool:
    """True when `path` holds a Ray Tune experiment (its experiment_state snapshot)."""
    path = Path(path)
    return path.is_dir() and any(path.glob("experiment_state-*.json"))


def require_experiment(path: str | Path) -> Path:
    """The experiment folder, or a one-line GicError saying what was expected."""
    path = Path(path)
    if not path.exists():
        raise GicError(f"{path}: no such folder; expected an experiment folder such as results/demo")
    if not is_experiment(path):
        raise GicError(f"{path}: not an experiment folder (no experiment_state-*.json); "
                       "expected the results/<name> folder of a gic-tune run")
    return path


def search_config(path: str | Path) -> dict[str, Any]:
    """search_config.yaml of the experiment (command, search settings, space, trainer); {} if absent."""
    import yaml

    file = Path(path) / SEARCH_CONFIG
    if not file.is_file():
        return {}
    try:
        return yaml.safe_load(file.read_text()) or {}
    except yaml.YAMLError:
        return {}


def trial_table(path: str | Path) -> pd.DataFrame:
    """The trial table of an experiment folder, with a readable `status_detail` column.

    The columns are tune.results' (trial_id, status, stopped_at_epoch, epochs, best/last val accuracy,
    wall_time_s, node_ip, node_id, error, param.*) plus `status_detail`: "stopped by ASHA at epoch 2",
    "errored: ValueError: ...".
    """
    frame = load_trials(require_experiment(path))
    if frame.empty:
        return frame
    cut = _cut_by_time_budget(path, frame)
    frame.insert(2, "status_detail", [_detail(row, row["trial_id"] in cut) for row in frame.to_dict("records")])
    return frame


def _cut_by_time_budget(path: str | Path, frame: pd.DataFrame) -> set[str]:
    """Trials stopped before their end that ASHA did not stop, when the search's time budget ran out."""
    from tune.experiment import read_driver

    if not (read_driver(path) or {}).get("time_budget_reached"):
        return set()
    try:
        asha = json.loads((Path(path) / SCHEDULER_STATE).read_text()).get("stops", {})
    except (OSError, ValueError, AttributeError):
        asha = {}
    return set(frame.loc[(frame["status"] == "stopped") & ~frame["trial_id"].isin(list(asha)), "trial_id"])


def _detail(row: dict[str, Any], cut_by_time_budget: bool = False) -> str:
    status = row["status"]
    if status == "stopped":
        by = "the time budget" if cut_by_time_budget else "ASHA"
        return f"stopped by {by} at epoch {int(row['stopped_at_epoch'])}"
    if status == "errored":
        return f"errored: {row['error']}" if isinstance(row.get("error"), str) else "errored"
    if status == "finished":
        return f"finished ({int(row['epochs'])} epochs)"
    if status == "running":
        return f"running (epoch {int(row['epochs'])})" if row.get("epochs") else "running"
    if status == "interrupted":
        return f"interrupted (epoch {int(row['epochs'])})" if row.get("epochs") else "interrupted"
    return status


def experiment_started(path: str | Path) -> datetime | None:
    """When the experiment started: the oldest experiment_state-<date>.json name."""
    stamps = []
    for file in Path(path).glob("experiment_state-*.json"):
        match = re.search(r"(\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2})", file.name)
        if match:
            stamps.append(datetime.strptime(match.group(1), "%Y-%m-%d_%H-%M-%S"))
    return min(stamps) if stamps else None


def trial_curves(path: str | Path) -> dict[str, pd.DataFrame]:
    """Per trial, its per-epoch results (epoch, phase, accuracy, val_accuracy, losses...).

    Read from each trial's result.json (one JSON line per reported epoch). A trial resumed from a
    checkpoint reports some epochs twice: the last report of an epoch wins.
    """
    out: dict[str, pd.DataFrame] = {}
    for result_file in sorted(Path(path).glob("*/result.json")):
        rows = []
        for line in result_file.read_text().splitlines():
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    continue  # a line being written right now
        if not rows:
            continue
        frame = pd.DataFrame(rows)
        if "training_iteration" not in frame:
            continue
        frame = frame.drop_duplicates("training_iteration", keep="last").sort_values("training_iteration")
        trial_id = str(frame["trial_id"].iloc[-1]) if "trial_id" in frame else result_file.parent.name
        out[trial_id] = frame.reset_index(drop=True)
    return out


def asha_rungs(path: str | Path, cfg: dict[str, Any] | None = None) -> list[float]:
    """ASHA's rung milestones, in the search's budget units (`rung_budget`): from asha.json, else from
    the search settings (tune.analysis.milestones: where Ray's ASHA places them)."""
    state_file = Path(path) / SCHEDULER_STATE
    if state_file.is_file():
        try:
            rungs = [float(r.get("at", r.get("epoch"))) for r in json.loads(state_file.read_text()).get("rungs", [])]
            if rungs:
                return sorted(set(rungs))
        except (ValueError, KeyError, TypeError, AttributeError, json.JSONDecodeError):
            pass
    cfg = cfg if cfg is not None else search_config(path)
    search, trainer = cfg.get("search") or {}, cfg.get("trainer") or {}
    budget_end = max_t(cfg)
    grace, factor = float(search.get("grace_period", 1)), float(search.get("reduction_factor", 2))
    if not trainer or budget_end <= 0:
        return []
    from tune.analysis import milestones

    return milestones(grace, factor, budget_end)


def rung_budget(path: str | Path, cfg: dict[str, Any] | None = None) -> str:
    """What the rungs measure: "compute" (gic.cost units) or "epoch" (searches before budgets existed)."""
    cfg = cfg if cfg is not None else search_config(path)
    return str((cfg.get("search") or {}).get("budget", "epoch"))


def max_t(cfg: dict[str, Any]) -> float:
    """The search's max_t (ASHA's budget at the end) from search_config.yaml, through the same
    SearchSpec as the search: E1 + E2 epochs, or their compute (gic.cost units); 0.0 when unknown."""
    if rung_budget("", cfg) == "epoch":
        e1, e2 = phase_epochs(cfg)
        return e1 + e2
    try:
        from tune.config import SearchSettings, SearchSpec
        from tune.space import parse_space

        from gic.config import TrainConfig

        trainer = TrainConfig.model_validate(cfg["trainer"])
        space = parse_space(_space_yaml(cfg.get("space") or {}), trainer)
        # max_t depends on the budget alone of the search settings; the others may be an older
        # version's (an experiment from before a setting was renamed or removed).
        search = SearchSettings.model_validate({"budget": rung_budget("", cfg)})
        return SearchSpec(trainer=trainer, space=space, search=search, source="").max_t
    except Exception:  # noqa: BLE001 - an old or hand-edited file: no rungs rather than no report
        return 0.0


def _space_yaml(recorded: dict[str, Any]) -> dict[str, Any]:
    """search_config.yaml's `space` (one entry per dimension, as recorded) -> a `space:` section."""
    out: dict[str, Any] = {}
    for name, dim in recorded.items():
        leaf = {"choices": list(dim["choices"])} if dim.get("kind") == "categorical" else \
            {k: dim[k] for k in ("low", "high", "log", "step") if k in dim}
        if dim.get("kind") == "int":
            leaf["type"] = "int"
        out[name] = leaf
    return out


def phase_epochs(cfg: dict[str, Any]) -> tuple[int, int]:
    """(E1, E2) of the search's trainer config ((0, 0) when unknown)."""
    trainer = cfg.get("trainer") or {}
    return int((trainer.get("phase1") or {}).get("epochs", 0)), int((trainer.get("phase2") or {}).get("epochs", 0))
