"""What a prepared image folder looks like: the names, the containers, listing, building one atomically.

    ROOT/{train,validation,test}/{men,women}/*.jpg|png|...
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gic.errors import DataError

CLASS_NAMES = ("men", "women")  # label 0 = men, 1 = women
SPLITS = ("train", "validation", "test")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
SYNTH_SPEC_FILE = "synthetic.json"  # what make_synthetic was asked for, to refuse a stale folder
WORKERS = min(8, os.cpu_count() or 1)  # threads for decoding, hashing and writing images
LAYOUT = f"{{{','.join(SPLITS)}}}/{{{','.join(CLASS_NAMES)}}}/"


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
def is_image_name(name: str) -> bool:
    """Whether the loader reads a file of this name: not hidden, an image extension."""
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def is_dir(entry: os.DirEntry) -> bool:
    """`entry.is_dir()`, False for a symlink loop (not a directory we could read)."""
    try:
        return entry.is_dir()
    except OSError:
        return False


def list_images(class_dir: Path) -> list[Path]:
    """Image files directly in `class_dir` (by extension, hidden files ignored), sorted by name.

    Broken links and other non-directories with an image extension are listed too, so that the
    decoder reports them instead of silently dropping them.
    """
    out = []
    with os.scandir(class_dir) as it:
        for entry in it:
            if is_image_name(entry.name) and not is_dir(entry):
                out.append(Path(entry.path))
    return sorted(out, key=lambda p: p.name)


def require_layout(root: Path) -> dict[str, dict[str, list[Path]]]:
    """`{split: {class: [paths]}}` of a prepared folder.

    Raises:
        DataError: naming the first missing folder or empty class.
    """
    if not root.exists():
        raise DataError(f"{root}: no such data folder; expected {LAYOUT} images")
    if not root.is_dir():
        raise DataError(f"{root}: not a folder; expected {LAYOUT} images")
    files: dict[str, dict[str, list[Path]]] = {}
    for split in SPLITS:
        files[split] = {}
        for cls in CLASS_NAMES:
            class_dir = root / split / cls
            if not class_dir.is_dir():
                raise DataError(f"{class_dir}: missing folder; expected {LAYOUT} under {root}")
            paths = list_images(class_dir)
            if not paths:
                raise DataError(f"{class_dir}: no images (expected {', '.join(IMAGE_EXTENSIONS)} files)")
            files[split][cls] = paths
    return files


# ------------------------------------------------------------------------------------ atomic folders
def fresh_dest(dest: Path) -> Path:
    """A temporary sibling folder to build `dest` in.

    Raises:
        DataError: `dest` exists and is not an empty folder.
    """
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise DataError(f"{dest}: already exists and is not empty; remove it or choose another destination")
    dest.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.tmp-"))


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
