"""The report of an experiment: plots, summary.md, a self-contained report.html and an Optuna study.

    gic-tune report results/demo          # -> results/demo/report/{report.html,summary.md,*.png}
                                          #    and results/demo/optuna_study.db

What it shows (the tuning playbook's questions): how every trial learned over both phases and where
ASHA cut it; each hyperparameter against the best val accuracy, to see bounds that are too narrow
or too wide; parallel coordinates; which hyperparameters mattered (Optuna's importance evaluators);
and the numbers to quote: counts, best trial, compute time, the command that reproduces the search.

Everything is read from the folder (tune.trials), so a folder copied from a cluster reports the same
on a laptop with no Ray running. The PNGs are also embedded in report.html as base64, so the HTML
file alone is enough to share.
"""

from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from gic.errors import GicError

from tune.results import PARAM_PREFIX, best_row, params_of
from tune.trials import (asha_rungs, experiment_started, param_columns, phase_epochs, require_experiment,
                         search_config, trial_curves, trial_table)

STUDY_DB = "optuna_study.db"
REPORT_DIR = "report"
STATUS_STYLE = {"finished": ("tab:blue", "-"), "stopped": ("tab:orange", "--"), "errored": ("tab:red", ":"),
                "running": ("tab:green", "-"), "pending": ("grey", ":"), "paused": ("grey", ":")}


@dataclass
class Report:
    folder: Path
    html: Path
    summary: Path
    pngs: dict[str, Path] = field(default_factory=dict)
    study_db: Path | None = None
    plotted_trials: dict[str, int] = field(default_factory=dict)  # plot name -> trials drawn
    notes: list[str] = field(default_factory=list)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# ---------------------------------------------------------------------------------- plots
def plot_learning_curves(frame: pd.DataFrame, curves: dict[str, pd.DataFrame], rungs: list[int],
                         e1: int, path: Path) -> int:
    """val_accuracy and val_loss per epoch of every trial; rungs, phase boundary and stops marked.

    Returns:
        The number of trials drawn.
    """
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    status = dict(zip(frame["trial_id"], frame["status"]))
    drawn = 0
    for trial_id, curve in curves.items():
        if trial_id not in status:
            continue
        color, style = STATUS_STYLE.get(status[trial_id], ("grey", "-"))
        for ax, key in zip(axes, ("val_accuracy", "val_loss")):
            if key not in curve:
                continue
            x, y = curve["training_iteration"].to_numpy(), curve[key].to_numpy(dtype=float)
            ax.plot(x, y, style, color=color, marker="o", ms=3, lw=1.2, alpha=0.8)
            if status[trial_id] in ("stopped", "errored"):
                ax.plot(x[-1:], y[-1:], "x", color=color, ms=9, mew=2)
        drawn += 1
    for ax, key in zip(axes, ("val_accuracy", "val_loss")):
        for i, rung in enumerate(rungs):
            ax.axvline(rung, color="tab:purple", ls=":", lw=1, label="ASHA rung" if i == 0 else None)
        if e1 and frame["epochs_planned"].max() > e1:
            ax.axvline(e1 + 0.5, color="black", ls="--", lw=1, label="phase 2: fine-tuning")
        ax.set_xlabel("epoch (both phases)")
        ax.set_ylabel(key)
        ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    for name, (color, style) in STATUS_STYLE.items():
        if name in status.values():
            axes[0].plot([], [], style, color=color, label=f"{name} ({list(status.values()).count(name)})")
    axes[0].plot([], [], "x", color="black", label="stopped / errored here")
    axes[0].legend(fontsize=8, loc="best")
    fig.suptitle(f"learning curves of {drawn} trials")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return drawn


def _numeric(values: pd.Series) -> tuple[np.ndarray, list[str] | None]:
    """Numbers for an axis; categorical values become positions 0..k-1 with their labels."""
    if values.map(lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)).all():
        return values.to_numpy(dtype=float), None
    labels = sorted({str(v) for v in values})
    return np.array([labels.index(str(v)) for v in values], dtype=float), labels


def plot_params_vs_score(frame: pd.DataFrame, log_params: set[str], path: Path) -> int:
    """One panel per hyperparameter: its value against the trial's best val accuracy."""
    plt = _plt()
    params = param_columns(frame)
    scored = frame.dropna(subset=["best_val_accuracy"])
    cols = min(3, max(1, len(params)))
    rows = max(1, math.ceil(len(params) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.3 * rows), squeeze=False)
    for ax, column in zip(axes.flat, params):
        name = column[len(PARAM_PREFIX):]
        x, labels = _numeric(scored[column])
        for status, (color, _) in STATUS_STYLE.items():
            mask = (scored["status"] == status).to_numpy()
            if mask.any():
                ax.scatter(x[mask], scored["best_val_accuracy"].to_numpy()[mask], c=color, s=28,
                           label=status, edgecolors="black", linewidths=0.4)
        if labels is not None:
            ax.set_xticks(range(len(labels)), labels)
        elif name in log_params:
            ax.set_xscale("log")
        ax.set_xlabel(name)
        ax.set_ylabel("best val_accuracy")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(params):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(f"hyperparameters against best val accuracy ({len(scored)} trials)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return len(scored)


def plot_parallel_coordinates(frame: pd.DataFrame, log_params: set[str], path: Path) -> int:
    """One line per trial across every hyperparameter (scaled to 0..1) and the best val accuracy."""
    plt = _plt()
    scored = frame.dropna(subset=["best_val_accuracy"]).reset_index(drop=True)
    params = param_columns(scored)
    axes_cols = [*params, "best_val_accuracy"]
    scaled, ticks = [], []
    for column in axes_cols:
        x, labels = _numeric(scored[column])
        if labels is None and column[len(PARAM_PREFIX):] in log_params and (x > 0).all():
            x = np.log10(x)
        low, high = (np.nanmin(x), np.nanmax(x)) if len(x) else (0, 1)
        span = high - low if high > low else 1.0
        scaled.append((x - low) / span)
        if labels is not None:
            ticks.append(f"{' / '.join(labels)}")
        elif column[len(PARAM_PREFIX):] in log_params:
            ticks.append(f"{10 ** low:.2g}..{10 ** high:.2g} (log)")
        else:
            ticks.append(f"{low:.3g}..{high:.3g}")
    fig, ax = plt.subplots(figsize=(max(7, 1.7 * len(axes_cols)), 4.8))
    cmap = plt.get_cmap("viridis")
    scores = scored["best_val_accuracy"].to_numpy(dtype=float)
    lo, hi = (scores.min(), scores.max()) if len(scores) else (0, 1)
    for i in range(len(scored)):
        ys = [s[i] for s in scaled]
        style = STATUS_STYLE.get(scored.loc[i, "status"], ("grey", "-"))[1]
        ax.plot(range(len(axes_cols)), ys, style, color=cmap((scores[i] - lo) / (hi - lo) if hi > lo else 0.5),
                lw=1.5, alpha=0.85, marker="o", ms=3)
    names = [c[len(PARAM_PREFIX):] if c.startswith(PARAM_PREFIX) else c for c in axes_cols]
    ax.set_xticks(range(len(axes_cols)), [f"{n}\n{t}" for n, t in zip(names, ticks)], fontsize=7, rotation=20)
    for x in range(len(axes_cols)):
        ax.axvline(x, color="black", lw=0.6)
    ax.set_yticks([0, 1], ["low", "high"])
    sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(lo, hi))
    fig.colorbar(sm, ax=ax, label="best val_accuracy")
    ax.set_title(f"parallel coordinates of {len(scored)} trials (dashed: stopped by ASHA)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return len(scored)


def param_importance(trials: list[Any], distributions: dict[str, Any]) -> tuple[dict[str, float], str]:
    """Importance of each hyperparameter for the best val accuracy, by Optuna's evaluators.

    Every ended trial with a score counts, as COMPLETE with its best val accuracy (a stopped trial
    counts with its best before the stop, which is what the search learned about its config).
    fANOVA needs scikit-learn; without it, PED-ANOVA (no extra dependency) is used.

    Returns:
        ({param: importance} summing to 1, the evaluator's name); ({}, reason) when it cannot run.
    """
    import optuna

    usable = [t for t in trials if t.user_attrs.get("best_val_accuracy") is not None
              and t.state != optuna.trial.TrialState.FAIL]
    varying = [n for n, d in distributions.items() if not (
        isinstance(d, optuna.distributions.CategoricalDistribution) and len(d.choices) < 2)]
    if len(usable) < 4 or not varying:
        return {}, f"needs at least 4 scored trials and a varying hyperparameter (has {len(usable)})"
    study = optuna.create_study(direction="maximize")
    study.add_trials([optuna.trial.create_trial(
        state=optuna.trial.TrialState.COMPLETE, value=float(t.user_attrs["best_val_accuracy"]),
        params={k: t.params[k] for k in varying}, distributions={k: t.distributions[k] for k in varying})
        for t in usable])
    try:
        import sklearn  # noqa: F401

        evaluator, name = optuna.importance.FanovaImportanceEvaluator(seed=0), "fANOVA"
    except ImportError:
        # With few trials, a top quantile of 0.1 holds no trial: compare the best third instead.
        evaluator = optuna.importance.PedAnovaImportanceEvaluator(target_quantile=max(0.1, 1 / 3), evaluate_on_local=True)
        name = "PED-ANOVA"
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            values = optuna.importance.get_param_importances(study, evaluator=evaluator)
    except (ValueError, RuntimeError, ZeroDivisionError) as err:
        return {}, f"{name} failed: {str(err).splitlines()[0][:160]}"
    values = {k: float(v) if math.isfinite(float(v)) else 0.0 for k, v in values.items()}
    return values, name


def plot_importance(importance: dict[str, float], method: str, n_trials: int, path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 0.45 * max(3, len(importance)) + 1.2))
    if importance:
        names = list(importance)[::-1]
        ax.barh(names, [importance[n] for n in names], color="tab:blue")
        ax.set_xlabel("importance (sums to 1)")
        ax.set_title(f"importance for best val accuracy\n({method}, {n_trials} trials)", fontsize=10)
    else:
        ax.axis("off")
        ax.text(0.5, 0.5, f"importance not computed:\n{method}", ha="center", va="center")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ---------------------------------------------------------------------------------- study
def export_study(folder: Path, trials: list[Any], study_name: str) -> Path:
    """Write the trials to an Optuna RDB storage (SQLite) in the folder, replacing an older export.

    Open it with `optuna-dashboard sqlite:///<folder>/optuna_study.db` or
    `optuna.load_study(study_name=..., storage="sqlite:///...")`.
    """
    import optuna

    db = folder / STUDY_DB
    tmp = folder / f".{STUDY_DB}.tmp"
    tmp.unlink(missing_ok=True)
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp.resolve()}")
    study = optuna.create_study(storage=storage, study_name=study_name, direction="maximize")
    study.set_user_attr("source", "gic-tune report: ASHA-stopped trials are PRUNED, as the search told TPE")
    study.add_trials(trials)
    storage.remove_session()
    storage.engine.dispose()
    tmp.replace(db)
    return db


# ---------------------------------------------------------------------------------- summary
def _fmt_s(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def summary_markdown(folder: Path, cfg: dict[str, Any], frame: pd.DataFrame, study_name: str,
                     importance: dict[str, float], method: str) -> str:
    counts = frame["status"].value_counts().to_dict() if not frame.empty else {}
    best = best_row(frame) if not frame.empty else None
    wall = frame["wall_time_s"].dropna()
    search, trainer = cfg.get("search") or {}, cfg.get("trainer") or {}
    e1, e2 = phase_epochs(cfg)
    started = experiment_started(folder)
    lines = [f"# Search report: {study_name}", "",
             f"- experiment folder: `{folder}`" + (f", started {started:%Y-%m-%d %H:%M}" if started else ""),
             f"- study name: `{study_name}`; Optuna study exported to `{STUDY_DB}` "
             f"(`optuna-dashboard sqlite:///{(folder / STUDY_DB).resolve()}`)",
             f"- trials: {len(frame)} (" + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) + ")"]
    if best is not None:
        params = ", ".join(f"`{k}={_value(v)}`" for k, v in params_of(best).items())
        lines.append(f"- best trial: **{best['trial_id']}**, best val_accuracy **{best['best_val_accuracy']:.4f}** "
                     f"at epoch {int(best['best_epoch'])} ({best['status']}, {int(best['epochs'])} epochs): {params}")
    lines += [f"- compute: {_fmt_s(wall.sum())} of trial time in total; per trial mean {_fmt_s(wall.mean())}, "
              f"min {_fmt_s(wall.min())}, max {_fmt_s(wall.max())}" if len(wall) else "- compute: -",
              "", "## Reproduce", "", "```", cfg.get("command") or "(command not recorded)", "```", "",
              "Retrain the best configuration and measure it on the test split:", "", "```",
              f"gic-tune retrain {folder} --seeds 3 --compare-baseline", "```", "",
              "## Configuration", "",
              f"- source: `{cfg.get('source', '-')}`",
              f"- data: {(trainer.get('data') or {}).get('source', '-')} `{(trainer.get('data') or {}).get('dir', '-')}` "
              f"at {(trainer.get('data') or {}).get('image_size', '-')} px; weights "
              f"`{(trainer.get('model') or {}).get('weights', '-')}`; epochs {e1} + {e2} (ASHA max_t)",
              f"- search: {search.get('num_samples', '-')} trials, {search.get('max_concurrent', '-')} at a time, "
              f"TPE seed {search.get('seed', '-')}, n_startup_trials {search.get('n_startup_trials', '-')}; ASHA grace "
              f"{search.get('grace_period', '-')}, reduction factor {search.get('reduction_factor', '-')}; "
              f"resources {search.get('resources_per_trial', '-')}",
              "- space:"]
    for name, dim in (cfg.get("space") or {}).items():
        if "choices" in dim:
            lines.append(f"  - `{name}` in {dim['choices']}")
        else:
            lines.append(f"  - `{name}` {dim.get('kind', '')} [{dim.get('low', 0)}, {dim.get('high', 0)}]"
                         + (" log" if dim.get("log") else ""))
    if cfg.get("fixed"):
        lines.append(f"- fixed: {cfg['fixed']}")
    lines += ["", f"## Hyperparameter importance ({method})", ""]
    lines += [f"- `{k}`: {v:.3f}" for k, v in importance.items()] or ["- not computed"]
    lines += ["", "## Trials", "", _markdown_table(frame), ""]
    return "\n".join(lines)


def _value(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _markdown_table(frame: pd.DataFrame) -> str:
    columns = ["trial_id", "status_detail", "epochs", "best_val_accuracy", "last_val_accuracy", "wall_time_s",
               *param_columns(frame)]
    header = [c.removeprefix(PARAM_PREFIX) for c in columns]
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(columns)]
    for row in frame.sort_values("best_val_accuracy", ascending=False, na_position="last").to_dict("records"):
        rows.append("| " + " | ".join("-" if pd.isna(row[c]) else _value(row[c]) for c in columns) + " |")
    return "\n".join(rows)


# ---------------------------------------------------------------------------------- html
def _md_inline(text: str) -> str:
    """`code` and **bold** of one summary line, escaped, as HTML."""
    import re

    out = html.escape(text)
    out = re.sub(r"`([^`]*)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*([^*]*)\*\*", r"<b>\1</b>", out)


def markdown_to_html(markdown: str) -> str:
    """The small Markdown subset summary_markdown writes: headings, bullets, code blocks, tables."""
    out, in_code, in_list, table = [], False, False, []

    def flush_table():
        if table:
            head, *body = [r.strip("|").split(" | ") for r in table if not r.startswith("|---")]
            out.append("<table><tr>" + "".join(f"<th>{html.escape(c.strip())}</th>" for c in head) + "</tr>"
                       + "".join("<tr>" + "".join(f"<td>{html.escape(c.strip())}</td>" for c in r) + "</tr>" for r in body)
                       + "</table>")
            table.clear()

    for line in markdown.splitlines():
        if line.startswith("```"):
            out.append("</pre>" if in_code else "<pre>")
            in_code = not in_code
            continue
        if in_code:
            out.append(html.escape(line))
            continue
        if line.startswith("|"):
            table.append(line)
            continue
        flush_table()
        if line.lstrip().startswith("- "):
            if not in_list:
                out.append("<ul>")
                in_list = True
            out.append(f"<li>{_md_inline(line.lstrip()[2:])}</li>")
            continue
        if in_list:
            out.append("</ul>")
            in_list = False
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            out.append(f"<h{level}>{_md_inline(line.lstrip('#').strip())}</h{level}>")
        elif line.strip():
            out.append(f"<p>{_md_inline(line)}</p>")
    flush_table()
    if in_list:
        out.append("</ul>")
    return "\n".join(out)


def write_html(path: Path, title: str, summary_md: str, pngs: dict[str, Path], captions: dict[str, str]) -> Path:
    """report.html with the PNGs embedded as base64 data URIs: one file to share."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             "<style>body{font-family:sans-serif;max-width:1300px;margin:2em auto;padding:0 1em}"
             "img{max-width:100%;border:1px solid #ddd}table{border-collapse:collapse;font-size:12px}"
             "td,th{border:1px solid #ccc;padding:2px 6px}pre{background:#f4f4f4;padding:.6em;white-space:pre-wrap}"
             "figure{margin:1.5em 0}figcaption{color:#555}</style></head><body>"]
    body = markdown_to_html(summary_md)
    figures = []
    for name, png in pngs.items():
        data = base64.b64encode(png.read_bytes()).decode()
        figures.append(f"<figure id='{name}'><img alt='{html.escape(name)}' src='data:image/png;base64,{data}'>"
                       f"<figcaption>{html.escape(captions.get(name, name))} ({html.escape(png.name)})</figcaption></figure>")
    # The plots go before the long trial table.
    marker = "<h2>Reproduce</h2>"
    body = body.replace(marker, "<h2>Plots</h2>\n" + "\n".join(figures) + "\n" + marker, 1) if marker in body \
        else body + "\n".join(figures)
    parts += [body, "</body></html>"]
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text("\n".join(parts))
    tmp.replace(path)
    return path


# ---------------------------------------------------------------------------------- driver
def make_report(experiment: str | Path, out: str | Path | None = None, export: bool = True) -> Report:
    """Plots, summary.md, report.html (in `out`, default <experiment>/report/) and optuna_study.db.

    Raises:
        GicError: not an experiment folder, or no trial has started yet.
    """
    from tune.warmstart import optuna_trials

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    folder = require_experiment(Path(experiment)).resolve()
    out = Path(out) if out is not None else folder / REPORT_DIR
    out.mkdir(parents=True, exist_ok=True)
    frame = trial_table(folder)
    if frame.empty:
        raise GicError(f"{folder}: no trial has reported yet; nothing to report")
    cfg = search_config(folder)
    curves = trial_curves(folder)
    e1, _ = phase_epochs(cfg)
    rungs = asha_rungs(folder, cfg)
    trials, distributions, skipped = optuna_trials(folder)
    log_params = {n for n, d in distributions.items() if getattr(d, "log", False)}
    study_name = str(cfg.get("name") or folder.name)

    report = Report(folder=out, html=out / "report.html", summary=out / "summary.md")
    pngs = {"learning_curves": out / "learning_curves.png", "params_vs_score": out / "params_vs_score.png",
            "parallel_coordinates": out / "parallel_coordinates.png", "importance": out / "importance.png"}
    report.plotted_trials["learning_curves"] = plot_learning_curves(frame, curves, rungs, e1, pngs["learning_curves"])
    report.plotted_trials["params_vs_score"] = plot_params_vs_score(frame, log_params, pngs["params_vs_score"])
    report.plotted_trials["parallel_coordinates"] = plot_parallel_coordinates(frame, log_params, pngs["parallel_coordinates"])
    own = [t for t in trials if "warm_start_from" not in t.user_attrs]  # this experiment's trials only
    importance, method = param_importance(own, distributions)
    plot_importance(importance, method, len(own), pngs["importance"])
    report.plotted_trials["importance"] = len(own) if importance else 0
    report.pngs = pngs
    if skipped:
        report.notes.append(f"{skipped} trials left out of the Optuna study (params outside the search space)")

    if export:
        report.study_db = export_study(folder, trials, study_name)
    text = summary_markdown(folder, cfg, frame, study_name, importance, method)
    report.summary.write_text(text + "\n")
    captions = {
        "learning_curves": f"val accuracy and loss of every trial over both phases; dotted purple: ASHA rungs {rungs}; "
                           f"dashed black: start of phase 2; dashed orange with x: stopped by ASHA",
        "params_vs_score": "each hyperparameter against the trial's best val accuracy: a best score at the edge of a "
                           "range says the range is too narrow",
        "parallel_coordinates": "every trial across the hyperparameters, coloured by best val accuracy",
        "importance": f"hyperparameter importance for best val accuracy ({method})"}
    write_html(report.html, f"gic-tune report: {study_name}", text, pngs, captions)
    return report


# ---------------------------------------------------------------------------------- browser check
def find_browser() -> str | None:
    """A Chromium-family browser on PATH (Debian: `apt-get install chromium`), or None."""
    import shutil

    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def browser_check(report_html: str | Path, screenshot: str | Path | None = None, timeout_s: int = 60) -> dict[str, Any]:
    """Open report.html in a headless browser: does it render, and does every image decode?

    A copy of the page gets a script that, on load, records each image's natural size in the DOM;
    the browser's `--dump-dom` prints that DOM. Optionally writes a screenshot of the first screen.

    Returns:
        {"title": ..., "images": [{"alt", "complete", "width", "height"}], "screenshot": path or None}

    Raises:
        GicError: no browser, or the browser failed.
    """
    import json
    import re
    import subprocess
    import tempfile

    browser = find_browser()
    if browser is None:
        raise GicError("no headless browser found; install one, e.g. `apt-get install -y chromium`")
    page = Path(report_html).resolve()
    probe = ("<script>window.addEventListener('load',function(){document.body.setAttribute('data-probe',"
             "JSON.stringify(Array.from(document.images).map(function(i){return {alt:i.alt,complete:i.complete,"
             "width:i.naturalWidth,height:i.naturalHeight}})))});</script>")
    with tempfile.TemporaryDirectory(prefix="gic-browser-") as tmp:
        copy = Path(tmp) / page.name
        copy.write_text(page.read_text().replace("</body>", probe + "</body>", 1))
        flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--no-first-run", "--disable-dev-shm-usage", f"--user-data-dir={tmp}/profile",
                 "--virtual-time-budget=5000"]
        try:
            dom = subprocess.run([*flags, "--dump-dom", copy.as_uri()], capture_output=True, text=True,
                                 timeout=timeout_s, check=True).stdout
            if screenshot is not None:
                shot = Path(screenshot).resolve()
                subprocess.run([*flags, f"--screenshot={shot}", "--window-size=1300,1800", page.as_uri()],
                               capture_output=True, text=True, timeout=timeout_s, check=True)
        except (OSError, subprocess.SubprocessError) as err:
            raise GicError(f"{browser}: could not render {page} ({type(err).__name__})") from None
    match = re.search(r'data-probe="([^"]*)"', dom)
    images = json.loads(html.unescape(match.group(1))) if match else []
    title = re.search(r"<title>(.*?)</title>", dom, re.S)
    return {"title": html.unescape(title.group(1)) if title else None, "images": images,
            "screenshot": str(screenshot) if screenshot is not None else None}


def _main(argv: list[str] | None = None) -> int:
    """`python -m tune.report check REPORT_HTML [SCREENSHOT_PNG]`: the headless-browser check."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (2, 3) or args[0] != "check":
        print("usage: python -m tune.report check REPORT_HTML [SCREENSHOT_PNG]", file=sys.stderr)
        return 2
    try:
        result = browser_check(args[1], args[2] if len(args) == 3 else None)
    except GicError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    bad = [i for i in result["images"] if not i["complete"] or not i["width"]]
    print(f"{args[1]}: title {result['title']!r}; {len(result['images'])} images, {len(bad)} not loaded"
          + (f"; screenshot {result['screenshot']}" if result["screenshot"] else ""))
    for image in result["images"]:
        print(f"  {image['alt']}: {image['width']}x{image['height']}{'' if image['complete'] else ' (not complete)'}")
    return 1 if bad or not result["images"] else 0


if __name__ == "__main__":
    raise SystemExit(_main())
