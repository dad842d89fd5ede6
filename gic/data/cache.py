"""The on-disk cache of decoded arrays: one uncompressed .npz per folder fingerprint and image size.

A cache file is used only when its format, fingerprint (which covers the decode settings) and
image size all match; anything else (an older format, a changed file, an unreadable cache) is a
miss and the images are decoded again. Paths are stored as their bytes relative to the folder, so
any file name survives.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from gic.data.layout import CLASS_NAMES, SPLITS, Dataset, Split, shown
from gic.errors import DataError
from gic.files import umask_mode

if TYPE_CHECKING:  # pragma: no cover
    from gic.config import DataConfig

# Bump when the decoded arrays change for the same files (resize method, ...). 2: sub-folders and
# every Pillow format listed, float images scaled, paths stored as bytes.
CACHE_FORMAT = 2


def fingerprint(root: Path, files: dict[str, dict[str, list[Path]]], image_size: int, max_pixels: int) -> str:
    """Hex digest of the decode settings and, for every image, its relative path (bytes), size and mtime.

    Stat-based rather than content-based so that a cache hit does not read every file: rewriting,
    adding, removing or renaming a file changes it; copying the folder elsewhere keeps the relative
    paths but changes the mtimes (a cache miss, never a wrong hit). The pixel limit is in it because
    with `on_bad_image: skip` it decides which images the dataset holds, and caches of derived
    arrays (the trainer's phase-1 features) are keyed by this fingerprint.

    Args:
        root: the prepared folder.
        files: `{split: {class: [paths]}}` under `root`.
        image_size: side of the decoded images in px.
        max_pixels: `data.max_image_pixels`.

    Returns:
        64 hex digits (sha256).
    """
    h = hashlib.sha256(f"gic-data/{CACHE_FORMAT}/{image_size}/{max_pixels}/{','.join(CLASS_NAMES)}\n".encode())
    for split in SPLITS:
        for cls in CLASS_NAMES:
            for path in files[split][cls]:
                try:
                    st = path.stat()
                    meta = f"{st.st_size}:{st.st_mtime_ns}"
                except OSError:  # broken link: still part of the listing
                    meta = "unreadable"
                h.update(os.fsencode(path.relative_to(root).as_posix()) + f"\0{meta}\n".encode())
    return h.hexdigest()


def cache_dir(cfg_cache_dir: str | Path | None = None) -> Path:
    """`data.cache_dir`, else $GIC_CACHE_DIR, else ~/.cache/gic."""
    if cfg_cache_dir:
        return Path(cfg_cache_dir).expanduser()
    env = os.environ.get("GIC_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "gic"


def cache_path(cfg: "DataConfig", fingerprint: str) -> Path:
    """Where the decoded arrays of a folder with this fingerprint live (bad-image policy included).

    Args:
        cfg: the `data` section (its cache_dir and on_bad_image).
        fingerprint: the folder's fingerprint (see `fingerprint`).
    """
    return cache_dir(cfg.cache_dir) / f"dataset-{fingerprint[:40]}-{cfg.on_bad_image}.npz"


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def check_cache_room(folder: Path, images: int, size: int) -> int:
    """Refuse to start decoding when the cache's disk cannot hold the decoded arrays.

    The cache is uncompressed uint8: `images * size * size * 3` bytes plus a small margin.

    Returns:
        The bytes needed.

    Raises:
        DataError: naming the folder, what is needed and what is free.
    """
    needed = images * size * size * 3
    probe = Path(folder)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        free = shutil.disk_usage(probe).free
    except OSError:
        return needed  # cannot tell: the cache write itself warns if it fails
    if needed * 1.05 + (16 << 20) > free:
        raise DataError(f"{shown(folder)}: no room for the data cache ({images} images at {size} px need {_gib(needed)}, "
                        f"{_gib(free)} free); free some space or point data.cache_dir (or GIC_CACHE_DIR) at a larger disk")
    return needed


def save_cache(path: Path, ds: Dataset, root: Path) -> None:
    """Write `ds` to `path` atomically; an unwritable cache is a warning (slow next time, not wrong).

    Args:
        path: the cache file (`cache_path`).
        ds: the decoded dataset; its paths must lie under `root`.
        root: the prepared folder (paths are stored relative to it).
    """
    arrays: dict[str, np.ndarray] = {
        "format": np.asarray(CACHE_FORMAT),
        "fingerprint": np.asarray(ds.fingerprint),
        "image_size": np.asarray(ds.image_size),
        "class_names": np.asarray(ds.class_names),
    }
    for name in SPLITS:
        split = ds.split(name)
        arrays[f"{name}_images"] = split.images
        arrays[f"{name}_labels"] = split.labels
        rel = [os.fsencode(Path(p).relative_to(root).as_posix()) for p in split.paths]
        arrays[f"{name}_paths"] = np.asarray(rel, dtype=bytes) if rel else np.zeros((0,), dtype="S1")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    except OSError as err:
        warnings.warn(f"{shown(path.parent)}: cannot write the data cache ({err.strerror}); decoding again next time", stacklevel=3)
        return
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        umask_mode(tmp)  # mkstemp makes it 0600: a shared cache folder must be readable by others
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError):
            warnings.warn(f"{shown(path)}: cannot write the data cache ({err}); decoding again next time", stacklevel=3)
            return
        raise


def load_cache(path: Path, root: Path, fingerprint: str, size: int) -> Dataset | None:
    """The cached Dataset at `path` if it matches format, fingerprint and size, else None (a miss).

    An unreadable cache file is a warning and a miss.
    """
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if int(z["format"]) != CACHE_FORMAT or str(z["fingerprint"]) != fingerprint or int(z["image_size"]) != size:
                return None
            splits = {}
            for name in SPLITS:
                images = z[f"{name}_images"]
                labels = z[f"{name}_labels"].astype(np.int32, copy=False)
                paths = [str(root / os.fsdecode(p)) for p in z[f"{name}_paths"].tolist()]
                if images.shape[1:] != (size, size, 3) or images.dtype != np.uint8 or len(labels) != len(images):
                    return None
                splits[name] = Split(images=images, labels=labels, paths=paths)
            class_names = tuple(z["class_names"].tolist())
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, EOFError) as err:
        warnings.warn(f"{shown(path)}: unreadable data cache ({err}); decoding the images again", stacklevel=3)
        return None
    return Dataset(**splits, class_names=class_names, image_size=size, fingerprint=fingerprint)
