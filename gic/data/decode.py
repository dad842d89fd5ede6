"""Decoding: one image file into a square uint8 RGB array, and a list of files into one array in parallel.

Every failure is a `DataError` whose message starts with the file's path, so that a corrupt,
truncated, empty or oversized file is named, never a traceback.
"""

from __future__ import annotations

import sys
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from gic.data.layout import WORKERS
from gic.errors import DataError

# Refuse images above 64 Mpx (8000 x 8000) before decoding them: a small file can claim a huge size
# (a decompression bomb). PIL's own guard is looser (89 Mpx warns, 179 Mpx fails).
MAX_IMAGE_PIXELS = 64_000_000

ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is an error, not a grey bottom half


def to_rgb(im: Image.Image) -> Image.Image:
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


def open_checked(source, name: str | Path) -> Image.Image:
    """Open an image and refuse a decompression bomb before any pixel is decoded.

    Raises:
        DataError: the image claims more than MAX_IMAGE_PIXELS pixels.
    """
    try:
        im = Image.open(source)
    except Image.DecompressionBombError:
        raise DataError(f"{name}: image too large to decode safely (over {MAX_IMAGE_PIXELS:,} pixels)") from None
    w, h = im.size
    if w * h > MAX_IMAGE_PIXELS:
        im.close()
        raise DataError(f"{name}: image too large to decode safely ({w}x{h} px, limit {MAX_IMAGE_PIXELS:,} pixels)")
    return im


def bad_image_reason(err: BaseException) -> str:
    """What to tell the user about a file PIL could not decode (the first line of its error)."""
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
        with open_checked(path, path) as im:
            if im.format == "JPEG":
                im.draft("RGB", (size, size))  # DCT scaling: decodes at >= size, 1/2..1/8 scale
            im.load()
            im = ImageOps.exif_transpose(im)
            im = to_rgb(im)
            if im.size != (size, size):
                im = im.resize((size, size), Image.Resampling.BILINEAR)
            return np.asarray(im, dtype=np.uint8)
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"{path}: file not found (a broken link?)") from None
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as err:
        raise DataError(f"{path}: {bad_image_reason(err)}") from None


class Progress:
    """Prints `decoded N/TOTAL images` to stderr every `every` images and at the end (thread-safe)."""

    def __init__(self, total: int, every: int = 200):
        self.total, self.every, self.done = total, every, 0
        self._lock = threading.Lock()

    def step(self) -> None:
        with self._lock:
            self.done += 1
            if self.done % self.every == 0 or self.done == self.total:
                print(f"decoded {self.done}/{self.total} images", file=sys.stderr, flush=True)


def decode_split(paths: list[Path], labels: list[int], size: int, on_bad_image: str, progress: Progress | None,
                 decode: Callable[[Path, int], np.ndarray] = decode_image) -> tuple[np.ndarray, np.ndarray, list[Path]]:
    """Decode `paths` in parallel threads (PIL releases the GIL while decoding).

    Args:
        paths: image files, in the order of the returned arrays.
        labels: one class index per path.
        size: side of the square output in px.
        on_bad_image: `error` raises on the first bad file (by position), `skip` warns and drops it.
        progress: counts decoded files, or None.
        decode: decodes one file (`gic.data.load_dataset` passes the package's `decode_image`).

    Returns:
        (images (N, size, size, 3) uint8, labels (N,) int32, kept paths), N <= len(paths).

    Raises:
        DataError: a bad image with `on_bad_image="error"`, naming it and how many more there are.
    """
    images = np.empty((len(paths), size, size, 3), dtype=np.uint8)
    bad: dict[int, str] = {}

    def work(i: int) -> None:
        try:
            images[i] = decode(paths[i], size)
        except DataError as err:
            bad[i] = str(err)
        if progress:
            progress.step()

    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
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
