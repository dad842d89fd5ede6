"""How a search ended, in one object and one line: the summary the driver returns and prints.

    summary = finish(path, spec, grid, searcher, scheduler, wall_s)   # writes asha.json, optuna_trials.csv
    summary.state = end_state(summary.trials, interrupted)
    print(final_line(summary))     # "done in 57 s: 2 finished, 10 stopped; best 0.9100 (ab12cd34)" + files
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from typing import Any

from tune.experiment import BEST_CONFIG, OPTUNA_TRIALS, SCHEDULER_STATE, TRIALS_CSV, ExperimentFolder
from tune.schedulers import PruningAwareOptunaSearch, ReplayASHA


@dataclass
class SearchSummary:
    """How a search ended: its folder, trial table, ASHA stops, Optuna states, wall time (s), best trial, state."""
    experiment_path: str
    trials: Any  # DataFrame: the trial table (tune.results)
    scheduler_stops: dict[str, int] = field(default_factory=dict)
    optuna_states: dict[str, str] = field(default_factory=dict)  # ray trial id -> optuna state
    wall_s: float = 0.0
    best: dict[str, Any] | None = None
    interrupted: bool = False  # Ctrl-C: saved by Ray, continue with --resume
    state: str = "finished"  # finished | failed (every trial errored) | interrupted | nothing-to-resume
    written: list[str] = field(default_factory=list)  # the experiment's output files that exist


def end_state(frame, interrupted: bool) -> str:
    """How a search ended: interrupted, failed (every trial errored) or finished."""
    if interrupted:
        return "interrupted"
    if not frame.empty and bool((frame["status"] == "errored").all()):
        return "failed"
    return "finished"


def written(path: str) -> list[str]:
    """The experiment's summary files that exist (a summary never names a file it did not write)."""
    folder = ExperimentFolder(path)
    return [folder.uri(name) for name in (TRIALS_CSV, BEST_CONFIG) if folder.is_file(name)]


def finish(path: str, spec, searcher, scheduler, wall_s: float) -> SearchSummary:
    """Write asha.json (the scheduler's stops and rungs, added to an earlier run's) and optuna_trials.csv,
    and summarize the trial table that tune.callbacks.TrialsTableWriter wrote."""
    import pandas as pd

    from tune.results import best_row, load_trials

    folder = ExperimentFolder(path)  # a local folder or a URI alike
    previous = folder.read_json(SCHEDULER_STATE) or {}
    stops: dict[str, int] = dict(previous.get("stops", {}))
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
            folder.write_text(OPTUNA_TRIALS, pd.DataFrame(rows).sort_values("number").to_csv(index=False))
    text = folder.read_text(TRIALS_CSV)
    frame = pd.read_csv(io.StringIO(text)) if text is not None else load_trials(path)
    return SearchSummary(experiment_path=path, trials=frame, scheduler_stops=stops, optuna_states=states,
                         wall_s=wall_s, best=best_row(frame) if not frame.empty else None)


def final_line(summary: SearchSummary) -> str:
    """The search's last line: how it ended, the counts by status, the best trial, and its files."""
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
