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

from gic.data.layout import WORKERS, shown
from gic.errors import DataError

# Refuse images above 64 Mpx (8000 x 8000) by default (`data.max_image_pixels`): a small file can
# claim a huge size (a decompression bomb). A JPEG is measured at the reduced size it is decoded at
# (`Image.draft`), so a 9000 x 8000 phone photo decodes at 1/8 scale in a few MB.
MAX_IMAGE_PIXELS = 64_000_000

ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is an error, not a grey bottom half
# Pillow's own guard (a warning over 89 Mpx, an error over 179 Mpx) measures the size a file
# claims, before a JPEG can be drafted, and ignores data.max_image_pixels: `open_image` replaces it.
Image.MAX_IMAGE_PIXELS = None


def depth_rule(arr: np.ndarray, mode: str) -> tuple[float, float, str]:
    """How a 16-bit, 32-bit integer or float image maps to 0..255: (scale, offset, description).

    The 8-bit value is `clip(round(value * scale + offset), 0, 255)`:
    - `I;16*` (16-bit): x 1/257 (0..65535 -> 0..255);
    - `I` (32-bit integer): kept within 0..255, x 1/257 within 0..65535, else min..max -> 0..255;
    - `F` (float): x 255 within 0..1, kept within 0..255, else min..max -> 0..255 (NaN -> 0).
    """
    finite = arr[np.isfinite(arr)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    if mode.startswith("I;16"):
        return 1 / 257, 0.0, "0..65535 scaled to 0..255"
    if lo >= 0 and hi <= 1 and mode == "F":
        return 255.0, 0.0, "values 0..1 scaled x255"
    if lo >= 0 and hi <= 255:
        return 1.0, 0.0, "values 0..255 kept"
    if lo >= 0 and hi <= 65535 and mode != "F":
        return 1 / 257, 0.0, "0..65535 scaled to 0..255"
    if hi > lo:
        return 255 / (hi - lo), -lo * 255 / (hi - lo), f"values {lo:g}..{hi:g} stretched to 0..255"
    return 1.0, 0.0, f"constant {lo:g}, clipped to 0..255"


def to_rgb(im: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB: alpha composited on white, 16-bit, 32-bit and float scaled to 0..255."""
    mode = im.mode
    if mode == "RGB":
        return im
    if mode.startswith("I") or mode == "F":  # 16/32-bit integer or float grayscale
        arr = np.asarray(im, dtype=np.float64)
        scale, offset, _ = depth_rule(arr, mode)
        arr = np.nan_to_num(arr * scale + offset, nan=0.0, posinf=255.0, neginf=0.0)
        arr = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
        return Image.fromarray(arr).convert("RGB")  # mode inferred from the 2-D uint8 array: L
    if mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV


def open_image(source, name: str | Path, max_pixels: int = MAX_IMAGE_PIXELS,
               draft: int | None = None) -> tuple[Image.Image, tuple[int, int]]:
    """Open an image, draft it, and refuse a decompression bomb before any pixel is decoded.

    Args:
        source: a path or a binary file object.
        name: the path to name in errors.
        max_pixels: the most pixels the image may have once drafted.
        draft: the side the image is wanted at; formats that can decode at reduced scale (JPEG:
            1/2, 1/4, 1/8) are set to decode at the smallest scale still >= `draft` in both sides.

    Returns:
        (the opened, not yet loaded image, its size in px before drafting).

    Raises:
        DataError: over `max_pixels` pixels (after drafting), naming the file and both sizes.
    """
    im = Image.open(source)
    claimed = im.size
    if draft:
        im.draft("RGB", (draft, draft))  # JPEG: DCT scaling; other formats: no-op
    w, h = im.size
    if w * h > max_pixels:
        im.close()
        what = f"{w}x{h} px"
        if im.size != claimed:
            what += f" at reduced scale, {claimed[0]}x{claimed[1]} px in full"
        raise DataError(f"{shown(name)}: image too large to decode safely ({what}, limit {max_pixels:,} pixels, "
                        "data.max_image_pixels)")
    return im, claimed


def bad_image_reason(err: BaseException) -> str:
    """What to tell the user about a file PIL could not decode (the first line of its error)."""
    if isinstance(err, UnidentifiedImageError):
        return "not a readable image (unknown or corrupt format)"
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    return f"not a readable image ({text})"


def decode_image(path: str | Path, size: int, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Decode one image file into a (size, size, 3) uint8 RGB array.

    Big JPEGs are decoded at a reduced scale (`Image.draft`) close to `size`, so a 9000 px photo
    does not need its full-size buffer. EXIF orientation is applied; 16-bit and float images are
    scaled to 0..255 (`depth_rule`); the image is stretched to a square (as Keras'
    `image_dataset_from_directory` does) with bilinear resampling.

    Args:
        path: the image file (any name bytes).
        size: side of the output in px.
        max_pixels: the most pixels the image may be decoded at (after JPEG drafting).

    Returns:
        (size, size, 3) uint8 RGB.

    Raises:
        DataError: the file is missing, empty, corrupt, truncated or too large.
    """
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise DataError(f"{shown(path)}: empty file (0 bytes); expected an image")
        im, _ = open_image(path, path, max_pixels, draft=size)
        with im:
            im.load()
            im = ImageOps.exif_transpose(im)
            im = to_rgb(im)
            if im.size != (size, size):
                im = im.resize((size, size), Image.Resampling.BILINEAR)
            return np.asarray(im, dtype=np.uint8)
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"{shown(path)}: file not found (a broken link?)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise DataError(f"{shown(path)}: {bad_image_reason(err)}") from None


class Progress:
    """Prints `decoded N/TOTAL images` to stderr every `every` images and, when the decode succeeded,
    at the end (`close`): a run stopped by a bad image prints only its error (thread-safe)."""

    def __init__(self, total: int, every: int = 200):
        self.total, self.every, self.done = total, every, 0
        self._lock = threading.Lock()

    def step(self) -> None:
        with self._lock:
            self.done += 1
            if self.done % self.every == 0 and self.done < self.total:
                print(f"decoded {self.done}/{self.total} images", file=sys.stderr, flush=True)

    def close(self, kept: int) -> None:
        """The final line: images decoded and kept."""
        print(f"decoded {kept}/{self.total} images", file=sys.stderr, flush=True)


def decode_split(paths: list[Path], labels: list[int], size: int, on_bad_image: str, progress: Progress | None,
                 max_pixels: int = MAX_IMAGE_PIXELS,
                 decode: Callable[..., np.ndarray] = decode_image) -> tuple[np.ndarray, np.ndarray, list[Path]]:
    """Decode `paths` in parallel threads (PIL releases the GIL while decoding).

    Args:
        paths: image files, in the order of the returned arrays.
        labels: one class index per path.
        size: side of the square output in px.
        on_bad_image: `error` raises on the first bad file (by position), `skip` warns and drops it.
        progress: counts decoded files, or None.
        max_pixels: passed to `decode` (`data.max_image_pixels`).
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
            images[i] = decode(paths[i], size, max_pixels=max_pixels)
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
        if progress:
            progress.close(len(paths) - len(bad))
        keep = [i for i in range(len(paths)) if i not in bad]
        return images[keep], np.asarray(labels, dtype=np.int32)[keep], [paths[i] for i in keep]
    if progress:
        progress.close(len(paths))
    return images, np.asarray(labels, dtype=np.int32), paths
