"""The synthetic stand-in dataset: rings (men) against crosses (women), deterministic per seed.

It has the prepared layout, so everything downstream (check, loader, trainer, search) runs on it
without a download; hyperparameters matter on it (see `make_synthetic` for measured accuracies).
"""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from gic.data.layout import CLASS_NAMES, SPLITS, SYNTH_SPEC_FILE, WORKERS, fresh_dest, publish, shown
from gic.errors import DataError


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
        raise DataError(f"{shown(dest)}: per_class = {per_class}; expected at least 2")
    if size < 16:
        raise DataError(f"{shown(dest)}: size = {size}; expected at least 16 px")
    counts = _synth_counts(per_class)
    tmp = fresh_dest(dest)
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

        with ThreadPoolExecutor(max_workers=WORKERS) as pool:
            list(pool.map(write, jobs))
        (tmp / SYNTH_SPEC_FILE).write_text(json.dumps({"per_class": per_class, "size": size, "seed": seed}) + "\n")
        publish(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {split: n * len(CLASS_NAMES) for split, n in counts.items()}


def check_synthetic_spec(root: Path, wanted: dict) -> None:
    """Refuse a synthetic folder made with another spec instead of silently reusing it.

    Args:
        root: an existing data folder.
        wanted: the config's `data.synthetic` as a dict (per_class, size, seed).

    Raises:
        DataError: naming each differing key, what the folder was made with and what the config asks.
    """
    try:
        made = json.loads((root / SYNTH_SPEC_FILE).read_text())
    except (OSError, ValueError):
        return  # not made by make_synthetic (or by an older one): the user's folder, taken as is
    if made != wanted:
        diff = ", ".join(f"{k} {made.get(k)} (config: {v})" for k, v in wanted.items() if made.get(k) != v)
        raise DataError(f"{shown(root)}: synthetic data made with {diff}; delete the folder to regenerate it, "
                        "or point data.dir elsewhere")
