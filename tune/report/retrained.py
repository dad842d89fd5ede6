"""The retrain's results in the report: test accuracy per configuration and tuned vs the seed recipe.

    found = retrain_results("results/demo")      # what `gic-tune retrain` wrote in results/demo/retrain/
    lines = retrain_markdown(found, folder)      # the report's "Test accuracy" section

Read from comparison.csv (or comparison.md) and summary.csv of each retrain/<settings>/ folder; with
none, the section says how to measure the test accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from tune.experiment import RETRAIN_DIR
from tune.report.page import md_cell


@dataclass
class RetrainResults:
    """What one `gic-tune retrain` wrote in <experiment>/retrain/<settings>/ (tune.retrain).

    Attributes:
        folder: the retrain's folder.
        table: comparison.csv (config, seeds, test_accuracy, test_auc, train_time_s as "mean ± std",
            and the *_mean columns); None when only comparison.md is there.
        markdown: comparison.md without its title; used when comparison.csv is missing.
        train_on: `train` or `train+validation` (from summary.csv), None when unknown.
    """

    folder: Path
    table: pd.DataFrame | None
    markdown: str | None
    train_on: str | None = None

    def row(self, config: str) -> dict[str, Any] | None:
        """The comparison row of a configuration (`best-<trial id>`, `top2-<id>`, `baseline`), or None."""
        if self.table is None:
            return None
        rows = self.table[self.table["config"] == config].to_dict("records")
        return rows[0] if rows else None


def retrain_results(experiment: str | Path) -> list[RetrainResults]:
    """The retrain results of an experiment: what `gic-tune retrain` wrote inside its folder.

    Args:
        experiment: the experiment folder. Its retrain/<settings>/ folders are read (retrain's
            default output), and retrain/ itself (the layout of earlier versions).

    Returns:
        One RetrainResults per folder holding comparison.csv or comparison.md, the newest first;
        [] when there is none.
    """
    root = Path(experiment) / RETRAIN_DIR
    if not root.is_dir():
        return []
    found = []
    for folder in [root, *sorted(p for p in root.iterdir() if p.is_dir())]:
        results = _retrain_folder(folder)
        if results is not None:
            files = [f for f in (folder / "comparison.csv", folder / "comparison.md") if f.is_file()]
            found.append((max(f.stat().st_mtime for f in files), results))
    return [results for _, results in sorted(found, key=lambda item: -item[0])]


def _retrain_folder(folder: Path) -> RetrainResults | None:
    csv, md, runs = folder / "comparison.csv", folder / "comparison.md", folder / "summary.csv"
    table = markdown = train_on = None
    try:
        if csv.is_file():
            table = pd.read_csv(csv)
            if not {"config", "seeds", "test_accuracy"} <= set(table.columns) or table.empty:
                table = None
        if runs.is_file():
            modes = pd.read_csv(runs).get("train_on")
            train_on = ", ".join(sorted(set(modes.dropna().astype(str)))) if modes is not None else None
    except (OSError, ValueError, pd.errors.ParserError):
        table = None
    if table is None and md.is_file():
        lines = md.read_text().splitlines()
        markdown = "\n".join(lines[1:] if lines and lines[0].startswith("# ") else lines).strip()
    if table is None and not markdown:
        return None
    return RetrainResults(folder=folder, table=table, markdown=markdown, train_on=train_on or None)


def retrain_markdown(found: list[RetrainResults], folder: Path) -> list[str]:
    """The report's test-accuracy section: per retrain, its test-split table and tuned vs seed recipe;
    or how to get them."""
    if not found:
        return ["## Test accuracy", "", "Not measured yet: the search's val accuracy picks a configuration; retrain "
                "it from scratch with every epoch of its budget and measure it on the test split:", "", "```",
                f"gic-tune retrain {folder} --seeds 3 --compare-baseline", "```", ""]
    lines = ["## Test accuracy (retrain)", "",
             "Each configuration trained again from scratch with every epoch of its budget (no early stopping) and evaluated once on the "
             "test split" + (f"; {len(found)} retrains, the newest first" if len(found) > 1 else "") + ".", ""]
    for results in found:
        where = results.folder.relative_to(folder) if results.folder.is_relative_to(folder) else results.folder
        lines += [f"### `{where}`" + (f" (trained on `{results.train_on}`)" if results.train_on else ""), ""]
        if results.table is None:
            lines += [results.markdown or "", ""]
            continue
        lines += ["| configuration | seeds | test accuracy | test AUC | training time (s) |", "|---|---:|---:|---:|---:|"]
        for row in results.table.to_dict("records"):
            label = "seed recipe (configs/baseline.yaml)" if row["config"] == "baseline" else f"tuned: {row['config']}"
            cells = [label, *(row.get(k) for k in ("seeds", "test_accuracy", "test_auc", "train_time_s"))]
            lines.append("| " + " | ".join(md_cell(c) for c in cells) + " |")
        baseline = results.row("baseline")
        tuned = [r for r in results.table.to_dict("records") if r["config"] != "baseline"]
        if baseline is not None and tuned and "test_accuracy_mean" in results.table:
            first = tuned[0]
            delta = float(first["test_accuracy_mean"]) - float(baseline["test_accuracy_mean"])
            lines += ["", f"Tuned `{first['config']}` against the seed recipe: test accuracy {first['test_accuracy']} "
                          f"vs {baseline['test_accuracy']} ({delta:+.4f} in the mean)."]
        elif baseline is None:
            lines += ["", f"No seed-recipe row: `gic-tune retrain {folder} --compare-baseline` adds one."]
        lines.append("")
    return lines
