"""The trial table as text: one name per hyperparameter, a terminal table that fits, CSV/JSON/Parquet.

    print(render(frame, "table"))        # rich table fitted to the terminal, columns left out named
    print(render(frame, "csv"))          # metrics rounded to 6 significant digits

`trial_view` is the one text form of the table: `gic-tune trials` prints it and the report shows it.
"""

from __future__ import annotations

import io
import math
from typing import Any

import pandas as pd
from gic.errors import GicError

from tune.results import PARAM_PREFIX, round_metrics
from tune.trials.selection import param_columns


FORMATS = ("table", "csv", "json", "parquet")
# The terminal table leaves columns out, in this order, when it does not fit; then hyperparameters
# from the last. trial, status and best_val_acc always stay.
DROP_ORDER = ("node", "wall_s", "last_val_acc", "epochs")
TEXT_COLUMNS = ("trial", "status", "node")  # always left-aligned; see text_columns
STATUS_WIDTH = 30  # a longer status (an error message) wraps


def param_name(column: str) -> str:
    """The one name of a hyperparameter everywhere: its key in the search space (and in best_config.yaml).

    The terminal table, the report's table and plots, and `--sort` all use it.

    Args:
        column: a trial-table column, `param.<key>`.

    Returns:
        The dotted key: `param.model.dropout_rate` -> `model.dropout_rate`,
        `param.phase1.learning_rate` -> `phase1.learning_rate`; other columns unchanged.
    """
    return column[len(PARAM_PREFIX):] if column.startswith(PARAM_PREFIX) else column


def _cell(value: Any) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e-2 or abs(value) >= 1e4 else f"{value:.4g}"
    return str(value)


def _acc(value: Any) -> str:
    return f"{value:.4f}" if pd.notna(value) else "-"


def trial_view(frame: pd.DataFrame) -> pd.DataFrame:
    """The trial table as text, as `gic-tune trials` prints it and the report shows it.

    Args:
        frame: a trial table (trial_table, select).

    Returns:
        One row per trial, every cell a string: trial, status (in words), epochs (run/planned),
        best_val_acc and last_val_acc (4 decimals), one column per hyperparameter named by
        param_name (4 significant digits), wall_s, node.
    """
    params = param_columns(frame)
    return pd.DataFrame({
        "trial": [str(v) for v in frame["trial_id"]],
        "status": list(frame["status_detail"] if "status_detail" in frame else frame["status"]),
        "epochs": [f"{_cell(e)}/{_cell(p)}" for e, p in zip(frame["epochs"], frame["epochs_planned"])],
        "best_val_acc": [_acc(v) for v in frame["best_val_accuracy"]],
        "last_val_acc": [_acc(v) for v in frame["last_val_accuracy"]],
        **{param_name(p): [_cell(v) for v in frame[p]] for p in params},
        "wall_s": [f"{v:.1f}" if pd.notna(v) else "-" for v in frame["wall_time_s"]],
        "node": [_cell(v) for v in frame["node_ip"]],
    }, columns=["trial", "status", "epochs", "best_val_acc", "last_val_acc", *map(param_name, params),
                "wall_s", "node"])


def text_columns(view: pd.DataFrame) -> list[str]:
    """The columns of a trial_view that hold words rather than numbers (aligned left when shown).

    Args:
        view: trial_view's table.

    Returns:
        trial, status, node and every hyperparameter whose values are not all numbers.
    """
    def number(text: str) -> bool:
        try:
            float(text)
            return True
        except ValueError:
            return text == "-"

    return [c for c in view.columns if c in TEXT_COLUMNS or c != "epochs" and not view[c].map(number).all()]


def terminal_width() -> int:
    """The width to fit a table to: the terminal's, else the COLUMNS variable, else 80 (rich's rule)."""
    from rich.console import Console

    return Console().width


def _rich_table(view: pd.DataFrame):
    from rich import box
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True)
    text = text_columns(view)
    for column in view.columns:
        header = _two_lines(column)
        if column == "status":
            table.add_column(header, max_width=STATUS_WIDTH, overflow="fold")
        else:
            table.add_column(header, no_wrap=True, justify="left" if column in text else "right")
    for row in view.itertuples(index=False):
        table.add_row(*row)
    return table


def _two_lines(name: str) -> str:
    """A long header on two lines, so that its column is as narrow as its numbers: a dotted key after
    its first `.` (`phase1.` over `learning_rate`), another name longer than 12 characters after its
    last `_`."""
    if "." in name:
        return name.replace(".", ".\n", 1)
    if len(name) > 12 and "_" in name:
        head, tail = name.rsplit("_", 1)
        return f"{head}_\n{tail}"
    return name


def _text(renderable, width: int) -> str:
    """A rich renderable as plain text (no colour, no markup: an error message is shown as it is)."""
    from rich.console import Console

    console = Console(file=io.StringIO(), width=width, color_system=None, markup=False, emoji=False,
                      highlight=False, soft_wrap=False)
    console.print(renderable)
    return "\n".join(line.rstrip() for line in console.file.getvalue().splitlines())


def _table_width(table) -> int:
    from rich.console import Console
    from rich.measure import Measurement

    console = Console(file=io.StringIO(), width=100_000, color_system=None)
    return Measurement.get(console, console.options, table).maximum


def human_table(frame: pd.DataFrame, width: int | None = None) -> str:
    """The terminal view: a table that fits `width`, leaving out low-priority columns when needed.

    Columns go in the order of DROP_ORDER (node, wall time, last val accuracy, epochs), then the
    hyperparameters from the last; trial, status and best val accuracy always stay. One line after
    the table names the columns left out.

    Args:
        frame: a trial table (trial_table, select).
        width: characters per line; default the terminal's (terminal_width, which honours COLUMNS).

    Returns:
        The table as text; for no rows, one line saying why (no trial yet, or none with the
        statuses asked for).
    """
    if frame.empty:
        return _nothing_selected(frame)
    width = width or terminal_width()
    view = trial_view(frame)
    params = [param_name(p) for p in param_columns(frame)]
    droppable = [*DROP_ORDER, *reversed(params)]
    left_out: list[str] = []
    table = _rich_table(view)
    while _table_width(table) > width and droppable:
        left_out.append(droppable.pop(0))
        table = _rich_table(view.drop(columns=left_out))
    text = _text(table, width)
    if left_out:
        text += (f"\n({len(left_out)} column{'s' if len(left_out) > 1 else ''} left out to fit {width} characters: "
                 f"{', '.join(left_out)}; widen the terminal, set COLUMNS, or use --format csv)")
    return text


def _nothing_selected(frame: pd.DataFrame) -> str:
    before = frame.attrs.get("selected_from") or {}
    wanted = frame.attrs.get("status_filter") or []
    if not before or not wanted:
        return "(no trials yet)"
    counts = ", ".join(f"{n} {s}" for s, n in sorted(before.items()))
    return f"(no trial has status {' or '.join(wanted)}; the {sum(before.values())} trials: {counts})"


def render(frame: pd.DataFrame, fmt: str, human: bool = True) -> str | bytes:
    """The table in a format: `table` (for a terminal), `csv`, `json` (records) or `parquet` (bytes).

    Args:
        frame: a trial table, or list_experiments' table.
        fmt: one of FORMATS.
        human: for `table`, the terminal view (human_table); False: every column as pandas prints it.

    Returns:
        Text, or bytes for parquet. Metrics are rounded to SIGNIFICANT_DIGITS (round_metrics).

    Raises:
        GicError: an unknown format.
    """
    if fmt == "table":
        return human_table(frame) if human else round_metrics(frame).to_string(index=False)
    frame = round_metrics(frame)
    if fmt == "csv":
        return frame.to_csv(index=False)
    if fmt == "json":
        return frame.to_json(orient="records", indent=1) + "\n"
    if fmt == "parquet":
        buffer = io.BytesIO()
        out = frame.copy()
        for column in out.columns:  # mixed-type object columns (a categorical of None and str) as text
            if out[column].dtype == object and out[column].map(type).nunique() > 1:
                out[column] = out[column].map(lambda v: None if v is None or (isinstance(v, float) and math.isnan(v)) else str(v))
        out.to_parquet(buffer, index=False)
        return buffer.getvalue()
    raise GicError(f"--format {fmt}: expected one of {', '.join(FORMATS)}")
