"""Which trials, in which order: `gic-tune trials --status/--sort/--top/--reverse`.

    frame = select(trial_table("results/demo"), sort="best", top=5, status=["finished"])
"""

from __future__ import annotations

import pandas as pd
from gic.errors import GicError

from tune.results import PARAM_PREFIX, rank_by_score


STATUSES = ("running", "pending", "paused", "interrupted", "stopped", "finished", "errored")
# Short names accepted by --sort, besides any column name or hyperparameter name.
SORT_ALIASES = {"best": "best_val_accuracy", "last": "last_val_accuracy", "id": "trial_id",
                "wall": "wall_time_s", "time": "wall_time_s", "node": "node_ip"}
DESCENDING_BY_DEFAULT = {"best_val_accuracy", "last_val_accuracy"}  # best first


def param_columns(frame: pd.DataFrame) -> list[str]:
    """The hyperparameter columns of a trial table (`param.<key>`), in the table's order."""
    return [c for c in frame.columns if c.startswith(PARAM_PREFIX)]


def sort_column(frame: pd.DataFrame, key: str) -> str:
    """Resolve a --sort key: a column, an alias (best, last, wall, id) or a hyperparameter name."""
    for candidate in (key, SORT_ALIASES.get(key, ""), PARAM_PREFIX + key):
        if candidate in frame.columns:
            return candidate
    params = [c[len(PARAM_PREFIX):] for c in param_columns(frame)]
    matches = [p for p in params if p.rsplit(".", 1)[-1] == key]
    if len(matches) == 1:
        return PARAM_PREFIX + matches[0]
    known = sorted(SORT_ALIASES) + [c for c in frame.columns if not c.startswith(PARAM_PREFIX)] + params
    raise GicError(f"--sort {key}: no such column; expected one of {', '.join(dict.fromkeys(known))}")


def select(frame: pd.DataFrame, sort: str | None = None, top: int | None = None,
           status: list[str] | None = None, reverse: bool = False) -> pd.DataFrame:
    """Filter by status, sort (val accuracies best first, other columns ascending), keep the top N.

    Args:
        frame: a trial table (trial_table).
        sort: a column, an alias (best, last, wall, id) or a hyperparameter; default best.
        top: keep the first N rows after sorting.
        status: keep only these statuses (see STATUSES).
        reverse: reverse the order.

    Returns:
        The selected rows. `frame.attrs["selected_from"]` holds the status counts of the table before
        filtering and `frame.attrs["status_filter"]` the statuses asked for, so that an empty result
        can say why (human_table).

    Raises:
        GicError: an unknown status or sort key.
    """
    before = frame["status"].value_counts().to_dict() if not frame.empty else {}
    if status:
        unknown = [s for s in status if s not in STATUSES]
        if unknown:
            raise GicError(f"--status {unknown[0]}: expected one of {', '.join(STATUSES)}")
        frame = frame[frame["status"].isin(status)] if not frame.empty else frame
    if frame.empty:
        return _with_selection(frame, before, status)
    column = sort_column(frame, sort or "best")
    ascending = column not in DESCENDING_BY_DEFAULT
    if reverse:
        ascending = not ascending
    if column == "best_val_accuracy":
        frame = rank_by_score(frame, best_first=not ascending)
    else:
        frame = frame.sort_values([column, "trial_id"], ascending=[ascending, True], na_position="last", kind="stable")
    if top is not None:
        frame = frame.head(top)
    return _with_selection(frame.reset_index(drop=True), before, status)


def _with_selection(frame: pd.DataFrame, before: dict[str, int], status: list[str] | None) -> pd.DataFrame:
    frame = frame.copy()
    frame.attrs["selected_from"] = {str(k): int(v) for k, v in before.items()}
    frame.attrs["status_filter"] = list(status or [])
    return frame
