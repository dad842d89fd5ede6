"""The config files shipped with gic-tune, and how a `--config` path finds them.

The repository's top-level `configs/` folder is installed as the package data `gic.configs`
(pyproject.toml maps it): a wheel carries it in site-packages/gic/configs/, an editable install
reads the clone's folder. `gic-tune init` copies it out to edit.

A `--config PATH` resolves so that the user's own file always wins:

- PATH exists (relative to the current folder): the user's file, as given;
- PATH does not exist but names a shipped config (`demo.yaml`, `configs/demo.yaml`,
  `./configs/cluster/aws-gpu.yaml`, ...): the shipped file, said in one `note:` line on stderr;
- otherwise PATH as given, which the loader refuses with its one-line `no such config file` error.

An option's default (`gic-tune run` with no --config: `configs/demo.yaml`) follows the same rule,
without the note. A search file's `base: baseline.yaml` is relative to the search file, so a
shipped search file reads the shipped baseline.

    path = resolve_config("configs/demo.yaml")   # ./configs/demo.yaml if it exists, else the shipped one
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from gic.errors import GicError

PACKAGE = "gic.configs"
PATTERNS = ("*.yaml", "cluster/*.yaml", "*.sh")  # the package data of pyproject.toml


def shipped_dir() -> Path:
    """The folder of the shipped configs: the installed package data, else the source tree's configs/."""
    from importlib import resources

    try:
        root = resources.files(PACKAGE)
    except ModuleNotFoundError:  # a source tree on PYTHONPATH, or an install made before the mapping
        return Path(__file__).resolve().parents[1] / "configs"
    return Path(str(root)) if isinstance(root, Path) else Path(__file__).resolve().parents[1] / "configs"


def shipped_names() -> list[str]:
    """The shipped configs as paths relative to their folder: `baseline.yaml`, `cluster/aws-gpu.yaml`, ..."""
    root = shipped_dir()
    return sorted({p.relative_to(root).as_posix() for pattern in PATTERNS for p in root.glob(pattern) if p.is_file()})


def shipped_config(name: str | Path) -> Path | None:
    """The shipped file that NAME means (`demo.yaml`, `configs/demo.yaml`, `./configs/cluster/x.yaml`), or None."""
    path = Path(name)
    if path.is_absolute():
        return None
    parts = path.parts[1:] if path.parts[:1] == ("configs",) else path.parts
    rel = "/".join(parts)
    return shipped_dir() / rel if rel in shipped_names() else None


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def resolve_config(path: str | Path, echo: Callable[[str], None] | None = _stderr, quiet: bool = False) -> Path:
    """PATH if it exists (the user's file), else the shipped config it names (with a note), else PATH.

    Never raises: a path that is neither is returned as given, for the loader's usual error.
    """
    path = Path(path)
    if path.exists():
        return path
    shipped = shipped_config(path)
    if shipped is None:
        return path
    if not quiet and echo is not None:
        echo(f"note: {path} is not in {Path.cwd()}; using the shipped {shipped} "
             "(`gic-tune init` copies the shipped configs out to edit)")
    return shipped


def config_option(default: str | Path | None = None):
    """The click callback of a `--config` option whose click default is None.

    A given path goes through `resolve_config` (a shipped fallback says so on stderr); no path means
    DEFAULT, resolved the same way but quietly: it is the documented default.
    """

    def callback(ctx, param, value):
        if value is None:
            return None if default is None else resolve_config(default, quiet=True)
        import click

        return resolve_config(value, echo=lambda line: click.echo(line, err=True))

    return callback


def copy_shipped(dest: str | Path, overwrite: bool = False) -> tuple[list[str], list[str]]:
    """Copy the shipped configs into DEST (keeping `cluster/`); returns (copied, already the same file).

    Raises:
        GicError: one line naming the files that exist (unless `overwrite`), or a DEST that is a file.
    """
    root, dest = shipped_dir(), Path(dest)
    names = shipped_names()
    if not names:
        raise GicError(f"{root}: no shipped configs found; reinstall gic-tune")
    if dest.exists() and not dest.is_dir():
        raise GicError(f"{dest}: exists and is not a folder")
    same = [n for n in names if (dest / n).exists() and (dest / n).resolve() == (root / n).resolve()]
    todo = [n for n in names if n not in same]
    folders = [str(dest / n) for n in todo if (dest / n).is_dir()]
    if folders:
        raise GicError(f"{', '.join(folders)}: a folder is in the way of a config file")
    existing = [str(dest / n) for n in todo if (dest / n).exists()]
    if existing and not overwrite:
        raise GicError(f"{', '.join(existing)} already exist{'s' if len(existing) == 1 else ''}; "
                       "pass --overwrite to replace them with the shipped ones")
    for name in todo:
        target = dest / name
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / name, target)
        except OSError as err:
            raise GicError(f"{target}: cannot write: {err.strerror or err}") from None
    return todo, same
