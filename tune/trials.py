"""Read an experiment folder as it is on disk: the trial table, per-epoch curves, the search's settings.

    frame = trial_table("results/demo")                      # one row per trial, no Ray needed
    frame = select(frame, sort="best", top=5, status=["finished"])
    print(render(frame, "table"))
    curves = trial_curves("results/demo")                    # {trial_id: DataFrame of epochs}
    print(experiments_table(list_experiments("results")))    # one line per experiment

Everything here reads files that Ray writes while the search runs (each trial's params.json and
result.json, the experiment_state snapshot) plus the search's own search_config.yaml and asha.json,
so it works during a run, after it, and on a folder copied or moved to another machine.
"""

from __future__ import annotations

import io
import json
import math
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
from gic.errors import GicError

from tune.results import PARAM_PREFIX, load_trials, rank_by_score, round_metrics
from tune.experiment import SCHEDULER_STATE, SEARCH_CONFIG

STATUSES = ("running", "pending", "paused", "interrupted", "stopped", "finished", "errored")
FORMATS = ("table", "csv", "json", "parquet")
# Short names accepted by --sort, besides any column name or hyperparameter name.
SORT_ALIASES = {"best": "best_val_accuracy", "last": "last_val_accuracy", "id": "trial_id",
                "wall": "wall_time_s", "time": "wall_time_s", "node": "node_ip"}
DESCENDING_BY_DEFAULT = {"best_val_accuracy", "last_val_accuracy"}  # best first
# The terminal table leaves columns out, in this order, when it does not fit; then hyperparameters
# from the last. trial, status and best_val_acc always stay.
DROP_ORDER = ("node", "wall_s", "last_val_acc", "epochs")
TEXT_COLUMNS = ("trial", "status", "node")  # always left-aligned; see text_columns
STATUS_WIDTH = 30  # a longer status (an error message) wraps


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


def param_columns(frame: pd.DataFrame) -> list[str]:
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


# ------------------------------------------------------------------------------ experiments list
def experiment_started(path: str | Path) -> datetime | None:
    """When the experiment started: the oldest experiment_state-<date>.json name."""
    stamps = []
    for file in Path(path).glob("experiment_state-*.json"):
        match = re.search(r"(\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2})", file.name)
        if match:
            stamps.append(datetime.strptime(match.group(1), "%Y-%m-%d_%H-%M-%S"))
    return min(stamps) if stamps else None


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


# ------------------------------------------------------------------------------------- curves
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
    max_t = _max_t(cfg)
    grace, factor = float(search.get("grace_period", 1)), float(search.get("reduction_factor", 2))
    if not trainer or max_t <= 0:
        return []
    from tune.analysis import milestones

    return milestones(grace, factor, max_t)


def rung_budget(path: str | Path, cfg: dict[str, Any] | None = None) -> str:
    """What the rungs measure: "compute" (gic.cost units) or "epoch" (searches before budgets existed)."""
    cfg = cfg if cfg is not None else search_config(path)
    return str((cfg.get("search") or {}).get("budget", "epoch"))


def _max_t(cfg: dict[str, Any]) -> float:
    """The search's max_t from search_config.yaml, through the same SearchSpec as the search."""
    if rung_budget("", cfg) == "epoch":
        e1, e2 = phase_epochs(cfg)
        return e1 + e2
    try:
        from tune.config import SearchSettings, SearchSpec
        from tune.space import parse_space

        from gic.config import TrainConfig

        trainer = TrainConfig.model_validate(cfg["trainer"])
        space = parse_space(_space_yaml(cfg.get("space") or {}), trainer)
        return SearchSpec(trainer=trainer, space=space, search=SearchSettings.model_validate(cfg["search"]),
                          source="").max_t
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
