"""Image data: acquire (Kaggle download, seed split, synthetic stand-in), check, decode once.

A prepared folder has one layout, whatever its source:

    ROOT/{train,validation,test}/{men,women}/**/*.jpg|png|...  (sub-folders read, any format Pillow decodes)

`load_dataset(cfg.data)` makes sure the folder exists (generating or downloading it when the config
says so), decodes and resizes every image once into uint8 arrays and keeps those arrays in an .npz
cache keyed by the folder's fingerprint, so the next load of the same folder at the same size is a
file read. Every user mistake raises `DataError` with one line that names the file or folder.

    ds = load_dataset(cfg.data)          # Dataset(train, validation, test) of uint8 arrays
    report = check_dataset("data/menwomen")

Modules, one job each: `layout` (names, containers, listing), `decode` (one file -> array),
`cache` (fingerprint, .npz cache), `synthetic` (the generator), `sources` (seed split, Kaggle
download), `archive` (safe extraction), `check` (`gic data check`). This module loads.
"""

from __future__ import annotations

import logging
import shutil  # noqa: F401 - tests patch gic.data.shutil.disk_usage (the shutil module's own)
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from gic.data.archive import safe_extract
from gic.data.cache import CACHE_FORMAT, cache_dir, cache_path, check_cache_room, fingerprint, load_cache, save_cache
from gic.data.check import IMBALANCE_RATIO, MIN_IMAGE_SIDE, CheckReport, check_dataset
from gic.data.decode import MAX_IMAGE_PIXELS, Progress, decode_image, decode_split
from gic.data.layout import (CLASS_NAMES, IMAGE_EXTENSIONS, LAYOUT, SPLITS, SYNTH_SPEC_FILE, Dataset, Split,
                             list_images, require_layout, shown, skip_summary)
from gic.data.sources import download_kaggle, find_kaggle_part, kaggle_credentials_source, prepare_split
from gic.data.synthetic import check_synthetic_spec, make_synthetic, synth_image
from gic.errors import DataError

if TYPE_CHECKING:  # pragma: no cover
    from gic.config import DataConfig

__all__ = [
    "CACHE_FORMAT", "CLASS_NAMES", "IMAGE_EXTENSIONS", "IMBALANCE_RATIO", "MAX_IMAGE_PIXELS", "MIN_IMAGE_SIDE",
    "SPLITS", "SYNTH_SPEC_FILE", "CheckReport", "Dataset", "Split", "cache_dir", "cache_path", "check_cache_room",
    "check_dataset", "decode_image", "download_kaggle", "ensure_data", "kaggle_credentials_source", "list_images",
    "load_dataset", "make_synthetic", "prepare_split", "safe_extract", "shown", "skip_summary", "synth_image",
]

log = logging.getLogger(__name__)


def ensure_data(cfg: "DataConfig") -> Path:
    """Make sure `cfg.dir` holds a prepared folder, creating it when the source says how.

    - `synthetic`: generate it with `cfg.synthetic` when the folder is absent.
    - `kaggle`: download into `<dir>-raw` (unless already there) and prepare the seed split.
    - `folder`: it must exist.

    Returns:
        The prepared folder.

    Raises:
        DataError: a `folder` source that does not exist, a synthetic folder made with another
            spec, or a failed download or split.
    """
    root = Path(cfg.dir).expanduser()
    if root.exists():
        if cfg.source == "synthetic":
            check_synthetic_spec(root, cfg.synthetic.model_dump())
        return root
    if cfg.source == "synthetic":
        spec = cfg.synthetic
        make_synthetic(root, per_class=spec.per_class, size=spec.size, seed=spec.seed)
    elif cfg.source == "kaggle":
        raw = root.with_name(root.name + "-raw")
        if find_kaggle_part(raw, "traindata") is None:
            download_kaggle(raw)
        prepare_split(raw, root)
    else:
        raise DataError(f"{shown(root)}: no such data folder; expected {LAYOUT} images "
                        "(or set data.source to synthetic or kaggle)")
    return root


def load_dataset(cfg: "DataConfig", progress: bool = False) -> Dataset:
    """The decoded dataset of `cfg.dir` at `cfg.image_size`, from the .npz cache when it is current.

    Every file under a class folder that Pillow can decode is read, in sub-folders too; what is
    skipped (other files, hidden ones, links to folders) is reported as UserWarnings, one per kind
    with counts and a few names: the lines `gic data check` prints. (Python shows a warning that
    repeats in one process once.)

    Args:
        cfg: the `data` section of the config.
        progress: print decoding progress to stderr.

    Returns:
        A Dataset whose splits hold (N, S, S, 3) uint8 images in sorted-path order; paths are
        `str` as the file system gives them (a name that is not UTF-8 keeps its bytes as
        surrogates: print it with `gic.data.shown`).

    Raises:
        DataError: missing folder or class, empty class, or a bad image with `on_bad_image: error`
            (corrupt, truncated, over `max_image_pixels` once drafted).
    """
    root = ensure_data(cfg)
    size = int(cfg.image_size)
    max_pixels = int(cfg.max_image_pixels)
    files, skipped = require_layout(root)
    for line in skip_summary(skipped):
        warnings.warn(line, stacklevel=2)
    fp = fingerprint(root, files, size, max_pixels)
    cpath = cache_path(cfg, fp)
    cached = load_cache(cpath, root, fp, size)
    if cached is not None:
        log.info("data cache hit: %s", cpath)
        listed = [str(p) for name in SPLITS for cls in CLASS_NAMES for p in files[name][cls]]
        held = {p for name in SPLITS for p in cached.split(name).paths}
        missing = [p for p in listed if p not in held]
        if missing:  # said on every load, not only on the one that decoded them
            names = ", ".join(shown(Path(p)) for p in missing[:3]) + (", ..." if len(missing) > 3 else "")
            warnings.warn(f"skipped {len(missing)} of {len(listed)} images that could not be read "
                          f"(data.on_bad_image=skip): {names}", stacklevel=2)
        return cached

    total = sum(len(p) for per_class in files.values() for p in per_class.values())
    check_cache_room(cpath.parent, total, size)  # before minutes of decoding, not after
    bar = Progress(total) if progress else None
    # One pass over every split: a bad image anywhere is counted once, with all the others
    paths = [p for name in SPLITS for cls in CLASS_NAMES for p in files[name][cls]]
    labels = [i for name in SPLITS for i, cls in enumerate(CLASS_NAMES) for _ in files[name][cls]]
    split_of = [name for name in SPLITS for cls in CLASS_NAMES for _ in files[name][cls]]
    # decode_image is looked up here, at call time, so that a test can replace gic.data.decode_image
    images, labs, kept = decode_split(paths, labels, size, cfg.on_bad_image, bar, max_pixels, decode=decode_image)
    if len(kept) < len(paths):
        warnings.warn(f"skipped {len(paths) - len(kept)} of {len(paths)} images that could not be read "
                      "(data.on_bad_image=skip; each is named above)", stacklevel=2)
    where = dict(zip(paths, split_of))
    splits = {}
    for name in SPLITS:
        rows = np.asarray([where[p] == name for p in kept], dtype=bool)
        names = [p for p in kept if where[p] == name]
        labs_here = labs[rows] if len(kept) else labs
        for i, cls in enumerate(CLASS_NAMES):
            if not np.any(labs_here == i):
                raise DataError(f"{shown(root / name / cls)}: every image was unreadable and skipped")
        splits[name] = Split(images=images[rows] if len(kept) else images, labels=labs_here,
                             paths=[str(p) for p in names])
    ds = Dataset(**splits, class_names=CLASS_NAMES, image_size=size, fingerprint=fp)
    save_cache(cpath, ds, root)
    return ds
