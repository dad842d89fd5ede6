"""The experiments under a folder, one line each: `gic-tune trials results/`.

    print(experiments_table(list_experiments("results")))
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from gic.errors import GicError

from tune.results import load_trials
from tune.trials.read import experiment_started, is_experiment
from tune.trials.selection import STATUSES
from tune.trials.view import terminal_width


def list_experiments(root: str | Path) -> pd.DataFrame:
    """One row per experiment under `root`: name, date, trial counts by status, best val accuracy.

    Raises:
        GicError: `root` is missing or holds no experiment.
    """
    root = Path(root)
    if not root.is_dir():
        raise GicError(f"{root}: no such folder; give an experiment folder or a folder of experiments")
    rows = []
    for folder in sorted(p for p in root.iterdir() if is_experiment(p)):
        try:
            frame = load_trials(folder)
        except (GicError, OSError, ValueError, json.JSONDecodeError) as err:
            rows.append({"name": folder.name, "date": _date(folder), "trials": 0, "counts": f"unreadable ({err})"})
            continue
        counts = frame["status"].value_counts().to_dict() if not frame.empty else {}
        best = frame["best_val_accuracy"].max() if not frame.empty else float("nan")
        best_id = frame.loc[frame["best_val_accuracy"].idxmax(), "trial_id"] if pd.notna(best) else None
        rows.append({"name": folder.name, "date": _date(folder), "trials": len(frame),
                     **{s: int(counts.get(s, 0)) for s in STATUSES},
                     "best_val_accuracy": best, "best_trial": best_id, "path": str(folder)})
    if not rows:
        raise GicError(f"{root}: not an experiment folder and no experiment under it (no experiment_state-*.json)")
    return pd.DataFrame(rows)


def _date(folder: Path) -> str:
    started = experiment_started(folder)
    return started.strftime("%Y-%m-%d %H:%M") if started else "-"


def experiments_table(frame: pd.DataFrame, width: int | None = None) -> str:
    """One line per experiment (name, date, trial counts, best), each cut to `width`.

    Args:
        frame: list_experiments' table.
        width: characters per line; default the terminal's (terminal_width). A longer line ends
            in an ellipsis rather than wrapping.

    Returns:
        The lines as text.
    """
    from rich.text import Text

    width = width or terminal_width()
    names = [str(n) for n in frame["name"]]
    pad = max(map(len, names), default=0)
    lines = []
    for name, row in zip(names, frame.to_dict("records")):
        counts = ", ".join(f"{row[s]} {s}" for s in STATUSES if row.get(s))
        best = (f"best {row['best_val_accuracy']:.4f} ({row['best_trial']})" if pd.notna(row.get("best_val_accuracy"))
                else "no score yet")
        line = Text(f"{name:<{pad}} {row['date']:<16} {row['trials']:>3} trials: {counts or row.get('counts', '-')}; {best}")
        line.truncate(width, overflow="ellipsis")
        lines.append(line.plain)
    return "\n".join(lines)
