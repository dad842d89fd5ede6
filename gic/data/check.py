"""`gic data check`: what is wrong with a prepared folder, without changing it.

Errors make the folder unusable for training (a missing folder, an undecodable image, the same photo
in two splits); warnings are worth a look (converted modes, tiny images, imbalance, stray files,
what the loader skips).
"""

from __future__ import annotations

import hashlib
import io
import os
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gic.data.decode import MAX_IMAGE_PIXELS, bad_image_reason, depth_rule, open_image
from gic.data.layout import (CLASS_NAMES, LAYOUT, NO_IMAGES, SPLITS, SYNTH_SPEC_FILE, WORKERS, Skipped, few, is_dir,
                             is_utf8_name, list_images, shown, skip_summary)
from gic.errors import DataError

MIN_IMAGE_SIDE = 32  # smaller images are upscaled a lot: check warns about them
IMBALANCE_RATIO = 1.5  # check warns when the largest class of a split is this much bigger


@dataclass
class CheckReport:
    """What `check_dataset` found: errors make the folder unusable, warnings are worth a look."""

    root: str
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """No errors (warnings allowed)."""
        return not self.errors

    def lines(self) -> list[str]:
        """`error: ...` and `warning: ...` lines, then one verdict line with the image counts."""
        out = [f"error: {e}" for e in self.errors] + [f"warning: {w}" for w in self.warnings]
        sizes = ", ".join(
            f"{split} " + "/".join(str(self.counts[split].get(c, 0)) for c in CLASS_NAMES)
            for split in SPLITS if split in self.counts
        )
        verdict = "ok" if not self.errors and not self.warnings else (
            f"{len(self.errors)} error(s), {len(self.warnings)} warning(s)")
        out.append(f"{self.root}: {verdict}" + (f" ({sizes} images of {'/'.join(CLASS_NAMES)})" if sizes else ""))
        return out


_MODE_WARNINGS = {
    "L": "grayscale", "1": "black-and-white (1-bit)", "LA": "grayscale with alpha", "P": "palette",
    "PA": "palette with alpha", "RGBA": "RGBA (alpha)", "CMYK": "CMYK", "YCbCr": "YCbCr", "LAB": "LAB",
    "HSV": "HSV", "I;16": "16-bit grayscale", "I;16B": "16-bit grayscale", "I;16L": "16-bit grayscale",
    "I;16N": "16-bit grayscale", "I": "32-bit integer", "F": "32-bit float",
}


@dataclass
class _Inspection:
    digest: str | None = None  # sha256 of the bytes
    error: str | None = None
    size: tuple[int, int] | None = None  # in full, before any drafting
    mode: str | None = None  # PIL's, or RGB;16 / I;16 / PA where PIL's hides it
    scaling: str = ""  # how a 16-bit, 32-bit or float image is brought to 0..255 (depth_rule)


def _inspect_file(path: Path, max_pixels: int, side: int) -> _Inspection:
    """What one image file holds, decoded from one read of its bytes."""
    try:
        data = path.read_bytes()
    except OSError as err:
        return _Inspection(error=f"{shown(path)}: unreadable ({err.strerror or err}; a broken link or symlink loop?)")
    digest = hashlib.sha256(data).hexdigest()
    if not data:
        return _Inspection(digest, f"{shown(path)}: empty file (0 bytes); expected an image")
    try:
        im, size = open_image(io.BytesIO(data), path, max_pixels, draft=side)
        with im:
            mode = im.mode
            if im.format == "PNG" and im.info.get("transparency") is not None and mode == "P":
                mode = "PA"
            if im.format == "PNG" and mode in ("RGB", "L"):
                bits = _png_bit_depth(data)
                if bits == 16:
                    mode = "I;16" if mode == "L" else "RGB;16"
            im.load()  # reads every byte, even when drafted: truncation is caught
            scaling = ""
            if im.mode.startswith("I") or im.mode == "F":
                scaling = depth_rule(np.asarray(im, dtype=np.float64), im.mode)[2]
    except DataError as err:
        return _Inspection(digest, str(err))
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        return _Inspection(digest, f"{shown(path)}: {bad_image_reason(err)}")
    return _Inspection(digest, None, size, mode, scaling)


def _png_bit_depth(data: bytes) -> int | None:
    # IHDR is the first chunk: 8-byte signature, length, "IHDR", width, height, bit depth
    if len(data) > 24 and data[12:16] == b"IHDR":
        return data[24]
    return None


def check_dataset(root: str | Path, max_image_pixels: int = MAX_IMAGE_PIXELS, image_size: int = 1024) -> CheckReport:
    """Check a prepared folder without changing it.

    Errors: a missing or extra split/class folder, an empty or unreadable class, an undecodable
    image (corrupt, truncated, empty, not an image, over `max_image_pixels` once drafted), the same
    file content in two splits (leakage: it inflates validation/test accuracy) or under both
    classes of a split (contradictory labels).
    Warnings: images the loader converts (grayscale, alpha, palette, CMYK, 16-bit, float: with how
    they are scaled), images smaller than 32 px, duplicates within one class of a split, class
    imbalance over 1.5x within a split, file names that are not UTF-8, stray files next to the
    split and class folders, and what the loader skips inside class folders (`skip_summary`: the
    same lines `gic train` and `gic-tune run` print).

    Class folders are read recursively like the loader does; links to folders are not followed,
    so a symlink loop cannot hang it.

    Args:
        root: the prepared folder.
        max_image_pixels: the loader's pixel limit (`data.max_image_pixels`).
        image_size: the loader's image size: JPEGs are checked at the reduced scale it decodes them
            at. The default is the largest `data.image_size`, so a pass holds at any size.

    Returns:
        The report; `report.lines()` is what `gic data check` prints.

    Raises:
        DataError: `root` is not a folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{shown(root)}: no such data folder; expected {LAYOUT} images")
    report = CheckReport(root=shown(root))
    images: list[tuple[str, str, Path]] = []  # (split, class, path)
    skipped: Skipped = {}

    def scan(folder: Path, expected: tuple[str, ...], kind: str) -> list[str]:
        present = []
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
        for e in entries:
            if e.name.startswith(".") or e.name == SYNTH_SPEC_FILE:
                continue
            if is_dir(e):
                if e.name in expected:
                    present.append(e.name)
                else:
                    report.errors.append(f"{shown(e.path)}: unexpected {kind} folder; expected only {', '.join(expected)}")
            else:
                report.warnings.append(f"{shown(e.path)}: stray file, ignored by the loader")
        for name in expected:
            if name not in present:
                report.errors.append(f"{shown(folder / name)}: missing {kind} folder")
        return present

    for split in scan(root, SPLITS, "split"):
        report.counts[split] = {}
        for cls in scan(root / split, CLASS_NAMES, "class"):
            class_dir = root / split / cls
            try:
                files = list_images(class_dir, skipped)
            except OSError as err:
                report.errors.append(f"{shown(class_dir)}: unreadable folder ({err.strerror or err})")
                continue
            report.counts[split][cls] = len(files)
            if not files:
                report.errors.append(f"{shown(class_dir)}: {NO_IMAGES}")
            images += [(split, cls, p) for p in files]
    report.warnings += skip_summary(skipped)
    odd_names = [p for _, _, p in images if not is_utf8_name(p)]
    if odd_names:
        report.warnings.append(f"{len(odd_names)} file name(s) not valid UTF-8, read anyway (shown with \\x escapes; "
                               f"other tools may fail on them): {few(odd_names)}")

    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        results = list(pool.map(lambda item: _inspect_file(item[2], max_image_pixels, image_size), images))

    by_digest: dict[str, list[tuple[str, str, Path]]] = defaultdict(list)
    for (split, cls, path), found in zip(images, results):
        if found.digest is not None:
            by_digest[found.digest].append((split, cls, path))
        if found.error:
            report.errors.append(found.error)
            continue
        mode, size = found.mode, found.size
        if mode in _MODE_WARNINGS or mode == "RGB;16":
            what = "16-bit RGB" if mode == "RGB;16" else _MODE_WARNINGS[mode]
            how = f" ({found.scaling})" if found.scaling else ""
            report.warnings.append(f"{shown(path)}: {what} image{how}, converted to 8-bit RGB by the loader")
        if size and min(size) < MIN_IMAGE_SIDE:
            report.warnings.append(f"{shown(path)}: tiny image ({size[0]}x{size[1]} px, under {MIN_IMAGE_SIDE} px)")

    for group in by_digest.values():
        if len(group) < 2:
            continue
        names = ", ".join(shown(p) for _, _, p in group)
        first = shown(group[0][2])
        if len({s for s, _, _ in group}) > 1:
            report.errors.append(f"{first}: same content in several splits (leakage): {names}")
        elif len({c for _, c, _ in group}) > 1:
            report.errors.append(f"{first}: same content under both classes of one split: {names}")
        else:
            report.warnings.append(f"{first}: duplicate content within one class: {names}")

    for split, per_class in report.counts.items():
        sizes = [per_class.get(c, 0) for c in CLASS_NAMES]
        if min(sizes) > 0 and max(sizes) / min(sizes) > IMBALANCE_RATIO:
            counts = ", ".join(f"{c} {n}" for c, n in zip(CLASS_NAMES, sizes))
            report.warnings.append(f"{shown(root / split)}: class imbalance ({counts}; ratio {max(sizes) / min(sizes):.2f} > {IMBALANCE_RATIO})")
    return report
