"""What every report figure shares: matplotlib without a display, the colours, atomic PNG writes.

    plt = pyplot()                       # matplotlib.pyplot on the Agg backend
    save(fig, path)                      # a PNG written atomically, the figure closed
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from gic.files import atomic_path


# Line style per status; every trial is grey but the best.
STATUS_STYLE = {"finished": "-", "running": "-", "stopped": "--", "errored": ":", "interrupted": ":", "pending": ":",
                "paused": ":"}
OTHERS_COLOR, BEST_COLOR = "#9a9a9a", "tab:red"
SCORE = "best val_accuracy"


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


@contextmanager
def optuna_plotting(figsize: tuple[float, float] | None = None) -> Iterator[None]:
    """Around an Optuna matplotlib plot: its experimental warning silenced here only, and the global
    matplotlib style it switches to (ggplot) put back afterwards."""
    import matplotlib
    import optuna

    pyplot()  # the Agg backend before Optuna imports pyplot

    with warnings.catch_warnings(), matplotlib.rc_context({"figure.figsize": figsize} if figsize else None):
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", message="Attempting to set identical")  # a constant dimension
        yield


def save(fig, path: Path) -> None:
    """Write a figure as a PNG (100 dpi, white background) atomically and close it."""
    with atomic_path(path) as tmp:  # a kill never leaves half a PNG
        fig.savefig(tmp, dpi=100, bbox_inches="tight", facecolor="white")
    pyplot().close(fig)


def empty_plot(path: Path, text: str) -> int:
    """A PNG that says why there is no plot; returns 0, the number of trials drawn."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 2))
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center")
    save(fig, path)
    return 0
