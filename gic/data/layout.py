"""What a prepared image folder looks like: the names, the containers, listing, building one atomically.

    ROOT/{train,validation,test}/{men,women}/**/*.jpg|png|...

A class folder may have sub-folders (read recursively). A file is an image when Pillow can decode
its extension; everything else under a class folder is skipped and reported (`skip_summary`).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import EpsImagePlugin, Image, ImageFile, features

from gic.errors import DataError

CLASS_NAMES = ("men", "women")  # label 0 = men, 1 = women
SPLITS = ("train", "validation", "test")
SYNTH_SPEC_FILE = "synthetic.json"  # what make_synthetic was asked for, to refuse a stale folder
WORKERS = min(8, os.cpu_count() or 1)  # threads for decoding, hashing and writing images
LAYOUT = f"{{{','.join(SPLITS)}}}/{{{','.join(CLASS_NAMES)}}}/"
SHOWN_NAMES = 3  # a skip or duplicate summary names this many files, then "and N more"

# Formats Pillow identifies but cannot decode here: MPEG (size only, no decoder), and those whose
# decoder is an optional library or program this installation may lack.
_IDENTIFY_ONLY = {"MPEG"}
_NEEDS = {"AVIF": lambda: features.check("avif"), "WEBP": lambda: features.check("webp"),
          "JPEG2000": lambda: features.check("jpg_2000"),
          "EPS": getattr(EpsImagePlugin, "has_ghostscript", lambda: True)}


def _decodable_extensions() -> tuple[str, ...]:
    """The file extensions of every format this Pillow can decode, from its own registry.

    `Image.registered_extensions()` also lists save-only formats (PDF, PALM) and stubs that need an
    external handler (BUFR, GRIB, HDF5, WMF): those are left out, as are formats whose codec this
    installation lacks (AVIF without libavif, ...). A plugin registered before this module is
    imported (e.g. pillow-heif's `register_heif_opener()`) adds its extensions.
    """
    Image.init()
    out = set()
    for ext, fmt in Image.registered_extensions().items():
        factory = Image.OPEN.get("JPEG" if fmt == "MPO" else fmt, (None,))[0]  # MPO opens through JPEG
        if factory is None or fmt in _IDENTIFY_ONLY:
            continue
        if isinstance(factory, type) and issubclass(factory, ImageFile.StubImageFile):
            continue
        if fmt in _NEEDS and not _NEEDS[fmt]():
            continue
        out.add(ext.lower())
    return tuple(sorted(out))


IMAGE_EXTENSIONS = _decodable_extensions()  # ".jfif", ".jpg", ".png", ".tif", ".webp", ... (58 with Pillow 13)
_EXTENSIONS = frozenset(IMAGE_EXTENSIONS)
_EXAMPLES = ", ".join(e for e in (".jpg", ".png", ".webp", ".tif", ".bmp") if e in _EXTENSIONS)
NO_IMAGES = f"no images (no file with an extension Pillow decodes, e.g. {_EXAMPLES})"


@dataclass
class Split:
    """The decoded images of one split, in sorted-path order."""

    images: np.ndarray  # (N, S, S, 3) uint8 RGB
    labels: np.ndarray  # (N,) int32, index into CLASS_NAMES
    paths: list[str]

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class Dataset:
    """Train, validation and test splits at one image size, plus the fingerprint of their files."""

    train: Split
    validation: Split
    test: Split
    class_names: tuple = CLASS_NAMES
    image_size: int = 0
    fingerprint: str = ""  # changes when any file or the image size changes: a key for caches

    def split(self, name: str) -> Split:
        """The split called `name` (one of SPLITS); KeyError for any other name."""
        if name not in SPLITS:
            raise KeyError(f"unknown split {name!r}; expected one of {SPLITS}")
        return getattr(self, name)


# ------------------------------------------------------------------------------------ listing
# Why an entry under a class folder is not read: the keys of a `Skipped` mapping, in report order.
SKIP_HIDDEN = "hidden file(s) or folder(s) (name starts with '.')"
SKIP_NOT_IMAGE = "file(s) that are not images this Pillow decodes"
SKIP_DIR_LINK = "link(s) to folders (not followed)"
SKIP_UNREADABLE = "unreadable folder(s)"
SKIP_REASONS = (SKIP_NOT_IMAGE, SKIP_HIDDEN, SKIP_DIR_LINK, SKIP_UNREADABLE)
Skipped = dict[str, list[Path]]  # reason -> paths


def shown(path: str | os.PathLike) -> str:
    """A path as text that prints anywhere: name bytes that are not UTF-8 become \\xNN escapes.

    Python keeps such bytes in `str` paths as lone surrogates (`os.fsdecode`'s surrogateescape),
    which open files fine but raise UnicodeEncodeError when printed or encoded as UTF-8.
    """
    text = os.fspath(path)
    try:
        return os.fsencode(text).decode("utf-8", "backslashreplace")
    except UnicodeError:  # a surrogate that did not come from a file name
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def is_utf8_name(path: str | os.PathLike) -> bool:
    """Whether the path's bytes are valid UTF-8 (False for names an old archive left in Latin-1)."""
    try:
        os.fspath(path).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def is_image_name(name: str) -> bool:
    """Whether the loader reads a file of this name: not hidden, an extension Pillow decodes."""
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in _EXTENSIONS


def is_dir(entry: os.DirEntry) -> bool:
    """`entry.is_dir()`, False for a symlink loop (not a directory we could read)."""
    try:
        return entry.is_dir()
    except OSError:
        return False


def list_images(class_dir: Path, skipped: Skipped | None = None) -> list[Path]:
    """Image files under `class_dir`, in sub-folders too, sorted by their path relative to it.

    Like Keras' `image_dataset_from_directory`, sub-folders are read recursively and links to
    folders are not followed (so a link loop cannot hang it). Files are chosen by extension
    (`IMAGE_EXTENSIONS`); broken links and other non-folders with an image extension are listed
    too, so that the decoder reports them instead of silently dropping them.

    Args:
        class_dir: the folder of one class.
        skipped: if given, receives every entry that is not read, under its reason (SKIP_*).

    Returns:
        The image paths (`class_dir / relative path`).

    Raises:
        OSError: `class_dir` itself cannot be read (an unreadable sub-folder is skipped instead).
    """
    skipped = {} if skipped is None else skipped
    found: list[tuple[str, Path]] = []
    stack = [(Path(class_dir), "")]
    top = True
    while stack:
        folder, rel = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError:
            if top:
                raise
            skipped.setdefault(SKIP_UNREADABLE, []).append(folder)
            continue
        top = False
        for e in entries:
            path = Path(e.path)
            if e.name.startswith("."):
                skipped.setdefault(SKIP_HIDDEN, []).append(path)
            elif is_dir(e):
                if e.is_symlink():
                    skipped.setdefault(SKIP_DIR_LINK, []).append(path)
                else:
                    stack.append((path, f"{rel}{e.name}/"))
            elif is_image_name(e.name):
                found.append((rel + e.name, path))
            else:
                skipped.setdefault(SKIP_NOT_IMAGE, []).append(path)
    return [path for _, path in sorted(found)]


def skip_summary(skipped: Skipped) -> list[str]:
    """One line per reason, with counts and a few names: what the loader and `gic data check` report.

    Example: `skipped 3 file(s) that are not images this Pillow decodes (.txt 2, .json 1): a.txt, ...`
    """
    lines = []
    for reason in SKIP_REASONS:
        paths = sorted(skipped.get(reason, ()))
        if not paths:
            continue
        detail = ""
        if reason == SKIP_NOT_IMAGE:
            by_ext: dict[str, int] = {}
            for p in paths:
                ext = shown(p.suffix.lower()) or "no extension"
                by_ext[ext] = by_ext.get(ext, 0) + 1
            most_first = sorted(by_ext.items(), key=lambda kv: (-kv[1], kv[0]))
            detail = " (" + ", ".join(f"{e} {n}" for e, n in most_first) + ")"
        lines.append(f"skipped {len(paths)} {reason}{detail}: {few(paths)}")
    return lines


def few(paths: list[Path] | list[str], limit: int = SHOWN_NAMES) -> str:
    """The first `limit` paths (shown safely), then `and N more`."""
    names = ", ".join(shown(p) for p in paths[:limit])
    return names + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def require_layout(root: Path) -> tuple[dict[str, dict[str, list[Path]]], Skipped]:
    """The images of a prepared folder and what was not read.

    Returns:
        (`{split: {class: [paths]}}`, the skipped entries by reason; see `skip_summary`).

    Raises:
        DataError: naming the first missing, unreadable or empty class folder.
    """
    if not root.exists():
        raise DataError(f"{shown(root)}: no such data folder; expected {LAYOUT} images")
    if not root.is_dir():
        raise DataError(f"{shown(root)}: not a folder; expected {LAYOUT} images")
    files: dict[str, dict[str, list[Path]]] = {}
    skipped: Skipped = {}
    for split in SPLITS:
        files[split] = {}
        for cls in CLASS_NAMES:
            class_dir = root / split / cls
            if not class_dir.is_dir():
                raise DataError(f"{shown(class_dir)}: missing folder; expected {LAYOUT} under {shown(root)}")
            try:
                paths = list_images(class_dir, skipped)
            except OSError as err:
                raise DataError(f"{shown(class_dir)}: unreadable folder ({err.strerror or err})") from None
            if not paths:
                raise DataError(f"{shown(class_dir)}: {NO_IMAGES}")
            files[split][cls] = paths
    return files, skipped



# ------------------------------------------------------------------------------------ atomic folders
def fresh_dest(dest: Path) -> Path:
    """A temporary sibling folder to build `dest` in.

    Raises:
        DataError: `dest` exists and is not an empty folder.
    """
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise DataError(f"{shown(dest)}: already exists and is not empty; remove it or choose another destination")
    from gic.files import make_temp_dir

    return make_temp_dir(dest.parent, f".{dest.name}.tmp-")


def publish(tmp: Path, dest: Path) -> None:
    """Rename the finished temporary folder into place (atomic on one file system)."""
    try:
        if dest.is_dir() and not any(dest.iterdir()):
            dest.rmdir()
        os.rename(tmp, dest)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if dest.is_dir() and any(dest.iterdir()):  # another process published it first
            return
        raise
