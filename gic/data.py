"""Image data: acquire (Kaggle download, seed split, synthetic stand-in), check, decode once.

A prepared folder has one layout, whatever its source:

    ROOT/{train,validation,test}/{men,women}/*.jpg|png|...

`load_dataset(cfg.data)` makes sure the folder exists (generating or downloading it when the config
says so), decodes and resizes every image once into uint8 arrays and keeps those arrays in an .npz
cache keyed by the folder's fingerprint, so the next load of the same folder at the same size is a
file read. Every user mistake raises `DataError` with one line that names the file or folder.

    ds = load_dataset(cfg.data)          # Dataset(train, validation, test) of uint8 arrays
    report = check_dataset("data/menwomen")
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import logging
import os
import shutil
import stat
import sys
import tarfile
import tempfile
import threading
import warnings
import zipfile
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageDraw, ImageFile, ImageOps, UnidentifiedImageError

from gic.errors import DataError

if TYPE_CHECKING:  # pragma: no cover
    from gic.config import DataConfig

log = logging.getLogger(__name__)

CLASS_NAMES = ("men", "women")  # label 0 = men, 1 = women
SPLITS = ("train", "validation", "test")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
# Refuse images above 64 Mpx (8000 x 8000) before decoding them: a small file can claim a huge size
# (a decompression bomb). PIL's own guard is looser (89 Mpx warns, 179 Mpx fails).
MAX_IMAGE_PIXELS = 64_000_000
MIN_IMAGE_SIDE = 32  # smaller images are upscaled a lot: check warns about them
IMBALANCE_RATIO = 1.5  # check warns when the largest class of a split is this much bigger
SYNTH_SPEC_FILE = "synthetic.json"  # what make_synthetic was asked for, to refuse a stale folder
CACHE_FORMAT = 1  # bump when the decoded arrays change for the same files (resize method, ...)
_WORKERS = min(8, os.cpu_count() or 1)

ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is an error, not a grey bottom half


# ------------------------------------------------------------------------------------ containers
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
        if name not in SPLITS:
            raise KeyError(f"unknown split {name!r}; expected one of {SPLITS}")
        return getattr(self, name)


@dataclass
class CheckReport:
    """What `check_dataset` found: errors make the folder unusable, warnings are worth a look."""

    root: str
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors

    def lines(self) -> list[str]:
        out = [f"error: {e}" for e in self.errors] + [f"warning: {w}" for w in self.warnings]
        sizes = ", ".join(
            f"{split} " + "/".join(str(self.counts[split].get(c, 0)) for c in CLASS_NAMES)
            for split in SPLITS if split in self.counts
        )
        verdict = "ok" if not self.errors and not self.warnings else (
            f"{len(self.errors)} error(s), {len(self.warnings)} warning(s)")
        out.append(f"{self.root}: {verdict}" + (f" ({sizes} images of {'/'.join(CLASS_NAMES)})" if sizes else ""))
        return out


# ------------------------------------------------------------------------------------ listing
def _is_image_name(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def list_images(class_dir: Path) -> list[Path]:
    """Image files directly in `class_dir` (by extension, hidden files ignored), sorted by name.

    Broken links and other non-directories with an image extension are listed too, so that the
    decoder reports them instead of silently dropping them.
    """
    out = []
    with os.scandir(class_dir) as it:
        for entry in it:
            if _is_image_name(entry.name) and not _is_dir(entry):
                out.append(Path(entry.path))
    return sorted(out, key=lambda p: p.name)


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:  # a symlink loop: not a directory we could read
        return False


def _require_layout(root: Path) -> dict[str, dict[str, list[Path]]]:
    """`{split: {class: [paths]}}` of a prepared folder, or DataError naming the first gap."""
    if not root.exists():
        raise DataError(f"{root}: no such data folder; expected {{{','.join(SPLITS)}}}/{{{','.join(CLASS_NAMES)}}}/ images")
    if not root.is_dir():
        raise DataError(f"{root}: not a folder; expected {{{','.join(SPLITS)}}}/{{{','.join(CLASS_NAMES)}}}/ images")
    files: dict[str, dict[str, list[Path]]] = {}
    for split in SPLITS:
        files[split] = {}
        for cls in CLASS_NAMES:
            class_dir = root / split / cls
            if not class_dir.is_dir():
                raise DataError(f"{class_dir}: missing folder; expected {{{','.join(SPLITS)}}}/{{{','.join(CLASS_NAMES)}}}/ under {root}")
            paths = list_images(class_dir)
            if not paths:
                raise DataError(f"{class_dir}: no images (expected {', '.join(IMAGE_EXTENSIONS)} files)")
            files[split][cls] = paths
    return files


def dataset_fingerprint(root: str | Path, image_size: int) -> str:
    """Hex digest of the image size and, for every image, its relative path, size and mtime.

    Stat-based rather than content-based so that a cache hit does not read every file: rewriting,
    adding, removing or renaming a file changes it; copying the folder elsewhere keeps the relative
    paths but changes the mtimes (a cache miss, never a wrong hit).
    """
    root = Path(root)
    files = _require_layout(root)
    return _fingerprint(root, files, image_size)


def _fingerprint(root: Path, files: dict[str, dict[str, list[Path]]], image_size: int) -> str:
    h = hashlib.sha256(f"gic-data/{CACHE_FORMAT}/{image_size}/{','.join(CLASS_NAMES)}\n".encode())
    for split in SPLITS:
        for cls in CLASS_NAMES:
            for path in files[split][cls]:
                try:
                    st = path.stat()
                    meta = f"{st.st_size}:{st.st_mtime_ns}"
                except OSError:  # broken link: still part of the listing
                    meta = "unreadable"
                h.update(f"{path.relative_to(root).as_posix()}\0{meta}\n".encode())
    return h.hexdigest()


# ------------------------------------------------------------------------------------ decoding
def _to_rgb(im: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB: alpha composited on white, 16-bit and float scaled to 0..255."""
    mode = im.mode
    if mode == "RGB":
        return im
    if mode.startswith("I") or mode == "F":  # 16/32-bit integer or float grayscale
        arr = np.asarray(im, dtype=np.float64)
        if mode.startswith("I;16") or (mode == "I" and arr.max(initial=0) > 255):
            arr = arr / 257.0  # 0..65535 -> 0..255
        arr = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
        return Image.fromarray(arr).convert("RGB")  # mode inferred from the 2-D uint8 array: L
    if mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV


def _open_checked(source, name: str | Path) -> Image.Image:
    """Open an image and refuse a decompression bomb before any pixel is decoded."""
    try:
        im = Image.open(source)
    except Image.DecompressionBombError:
        raise DataError(f"{name}: image too large to decode safely (over {MAX_IMAGE_PIXELS:,} pixels)") from None
    w, h = im.size
    if w * h > MAX_IMAGE_PIXELS:
        im.close()
        raise DataError(f"{name}: image too large to decode safely ({w}x{h} px, limit {MAX_IMAGE_PIXELS:,} pixels)")
    return im


def _bad_image_reason(err: BaseException) -> str:
    if isinstance(err, UnidentifiedImageError):
        return "not a readable image (unknown or corrupt format)"
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    return f"not a readable image ({text})"


def decode_image(path: str | Path, size: int) -> np.ndarray:
    """Decode one image file into a (size, size, 3) uint8 RGB array.

    Big JPEGs are decoded at a reduced scale (`Image.draft`) close to `size`, so a 6000 px photo
    does not need its full-size buffer. EXIF orientation is applied; the image is stretched to a
    square (as Keras' `image_dataset_from_directory` does) with bilinear resampling.

    Raises:
        DataError: the file is missing, empty, corrupt, truncated or too large.
    """
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise DataError(f"{path}: empty file (0 bytes); expected an image")
        with _open_checked(path, path) as im:
            if im.format == "JPEG":
                im.draft("RGB", (size, size))  # DCT scaling: decodes at >= size, 1/2..1/8 scale
            im.load()
            im = ImageOps.exif_transpose(im)
            im = _to_rgb(im)
            if im.size != (size, size):
                im = im.resize((size, size), Image.Resampling.BILINEAR)
            arr = np.asarray(im, dtype=np.uint8)
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"{path}: file not found (a broken link?)") from None
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as err:
        raise DataError(f"{path}: {_bad_image_reason(err)}") from None
    if arr.shape != (size, size, 3):  # pragma: no cover - _to_rgb guarantees RGB
        raise DataError(f"{path}: decoded to shape {arr.shape}, expected ({size}, {size}, 3)")
    return arr


def _decode_split(paths: list[Path], labels: list[int], size: int, on_bad_image: str,
                  progress: "_Progress | None") -> tuple[np.ndarray, np.ndarray, list[Path]]:
    images = np.empty((len(paths), size, size, 3), dtype=np.uint8)
    bad: dict[int, str] = {}

    def work(i: int) -> None:
        try:
            images[i] = decode_image(paths[i], size)
        except DataError as err:
            bad[i] = str(err)
        if progress:
            progress.step()

    with ThreadPoolExecutor(max_workers=_WORKERS) as pool:  # PIL releases the GIL while decoding
        list(pool.map(work, range(len(paths))))
    if bad:
        first = min(bad)
        if on_bad_image == "error":
            more = f" (and {len(bad) - 1} more bad image(s); data.on_bad_image=skip skips them)" if len(bad) > 1 else ""
            raise DataError(bad[first] + more)
        for i in sorted(bad):
            warnings.warn(f"skipped {bad[i]}", stacklevel=3)
        keep = [i for i in range(len(paths)) if i not in bad]
        return images[keep], np.asarray(labels, dtype=np.int32)[keep], [paths[i] for i in keep]
    return images, np.asarray(labels, dtype=np.int32), paths


class _Progress:
    def __init__(self, total: int, every: int = 200):
        self.total, self.every, self.done = total, every, 0
        self._lock = threading.Lock()

    def step(self) -> None:
        with self._lock:
            self.done += 1
            if self.done % self.every == 0 or self.done == self.total:
                print(f"decoded {self.done}/{self.total} images", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------ cache
def cache_dir(cfg_cache_dir: str | Path | None = None) -> Path:
    """`data.cache_dir`, else $GIC_CACHE_DIR, else ~/.cache/gic."""
    if cfg_cache_dir:
        return Path(cfg_cache_dir).expanduser()
    env = os.environ.get("GIC_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "gic"


def cache_path(cfg: "DataConfig", fingerprint: str) -> Path:
    """Where the decoded arrays of a folder with this fingerprint live (bad-image policy included)."""
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
        raise DataError(f"{folder}: no room for the data cache ({images} images at {size} px need {_gib(needed)}, "
                        f"{_gib(free)} free); free some space or point data.cache_dir (or GIC_CACHE_DIR) at a larger disk")
    return needed


def _save_cache(path: Path, ds: Dataset, root: Path) -> None:
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
        rel = [Path(p).relative_to(root).as_posix() for p in split.paths]
        arrays[f"{name}_paths"] = np.asarray(rel, dtype=str) if rel else np.zeros((0,), dtype="<U1")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    except OSError as err:  # an unwritable cache is slow, not wrong
        warnings.warn(f"{path.parent}: cannot write the data cache ({err.strerror}); decoding again next time", stacklevel=3)
        return
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError):
            warnings.warn(f"{path}: cannot write the data cache ({err}); decoding again next time", stacklevel=3)
            return
        raise


def _load_cache(path: Path, root: Path, fingerprint: str, size: int) -> Dataset | None:
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
                paths = [str(root / p) for p in z[f"{name}_paths"].tolist()]
                if images.shape[1:] != (size, size, 3) or images.dtype != np.uint8 or len(labels) != len(images):
                    return None
                splits[name] = Split(images=images, labels=labels, paths=paths)
            class_names = tuple(z["class_names"].tolist())
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, EOFError) as err:
        warnings.warn(f"{path}: unreadable data cache ({err}); decoding the images again", stacklevel=3)
        return None
    return Dataset(**splits, class_names=class_names, image_size=size, fingerprint=fingerprint)


# ------------------------------------------------------------------------------------ loading
def _check_synthetic_spec(root: Path, wanted: dict) -> None:
    """A synthetic folder made with another spec is not silently reused."""
    try:
        made = json.loads((root / SYNTH_SPEC_FILE).read_text())
    except (OSError, ValueError):
        return  # not made by make_synthetic (or by an older one): the user's folder, taken as is
    if made != wanted:
        diff = ", ".join(f"{k} {made.get(k)} (config: {v})" for k, v in wanted.items() if made.get(k) != v)
        raise DataError(f"{root}: synthetic data made with {diff}; delete the folder to regenerate it, "
                        "or point data.dir elsewhere")


def ensure_data(cfg: "DataConfig") -> Path:
    """Make sure `cfg.dir` holds a prepared folder, creating it when the source says how.

    - `synthetic`: generate it with `cfg.synthetic` when the folder is absent.
    - `kaggle`: download into `<dir>-raw` (unless already there) and prepare the seed split.
    - `folder`: it must exist.

    Returns:
        The prepared folder.
    """
    root = Path(cfg.dir).expanduser()
    if root.exists():
        if cfg.source == "synthetic":
            _check_synthetic_spec(root, cfg.synthetic.model_dump())
        return root
    if cfg.source == "synthetic":
        spec = cfg.synthetic
        make_synthetic(root, per_class=spec.per_class, size=spec.size, seed=spec.seed)
    elif cfg.source == "kaggle":
        raw = root.with_name(root.name + "-raw")
        if _find_kaggle_part(raw, "traindata") is None:
            download_kaggle(raw)
        prepare_split(raw, root)
    else:
        raise DataError(
            f"{root}: no such data folder; expected {{{','.join(SPLITS)}}}/{{{','.join(CLASS_NAMES)}}}/ images "
            "(or set data.source to synthetic or kaggle)")
    return root


def load_dataset(cfg: "DataConfig", progress: bool = False) -> Dataset:
    """The decoded dataset of `cfg.dir` at `cfg.image_size`, from the .npz cache when it is current.

    Args:
        cfg: the `data` section of the config.
        progress: print decoding progress to stderr.

    Returns:
        A Dataset whose splits hold (N, S, S, 3) uint8 images in sorted-path order.

    Raises:
        DataError: missing folder or class, empty class, or a bad image with `on_bad_image: error`.
    """
    root = ensure_data(cfg)
    size = int(cfg.image_size)
    files = _require_layout(root)
    fingerprint = _fingerprint(root, files, size)
    cpath = cache_path(cfg, fingerprint)
    cached = _load_cache(cpath, root, fingerprint, size)
    if cached is not None:
        log.info("data cache hit: %s", cpath)
        return cached

    total = sum(len(p) for per_class in files.values() for p in per_class.values())
    check_cache_room(cpath.parent, total, size)  # before minutes of decoding, not after
    bar = _Progress(total) if progress else None
    splits = {}
    for name in SPLITS:
        paths = [p for cls in CLASS_NAMES for p in files[name][cls]]
        labels = [i for i, cls in enumerate(CLASS_NAMES) for _ in files[name][cls]]
        images, labs, kept = _decode_split(paths, labels, size, cfg.on_bad_image, bar)
        for i, cls in enumerate(CLASS_NAMES):
            if not np.any(labs == i):
                raise DataError(f"{root / name / cls}: every image was unreadable and skipped")
        splits[name] = Split(images=images, labels=labs, paths=[str(p) for p in kept])
    ds = Dataset(**splits, class_names=CLASS_NAMES, image_size=size, fingerprint=fingerprint)
    _save_cache(cpath, ds, root)
    return ds


# ------------------------------------------------------------------------------------ atomic dirs
def _fresh_dest(dest: Path) -> Path:
    """A temporary sibling folder to build `dest` in; refuses a non-empty `dest`."""
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise DataError(f"{dest}: already exists and is not empty; remove it or choose another destination")
    dest.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.tmp-"))


def _publish(tmp: Path, dest: Path) -> None:
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


# ------------------------------------------------------------------------------------ synthetic
def _synth_counts(per_class: int) -> dict[str, int]:
    # The seed split is 799 / 200 / 400 per class: validation ~1/4 and test ~1/2 of train.
    return {"train": per_class, "validation": max(2, per_class // 4), "test": max(2, per_class // 2)}


_GLYPH_COUNT = (3, 8)  # 3..7 glyphs per image
_GLYPH_RADIUS = (0.09, 0.17)  # fraction of the image side


def _contrasting_colours(rng: np.random.Generator) -> tuple[tuple[int, ...], tuple[int, ...]]:
    while True:
        bg, fg = rng.integers(0, 256, size=(2, 3))
        luma = np.array([0.299, 0.587, 0.114])
        if abs(float(luma @ (fg - bg))) > 70:
            return tuple(int(v) for v in bg), tuple(int(v) for v in fg)


def _draw_glyph(draw: ImageDraw.ImageDraw, label: int, cx: float, cy: float, r: float, width: float,
                angle: float, colour: tuple[int, ...]) -> None:
    if label == 0:  # ring
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=colour, width=max(1, int(round(width))))
        return
    # cross: two bars through the centre, rotated as a whole
    c, s = np.cos(angle), np.sin(angle)
    for ux, uy in ((c, s), (-s, c)):
        vx, vy = -uy, ux  # normal of the bar
        hw = width / 2
        corners = [(cx + ux * r * a + vx * hw * b, cy + uy * r * a + vy * hw * b)
                   for a, b in ((-1, -1), (1, -1), (1, 1), (-1, 1))]
        draw.polygon(corners, fill=colour)


def synth_image(label: int, size: int, rng: np.random.Generator) -> Image.Image:
    """One synthetic image: 3-7 small rings (label 0) or crosses (label 1) on a random background.

    Colours, background gradient, glyph count, positions, radii, stroke widths and rotations are
    random, and a few filled squares are drawn in either class as distractors. The image is drawn at
    twice its size and downscaled (anti-aliasing), then light pixel noise is added.
    """
    scale = 2
    big = size * scale
    bg, fg = _contrasting_colours(rng)
    # a linear background gradient towards a second random colour
    bg2 = rng.integers(0, 256, size=3)
    t = np.linspace(0.0, 1.0, big)[:, None, None]
    angle = rng.uniform(0, 2 * np.pi)
    ramp = np.cos(angle) * t + np.sin(angle) * t.transpose(1, 0, 2)
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-9) * rng.uniform(0.0, 0.5)
    canvas = (np.asarray(bg, np.float32) * (1 - ramp) + bg2.astype(np.float32) * ramp).astype(np.uint8)
    im = Image.fromarray(canvas, "RGB")
    draw = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(0, 3))):  # distractors, present in both classes
        half = rng.uniform(0.03, 0.07) * big
        x, y = rng.uniform(0, big, size=2)
        colour = tuple(int(v) for v in rng.integers(0, 256, size=3))
        draw.rectangle([x - half, y - half, x + half, y + half], fill=colour)
    for _ in range(int(rng.integers(*_GLYPH_COUNT))):
        r = rng.uniform(*_GLYPH_RADIUS) * big
        width = max(2.0, r * rng.uniform(0.25, 0.45))
        cx, cy = rng.uniform(r * 0.5, big - r * 0.5, size=2)
        jitter = rng.integers(-25, 26, size=3)
        colour = tuple(int(v) for v in np.clip(np.asarray(fg) + jitter, 0, 255))
        _draw_glyph(draw, label, cx, cy, r, width, rng.uniform(0, np.pi), colour)
    im = im.resize((size, size), Image.Resampling.BILINEAR)
    noise = rng.normal(0, 6, size=(size, size, 3))
    arr = np.clip(np.asarray(im, np.float32) + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(arr, "RGB")


def make_synthetic(dest: str | Path, per_class: int = 60, size: int = 64, seed: int = 0) -> dict[str, int]:
    """Write a synthetic stand-in dataset: men = many small rings, women = many small crosses.

    Layout and proportions follow the seed split (train 799 / validation 200 / test 400 per class):
    `per_class` training images per class, validation `max(2, per_class // 4)`, test
    `max(2, per_class // 2)`. Every image has its own random generator derived from
    (seed, split, class, index), and PNGs carry no timestamps: the same seed gives identical bytes.

    The class is a shape property that survives global average pooling, under random colours,
    backgrounds, positions, sizes and rotations, so a linear model on raw pixels cannot separate the
    classes while a small CNN, or a head on frozen VGG16 features, can. Measured on this generator
    (per_class=200, seed 0: 400 train / 100 validation / 200 test images; 2-core CPU, fp32):

    at 64 px
    - logistic regression on raw pixels (numpy, L2 1e-3..1e-1): test accuracy 0.41-0.55 (chance;
      it fits the 400 training images perfectly and does not generalise)
    - tiny Keras CNN (conv 32-64-64, GAP, Adam 1e-3, no augmentation): validation accuracy stays near
      0.55-0.6 for ~25 epochs, then climbs: test 0.67 after 30 epochs, 0.945 after 60 (~100 s)
    - frozen VGG16 with `hed` weights + GAP + logistic regression: test accuracy 0.965
    - frozen VGG16 with random weights (`none`) + GAP + logistic regression: 0.54 (chance: random
      features are not enough; use `hed` or `imagenet` to see learning)
    at 32 px (same generator at size 32)
    - raw pixels 0.42-0.52; tiny CNN 0.80 after 30 epochs; VGG16 `hed` features 0.76; `none` 0.55

    Args:
        dest: output folder; must not exist or be empty.
        per_class: training images per class.
        size: image side in px.
        seed: generator seed.

    Returns:
        Image counts per split (both classes together).
    """
    dest = Path(dest)
    if per_class < 2:
        raise DataError(f"{dest}: per_class = {per_class}; expected at least 2")
    if size < 16:
        raise DataError(f"{dest}: size = {size}; expected at least 16 px")
    counts = _synth_counts(per_class)
    tmp = _fresh_dest(dest)
    try:
        jobs = []
        for s, split in enumerate(SPLITS):
            for label, cls in enumerate(CLASS_NAMES):
                (tmp / split / cls).mkdir(parents=True)
                jobs += [(s, split, label, cls, i) for i in range(counts[split])]

        def write(job: tuple) -> None:
            s, split, label, cls, i = job
            rng = np.random.default_rng([seed, s, label, i])
            synth_image(label, size, rng).save(tmp / split / cls / f"{cls}_{i:05d}.png", format="PNG", optimize=False)

        with ThreadPoolExecutor(max_workers=_WORKERS) as pool:
            list(pool.map(write, jobs))
        (tmp / SYNTH_SPEC_FILE).write_text(json.dumps({"per_class": per_class, "size": size, "seed": seed}) + "\n")
        _publish(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {split: n * len(CLASS_NAMES) for split, n in counts.items()}


# ------------------------------------------------------------------------------------ seed split
def _find_kaggle_part(raw: Path, part: str) -> Path | None:
    """`raw/part/part` or `raw/part`, whichever holds the class folders."""
    for candidate in (raw / part / part, raw / part):
        if all((candidate / cls).is_dir() for cls in CLASS_NAMES):
            return candidate
    return None


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def prepare_split(raw: str | Path, dest: str | Path, val_per_class: int = 200, train_per_class: int = 799,
                  test_per_class: int = 400, seed: int = 0) -> dict[str, int]:
    """Build the seed split from the extracted Kaggle archive.

    Per class, after sorting the file names and a seeded shuffle: validation = the first
    `val_per_class` of traindata, train = the next `train_per_class`, test = the first
    `test_per_class` of testdata. Files are hard-linked when possible, else copied; the output is
    built in a temporary folder and renamed into place.

    Args:
        raw: extracted archive with `traindata/traindata/{men,women}` and `testdata/testdata/{men,women}`
            (or one level less nesting).
        dest: output folder `{train,validation,test}/{men,women}`; must not exist or be empty.

    Returns:
        Image counts per split (both classes together).
    """
    raw, dest = Path(raw), Path(dest)
    if not raw.is_dir():
        raise DataError(f"{raw}: no such folder; expected the extracted Kaggle archive (gic data download)")
    wanted = {"traindata": val_per_class + train_per_class, "testdata": test_per_class}
    chosen: dict[str, dict[str, list[Path]]] = {split: {} for split in SPLITS}
    for p, (part, needed) in enumerate(wanted.items()):
        base = _find_kaggle_part(raw, part)
        if base is None:
            raise DataError(f"{raw}: expected {part}/{part}/{{{','.join(CLASS_NAMES)}}} (or {part}/{{{','.join(CLASS_NAMES)}}}) from the Kaggle archive")
        for label, cls in enumerate(CLASS_NAMES):
            files = list_images(base / cls)
            if len(files) < needed:
                what = (f"validation {val_per_class} + train {train_per_class}" if part == "traindata"
                        else f"test {test_per_class}")
                raise DataError(f"{base / cls}: found {len(files)} images, need {needed} ({what})")
            order = np.random.default_rng([seed, p, label]).permutation(len(files))
            picked = [files[i] for i in order[:needed]]
            if part == "traindata":
                chosen["validation"][cls] = picked[:val_per_class]
                chosen["train"][cls] = picked[val_per_class:]
            else:
                chosen["test"][cls] = picked
    tmp = _fresh_dest(dest)
    try:
        for split in SPLITS:
            for cls in CLASS_NAMES:
                (tmp / split / cls).mkdir(parents=True)
                for src in chosen[split][cls]:
                    _link_or_copy(src, tmp / split / cls / src.name)
        _publish(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {split: sum(len(v) for v in chosen[split].values()) for split in SPLITS}


# ------------------------------------------------------------------------------------ archives
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


def safe_extract(archive: str | Path, dest: str | Path) -> Path:
    """Extract a .zip or .tar(.gz/.bz2/.xz) archive into `dest`, refusing unsafe members first.

    Every member is checked before anything is written: absolute paths, `..` components, links
    (symbolic or hard) and device, FIFO or other special files are refused with a DataError that
    names the member. Only regular files and folders are written.

    Returns:
        `dest`.
    """
    archive, dest = Path(archive), Path(dest)
    if not archive.is_file():
        raise DataError(f"{archive}: no such archive file")
    if zipfile.is_zipfile(archive):
        _extract_zip(archive, dest)
    elif tarfile.is_tarfile(archive):
        _extract_tar(archive, dest)
    else:
        raise DataError(f"{archive}: not a zip or tar archive")
    return dest


def _inside(dest: Path, name: str) -> Path:
    target = (dest / name.replace("\\", "/")).resolve()
    if target != dest and dest not in target.parents:
        raise DataError(f"refusing archive member {name!r}: it would be written outside {dest}")
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


def _write_members(archive: Path, dest: Path, members: list[tuple[str, str | None, bool, Any]]) -> None:
    """Check every member (name, why its kind is refused, is a folder, opener) before writing any."""
    for name, kind, _, _ in members:
        why = _unsafe_member_name(name) or kind
        if why:
            raise DataError(f"{archive}: refusing member {name!r} ({why}); nothing was extracted")
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
        raise DataError(f"{archive}: corrupt zip archive ({err})") from None


def _extract_tar(archive: Path, dest: Path) -> None:
    try:
        with tarfile.open(archive) as tf:
            _write_members(archive, dest, [(m.name, _tar_kind(m), m.isdir(), functools.partial(tf.extractfile, m))
                                           for m in tf.getmembers()])
    except (tarfile.TarError, EOFError) as err:
        raise DataError(f"{archive}: corrupt tar archive ({err})") from None


# ------------------------------------------------------------------------------------ kaggle
def _kaggle_config_dir() -> Path:
    env = os.environ.get("KAGGLE_CONFIG_DIR")
    if env:
        return Path(env).expanduser()
    home = Path.home() / ".kaggle"
    if home.exists():
        return home
    xdg = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(xdg) / "kaggle"


def kaggle_credentials_source() -> str:
    """Where the Kaggle credentials come from (a description, never the key), or DataError.

    Checked before importing `kaggle`, because importing it tries to authenticate and prints a long
    help text (older versions exit the process) when nothing is configured.
    """
    if os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"):
        return "KAGGLE_USERNAME/KAGGLE_KEY"
    if os.environ.get("KAGGLE_API_TOKEN"):
        return "KAGGLE_API_TOKEN"
    config = _kaggle_config_dir() / "kaggle.json"
    if config.is_file():
        try:
            values = json.loads(config.read_text())
        except (OSError, ValueError, UnicodeDecodeError):
            raise DataError(f"{config}: not readable JSON; expected {{\"username\": ..., \"key\": ...}} "
                            "from kaggle.com > Settings > API > Create New Token") from None
        if not isinstance(values, dict) or not values.get("username") or not values.get("key"):
            raise DataError(f"{config}: expected the keys \"username\" and \"key\" "
                            "(download a fresh token from kaggle.com > Settings > API)")
        mode = config.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            warnings.warn(f"{config}: readable by other users; run `chmod 600 {config}`", stacklevel=3)
        return str(config)
    for token in (Path.home() / ".kaggle" / "access_token", Path.home() / ".kaggle" / "access_token.txt"):
        if token.is_file() and token.stat().st_size > 0:
            return str(token)
    raise DataError(
        f"no Kaggle credentials: save kaggle.json (kaggle.com > Settings > API > Create New Token) as "
        f"{config} and chmod 600 it, or set KAGGLE_USERNAME and KAGGLE_KEY")


def download_kaggle(dest: str | Path, dataset: str = "saadpd/menwomen-classification") -> Path:
    """Download a Kaggle dataset's zip and extract it safely into `dest`.

    Credentials: kaggle.json in ~/.kaggle (or $KAGGLE_CONFIG_DIR), or KAGGLE_USERNAME + KAGGLE_KEY,
    or KAGGLE_API_TOKEN. The key is never printed. The zip is fetched without the library's own
    unzip, checked member by member by `safe_extract`, and deleted afterwards.

    Returns:
        `dest`, holding the extracted archive (for this dataset: traindata/ and testdata/).
    """
    dest = Path(dest)
    if "/" not in dataset:
        raise DataError(f"dataset {dataset!r}: expected a Kaggle slug owner/name, e.g. saadpd/menwomen-classification")
    source = kaggle_credentials_source()
    try:
        # Importing kaggle authenticates and may print help text: keep it off our stdout.
        with io.StringIO() as sink, contextlib.redirect_stdout(sink):
            from kaggle.api.kaggle_api_extended import KaggleApi
            api = KaggleApi()
            api.authenticate()
    except SystemExit:
        raise DataError(f"Kaggle refused the credentials from {source}; create a new token at kaggle.com > Settings > API") from None
    except ImportError as err:
        raise DataError(f"the kaggle package is not importable ({err}); pip install 'kaggle>=1.6,<3'") from None
    created = not dest.exists()
    dest.mkdir(parents=True, exist_ok=True)
    download = Path(tempfile.mkdtemp(dir=dest, prefix=".download-"))
    done = False
    try:
        log.info("downloading %s with credentials from %s", dataset, source)
        try:
            api.dataset_download_files(dataset, path=str(download), quiet=False, unzip=False)
        except Exception as err:  # network, 403, 404: the library raises many kinds
            text = str(err).splitlines()[0] if str(err) else ""
            raise DataError(f"download of Kaggle dataset {dataset!r} failed: {type(err).__name__}: {text}"[:300]) from None
        zips = sorted(download.glob("*.zip"))
        if not zips:
            raise DataError(f"download of Kaggle dataset {dataset!r} produced no zip file in {download}")
        # extract beside the zip, then move the finished top-level entries into place
        extracted = safe_extract(zips[0], download / "extracted")
        for entry in sorted(extracted.iterdir()):
            target = dest / entry.name
            if target.exists():
                raise DataError(f"{target}: already exists; remove it or choose another --dest")
            os.replace(entry, target)
        done = True
    finally:
        shutil.rmtree(download, ignore_errors=True)
        if created and not done:
            with contextlib.suppress(OSError):
                dest.rmdir()  # only if still empty
    return dest


# ------------------------------------------------------------------------------------ check
_MODE_WARNINGS = {
    "L": "grayscale", "1": "black-and-white (1-bit)", "LA": "grayscale with alpha", "P": "palette",
    "PA": "palette with alpha", "RGBA": "RGBA (alpha)", "CMYK": "CMYK", "YCbCr": "YCbCr", "LAB": "LAB",
    "HSV": "HSV", "I;16": "16-bit grayscale", "I;16B": "16-bit grayscale", "I;16L": "16-bit grayscale",
    "I;16N": "16-bit grayscale", "I": "32-bit integer", "F": "32-bit float",
}


def _inspect_file(path: Path) -> tuple[str | None, str | None, tuple[int, int] | None, str | None]:
    """(digest, error, size, mode) of one image file, decoding it fully from one read."""
    try:
        data = path.read_bytes()
    except OSError as err:
        return None, f"{path}: unreadable ({err.strerror or err}; a broken link or symlink loop?)", None, None
    digest = hashlib.sha256(data).hexdigest()
    if not data:
        return digest, f"{path}: empty file (0 bytes); expected an image", None, None
    try:
        with _open_checked(io.BytesIO(data), path) as im:
            mode, size = im.mode, im.size
            if im.format == "PNG" and im.info.get("transparency") is not None and mode == "P":
                mode = "PA"
            if im.format == "PNG" and mode in ("RGB", "L"):
                bits = _png_bit_depth(data)
                if bits == 16:
                    mode = "I;16" if mode == "L" else "RGB;16"
            if im.format == "JPEG":
                im.draft(im.mode, (512, 512))  # still reads every byte: truncation is caught
            im.load()
    except DataError as err:
        return digest, str(err), None, None
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as err:
        return digest, f"{path}: {_bad_image_reason(err)}", None, None
    return digest, None, size, mode


def _png_bit_depth(data: bytes) -> int | None:
    # IHDR is the first chunk: 8-byte signature, length, "IHDR", width, height, bit depth
    if len(data) > 24 and data[12:16] == b"IHDR":
        return data[24]
    return None


def check_dataset(root: str | Path) -> CheckReport:
    """Check a prepared folder without changing it.

    Errors: a missing or extra split/class folder, an empty class, an undecodable image (corrupt,
    truncated, empty, not an image, too large), the same file content in two splits (leakage: it
    inflates validation/test accuracy) or under both classes of a split (contradictory labels).
    Warnings: images the loader converts (grayscale, alpha, palette, CMYK, 16-bit), images smaller
    than 32 px, duplicates within one class of a split, class imbalance over 1.5x within a split,
    stray files and folders the loader ignores.

    Only the fixed depth split/class/file is read, and folders are never followed recursively, so a
    symlink loop cannot hang it.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such data folder; expected {{{','.join(SPLITS)}}}/{{{','.join(CLASS_NAMES)}}}/ images")
    report = CheckReport(root=str(root))
    images: list[tuple[str, str, Path]] = []  # (split, class, path)

    def scan(folder: Path, expected: tuple[str, ...], kind: str) -> list[str]:
        present = []
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
        for e in entries:
            if e.name.startswith(".") or e.name == SYNTH_SPEC_FILE:
                continue
            if _is_dir(e):
                if e.name in expected:
                    present.append(e.name)
                else:
                    report.errors.append(f"{e.path}: unexpected {kind} folder; expected only {', '.join(expected)}")
            else:
                report.warnings.append(f"{e.path}: stray file, ignored by the loader")
        for name in expected:
            if name not in present:
                report.errors.append(f"{folder / name}: missing {kind} folder")
        return present

    for split in scan(root, SPLITS, "split"):
        report.counts[split] = {}
        for cls in scan(root / split, CLASS_NAMES, "class"):
            class_dir = root / split / cls
            files = list_images(class_dir)
            report.counts[split][cls] = len(files)
            if not files:
                report.errors.append(f"{class_dir}: no images (expected {', '.join(IMAGE_EXTENSIONS)} files)")
            with os.scandir(class_dir) as it:
                for e in sorted(it, key=lambda e: e.name):
                    if e.name.startswith("."):
                        continue
                    if _is_dir(e):
                        report.warnings.append(f"{e.path}: sub-folder, ignored by the loader (images must sit directly in {class_dir})")
                    elif not _is_image_name(e.name):
                        report.warnings.append(f"{e.path}: not an image file name ({', '.join(IMAGE_EXTENSIONS)}), ignored by the loader")
            images += [(split, cls, p) for p in files]

    with ThreadPoolExecutor(max_workers=_WORKERS) as pool:
        results = list(pool.map(lambda item: _inspect_file(item[2]), images))

    by_digest: dict[str, list[tuple[str, str, Path]]] = defaultdict(list)
    for (split, cls, path), (digest, error, size, mode) in zip(images, results):
        if digest is not None:
            by_digest[digest].append((split, cls, path))
        if error:
            report.errors.append(error)
            continue
        if mode in _MODE_WARNINGS or mode == "RGB;16":
            what = "16-bit RGB" if mode == "RGB;16" else _MODE_WARNINGS[mode]
            report.warnings.append(f"{path}: {what} image, converted to 8-bit RGB by the loader")
        if size and min(size) < MIN_IMAGE_SIDE:
            report.warnings.append(f"{path}: tiny image ({size[0]}x{size[1]} px, under {MIN_IMAGE_SIDE} px)")

    for group in by_digest.values():
        if len(group) < 2:
            continue
        names = ", ".join(str(p) for _, _, p in group)
        if len({s for s, _, _ in group}) > 1:
            report.errors.append(f"{group[0][2]}: same content in several splits (leakage): {names}")
        elif len({c for _, c, _ in group}) > 1:
            report.errors.append(f"{group[0][2]}: same content under both classes of one split: {names}")
        else:
            report.warnings.append(f"{group[0][2]}: duplicate content within one class: {names}")

    for split, per_class in report.counts.items():
        sizes = [per_class.get(c, 0) for c in CLASS_NAMES]
        if min(sizes) > 0 and max(sizes) / min(sizes) > IMBALANCE_RATIO:
            shown = ", ".join(f"{c} {n}" for c, n in zip(CLASS_NAMES, sizes))
            report.warnings.append(f"{root / split}: class imbalance ({shown}; ratio {max(sizes) / min(sizes):.2f} > {IMBALANCE_RATIO})")
    return report

