"""Trainer checkpoints: one folder per checkpoint, written so that a kill at any moment loses at
most the epoch being written.

    write_checkpoint(out / "checkpoint", state)      # state: gic.train.Trainer.state
    path = find_checkpoint(out / "checkpoint")       # None when there is nothing to resume
    state = read_checkpoint(path)

A checkpoint is `state.npz` (the arrays) and `meta.json` (everything else), written in a fresh
sibling folder (`.checkpoint.tmp-*`), `meta.json` last, then swapped into place. A folder cannot be
renamed over a non-empty one, so the swap is two renames (old away, new in); a kill between them
leaves no `checkpoint/` but two complete siblings, and `find_checkpoint` picks the newer of them.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from gic.errors import GicError
from gic.files import atomic_write_text, make_temp_dir

CHECKPOINT_VERSION = 2  # 2: only the variables training can change
META = "meta.json"  # written last: its presence means the folder is complete


def write_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write a checkpoint folder atomically (see the module docstring).

    Args:
        path: the checkpoint folder, e.g. `OUT/checkpoint`.
        state: `variables`, `optimizer` and `best_weights` (lists of arrays, or None for the last),
            plus JSON-able entries (`epoch`, `phase`, `history`, `best_epoch`, ...).

    Returns:
        `path`.
    """
    path = Path(path)
    tmp = make_temp_dir(path.parent, f".{path.name}.tmp-")
    try:
        arrays = {f"var_{i}": v for i, v in enumerate(state["variables"])}
        arrays |= {f"opt_{i}": v for i, v in enumerate(state["optimizer"])}
        # the best weights are the current variables: no second copy (a phase-1 checkpoint holds the head
        # alone, while the best weights cover every variable training may change: a copy is kept then)
        best_is_current = (state["best_weights"] is not None and state.get("best_epoch") == state["epoch"]
                           and [np.shape(a) for a in state["best_weights"]] == [np.shape(a) for a in state["variables"]])
        best = [] if best_is_current else (state["best_weights"] or [])  # no second copy of the same arrays
        arrays |= {f"best_{i}": v for i, v in enumerate(best)}
        with open(tmp / "state.npz", "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        meta = {k: v for k, v in state.items() if k not in ("variables", "optimizer", "best_weights")}
        meta |= {"version": CHECKPOINT_VERSION, "n_variables": len(state["variables"]),
                 "n_optimizer": len(state["optimizer"]), "n_best": len(best), "best_is_current": best_is_current}
        atomic_write_text(tmp / META, json.dumps(meta))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if path.exists():
        if path.is_dir() and not any(path.iterdir()):
            path.rmdir()
        else:
            old = path.with_name(f".{path.name}.old-{os.getpid()}-{os.urandom(4).hex()}")
            os.replace(path, old)
    os.replace(tmp, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    _remove_leftovers(path)
    return path


def _siblings(path: Path) -> list[Path]:
    """Temporary and swapped-out folders of `path` that a kill left behind."""
    if not path.parent.is_dir():
        return []
    return [p for p in path.parent.iterdir()
            if p.name.startswith((f".{path.name}.tmp-", f".{path.name}.old-")) and p.is_dir()]


def _epoch_of(folder: Path) -> int | None:
    try:
        return int(json.loads((folder / META).read_text())["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # incomplete (killed before meta.json) or damaged


def _remove_leftovers(path: Path) -> None:
    for p in _siblings(path):
        shutil.rmtree(p, ignore_errors=True)


def find_checkpoint(path: str | Path) -> Path | None:
    """The checkpoint to resume from: `path` when it is complete, else the newest complete folder
    that a kill between the two renames of `write_checkpoint` left beside it; None when neither.

    A recovered folder is renamed back to `path`, so the run continues as if nothing happened.
    """
    path = Path(path)
    if (path / META).is_file():
        return path
    complete = [(e, p) for p in _siblings(path) if (e := _epoch_of(p)) is not None]
    if not complete:
        return None
    _, newest = max(complete, key=lambda ep: ep[0])
    if path.is_dir() and not any(path.iterdir()):
        path.rmdir()
    if not path.exists():
        os.replace(newest, path)
        _remove_leftovers(path)
        return path
    return newest


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The state written by `write_checkpoint`.

    Raises:
        GicError: `path` is not a complete checkpoint of this format.
    """
    path = Path(path)
    try:
        meta = json.loads((path / META).read_text())
        if meta.get("version") != CHECKPOINT_VERSION:
            raise GicError(f"{path}: checkpoint format {meta.get('version')}, this gic reads {CHECKPOINT_VERSION}; "
                           "start the run again")
        with np.load(path / "state.npz", allow_pickle=False) as z:
            meta["variables"] = [z[f"var_{i}"] for i in range(meta["n_variables"])]
            meta["optimizer"] = [z[f"opt_{i}"] for i in range(meta["n_optimizer"])]
            meta["best_weights"] = [z[f"best_{i}"] for i in range(meta["n_best"])] or None
            if meta.get("best_is_current"):
                meta["best_weights"] = [a.copy() for a in meta["variables"]]
    except (OSError, ValueError, KeyError) as err:
        raise GicError(f"{path}: not a usable gic checkpoint ({type(err).__name__}: {str(err)[:120]})") from None
    return meta
