"""The page: Markdown cells and tables, and report.html (markdown-it-py for the text, pandas for the
trial table, the PNGs embedded).

    html = markdown_to_html("# Title\n\n- a list")     # CommonMark + tables, raw HTML escaped
    write_html(path, title, summary, frame, pngs, captions)
"""

from __future__ import annotations

import base64
import html
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from gic.files import atomic_write_text

from tune.results import rank_by_score
from tune.trials import text_columns, trial_view

if TYPE_CHECKING:
    from tune.report.summary import Summary


def md_cell(value: Any) -> str:
    """A Markdown table cell: `-` for nothing, `|` and `\\` escaped, one line."""
    text = "-" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def markdown_table(view: pd.DataFrame) -> str:
    """A text table (trial_view) as a Markdown table: numbers right-aligned."""
    text = text_columns(view)
    align = ["---" if c in text else "---:" for c in view.columns]
    rows = ["| " + " | ".join(view.columns) + " |", "| " + " | ".join(align) + " |"]
    rows += ["| " + " | ".join(md_cell(v) for v in row) + " |" for row in view.itertuples(index=False)]
    return "\n".join(rows)


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;max-width:1300px;margin:2em auto;padding:0 1em;
  line-height:1.45;color:#222}
img{max-width:100%;height:auto;border:1px solid #ddd}
code{overflow-wrap:anywhere;background:#f4f4f4;padding:0 .2em}
pre{background:#f4f4f4;padding:.6em;white-space:pre-wrap;overflow-wrap:anywhere}
pre code{padding:0}
figure{margin:1.5em 0}figcaption,.note{color:#555;font-size:14px}
.table-scroll{overflow-x:auto;max-width:100%;margin:.5em 0 1.5em}
table{border-collapse:collapse;font-size:12px}
td,th{border:1px solid #ccc;padding:2px 6px;text-align:left;vertical-align:top}
th{background:#f4f4f4;font-weight:600}
table.trials{font-size:11px;font-variant-numeric:tabular-nums}
table.trials td{text-align:right;white-space:nowrap}
table.trials th{text-align:left;vertical-align:bottom}
table.trials tbody tr:first-child{font-weight:bold;background:#fff3f0}
table.trials td:first-child,table.trials th:first-child{position:sticky;left:0;z-index:1}
table.trials td:first-child{background:inherit}
table.trials tbody tr{background:#fff}
"""


def _markdown_it():
    from markdown_it import MarkdownIt

    # CommonMark with tables; raw HTML off: trial errors and paths are shown as text, never markup.
    return MarkdownIt("commonmark", {"html": False}).enable("table")


def markdown_to_html(markdown: str) -> str:
    """CommonMark (plus tables) as HTML, by markdown-it-py; raw HTML in the text is escaped.

    Args:
        markdown: the Markdown text.

    Returns:
        The HTML fragment. Tables are wrapped in a `<div class="table-scroll">` that scrolls
        sideways on a narrow page instead of widening it.
    """
    out = _markdown_it().render(markdown)
    return out.replace("<table>", "<div class=\"table-scroll\"><table>").replace("</table>", "</table></div>")


def trials_html(frame: pd.DataFrame) -> str:
    """The trial table as HTML (pandas to_html): best first, the best row highlighted, in a container
    that scrolls sideways when the table is wider than the page.

    Cells do not wrap (a status stays on one line); a header longer than 12 characters may break
    after a `.` or `_`, so a long hyperparameter name takes two lines rather than a wide column.

    Args:
        frame: the trial table.

    Returns:
        The HTML fragment, with its own style lines for the columns of words (aligned left).
    """
    view = trial_view(rank_by_score(frame))
    table = view.to_html(index=False, escape=True, border=0, classes="trials")
    head, rest = table.split("</thead>", 1)
    head = re.sub(r"(<th>)(.{13,}?)(</th>)", lambda m: m[1] + re.sub(r"([._])", r"\1<wbr>", m[2]) + m[3], head)
    left = ",".join(f"table.trials td:nth-child({i + 1})" for i, c in enumerate(view.columns)
                    if c in text_columns(view))
    style = f"<style>{left}{{text-align:left}}</style>" if left else ""
    return f"{style}<div class=\"table-scroll\">{head}</thead>{rest}</div>"


def write_html(path: Path, title: str, summary: Summary, frame: pd.DataFrame, pngs: dict[str, Path],
               captions: dict[str, str]) -> Path:
    """report.html: the summary, the plots (PNGs embedded as base64 data URIs) and the trial table, one file."""
    figures = []
    for name, png in pngs.items():
        data = base64.b64encode(png.read_bytes()).decode()
        figures.append(f"<figure id='{name}'><img alt='{html.escape(name)}' src='data:image/png;base64,{data}'>"
                       f"<figcaption>{html.escape(captions.get(name, name))} ({html.escape(png.name)})</figcaption></figure>")
    parts = ["<!doctype html><html lang='en'><head><meta charset='utf-8'>",
             "<meta name='viewport' content='width=device-width, initial-scale=1'>",
             f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>",
             markdown_to_html(summary.head), "<h2>Plots</h2>", *figures, markdown_to_html(summary.body),
             "<h2>Trials</h2>",
             "<p class='note'>Best first. On a narrow page the table scrolls sideways; the trial column stays.</p>",
             trials_html(frame), "</body></html>"]
    atomic_write_text(path, "\n".join(parts))
    return path
