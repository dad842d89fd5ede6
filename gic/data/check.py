"""`gic data check`: what is wrong with a prepared folder, without changing it.

Errors make the folder unusable for training (a missing folder, an undecodable image, the same photo
in two splits); warnings are worth a look (converted modes, tiny images, imbalance, stray files).
"""

from __future__ import annotations

import hashlib
import io
import os
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from gic.data.decode import bad_image_reason, open_checked
from gic.data.layout import (CLASS_NAMES, IMAGE_EXTENSIONS, LAYOUT, SPLITS, SYNTH_SPEC_FILE, WORKERS, is_dir,
                             is_image_name, list_images)
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
        with open_checked(io.BytesIO(data), path) as im:
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
        return digest, f"{path}: {bad_image_reason(err)}", None, None
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
        raise DataError(f"{root}: no such data folder; expected {LAYOUT} images")
    report = CheckReport(root=str(root))
    images: list[tuple[str, str, Path]] = []  # (split, class, path)

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
                    if is_dir(e):
                        report.warnings.append(f"{e.path}: sub-folder, ignored by the loader (images must sit directly in {class_dir})")
                    elif not is_image_name(e.name):
                        report.warnings.append(f"{e.path}: not an image file name ({', '.join(IMAGE_EXTENSIONS)}), ignored by the loader")
            images += [(split, cls, p) for p in files]

    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
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

