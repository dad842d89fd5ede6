"""Safe extraction of .zip and .tar(.gz/.bz2/.xz) archives: every member is checked before any is written.

Refused, by name: absolute paths, `..` components, NUL in a name, links (symbolic or hard) and
device, FIFO or other special files. Only regular files and folders are written. Tar archives are
extracted with tarfile's own `data` filter as a second line of defence where Python has it
(3.10.12+, 3.11.4+, 3.12+).
"""

from __future__ import annotations

import functools
import shutil
import stat
import tarfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any, Callable

from gic.data.layout import shown
from gic.errors import DataError

# (name, why its kind is refused or None, is a folder, opener of its bytes)
Member = tuple[str, "str | None", bool, Callable[[], Any]]


def safe_extract(archive: str | Path, dest: str | Path) -> Path:
    """Extract a .zip or .tar(.gz/.bz2/.xz) archive into `dest`, refusing unsafe members first.

    Every member is checked before anything is written: absolute paths, `..` components, links
    (symbolic or hard) and device, FIFO or other special files are refused with a DataError that
    names the member. Only regular files and folders are written.

    Args:
        archive: the archive file (its kind is read from its bytes, not its name).
        dest: the folder to extract into; created if absent.

    Returns:
        `dest`.

    Raises:
        DataError: no such archive, not a zip or tar, corrupt, or an unsafe member (nothing written).
    """
    archive, dest = Path(archive), Path(dest)
    if not archive.is_file():
        raise DataError(f"{shown(archive)}: no such archive file")
    if zipfile.is_zipfile(archive):
        _extract_zip(archive, dest)
    elif tarfile.is_tarfile(archive):
        _extract_tar(archive, dest)
    else:
        raise DataError(f"{shown(archive)}: not a zip or tar archive")
    return dest


def _unsafe_member_name(name: str) -> str | None:
    """Why an archive member name would land outside the destination, or None if it is safe."""
    norm = name.replace("\\", "/")
    if not norm or norm.startswith("/") or (len(norm) > 1 and norm[1] == ":"):
        return "absolute path"
    if ".." in PurePosixPath(norm).parts:
        return "path with '..'"
    if "\0" in norm:
        return "NUL in name"
    return None


def _inside(dest: Path, name: str) -> Path:
    target = (dest / name.replace("\\", "/")).resolve()
    if target != dest and dest not in target.parents:
        raise DataError(f"refusing archive member {name!r}: it would be written outside {shown(dest)}")
    return target


def _zip_kind(info: zipfile.ZipInfo) -> str | None:
    """Why a zip member is refused for its kind (links, devices), from its Unix mode bits."""
    mode = info.external_attr >> 16
    if mode and stat.S_ISLNK(mode):
        return "symbolic link"
    if mode and stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        return "special file (device, FIFO or socket)"
    return None


def _tar_kind(m: tarfile.TarInfo) -> str | None:
    if m.issym():
        return "symbolic link"
    if m.islnk():
        return "hard link"
    if not (m.isreg() or m.isdir()):
        return "special file (device, FIFO or socket)"
    return None


def _check_members(archive: Path, members: list[Member]) -> None:
    for name, kind, _, _ in members:
        why = _unsafe_member_name(name) or kind
        if why:
            raise DataError(f"{shown(archive)}: refusing member {name!r} ({why}); nothing was extracted")


def _write_members(archive: Path, dest: Path, members: list[Member]) -> None:
    """Check every member before writing any, then write regular files and folders under `dest`."""
    _check_members(archive, members)
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    for name, _, is_dir, open_member in members:
        target = _inside(root, name)
        if is_dir:
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        with open_member() as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)


def _extract_zip(archive: Path, dest: Path) -> None:
    try:
        with zipfile.ZipFile(archive) as zf:
            _write_members(archive, dest, [(i.filename, _zip_kind(i), i.is_dir(), functools.partial(zf.open, i))
                                           for i in zf.infolist()])
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as err:
        raise DataError(f"{shown(archive)}: corrupt zip archive ({err})") from None


def _extract_tar(archive: Path, dest: Path) -> None:
    try:
        with tarfile.open(archive) as tf:
            infos = tf.getmembers()
            members = [(m.name, _tar_kind(m), m.isdir(), functools.partial(tf.extractfile, m)) for m in infos]
            if not hasattr(tarfile, "data_filter"):  # Python without PEP 706: our own writer alone
                _write_members(archive, dest, members)
                return
            _check_members(archive, members)
            dest.mkdir(parents=True, exist_ok=True)
            try:
                tf.extractall(dest, members=infos, filter="data")
            except tarfile.FilterError as err:  # pragma: no cover - the checks above refuse these first
                name = err.tarinfo.name if err.tarinfo is not None else "?"
                raise DataError(f"{shown(archive)}: refusing member {name!r} ({err})") from None
    except (tarfile.TarError, EOFError) as err:
        raise DataError(f"{shown(archive)}: corrupt tar archive ({err})") from None
