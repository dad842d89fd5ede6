"""Classify image files with a trained model: what `gic predict MODEL PATH...` runs.

    model = load_model("results/train/demo-train/model.keras")      # Keras safe mode
    files, problems = collect_images(["photo.jpg", "photos/"])
    for item in predict_files(model, files, batch_size=32):
        print(item)                                                # a Prediction or a Failure

Folders are read recursively with the data package's notion of an image file (`gic.data.list_images`:
an extension Pillow decodes here, hidden files and links to folders skipped, what is skipped said as
UserWarnings). Images are decoded a batch at a time in threads, the next batch while the model
predicts the current one, and each batch is one `model.predict` call. A file that cannot be decoded
is a `Failure` naming it; the others go on.
"""

from __future__ import annotations

import csv
import io
import json
import warnings
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gic.data import CLASS_NAMES, decode_image, list_images, shown, skip_summary
from gic.data.layout import NO_IMAGES, WORKERS
from gic.errors import DataError, ModelError

THRESHOLD = 0.5  # women when P(women) >= THRESHOLD: the rule the trainer's accuracy is measured with
FORMATS = ("table", "csv", "json")
EXTENSION_FORMATS = {".csv": "csv", ".json": "json", ".tsv": "table", ".txt": "table"}
COLUMNS = ("file", "label", *(f"p_{name}" for name in CLASS_NAMES), "threshold")


@dataclass(frozen=True)
class Prediction:
    """One image's label and the probability of each class (CLASS_NAMES order)."""

    file: str  # as given or found, printable (gic.data.shown)
    label: str
    probabilities: tuple[float, ...]
    threshold: float

    def row(self) -> dict[str, object]:
        """The COLUMNS of this prediction."""
        probs = {f"p_{name}": round(p, 6) for name, p in zip(CLASS_NAMES, self.probabilities)}
        return {"file": self.file, "label": self.label, **probs, "threshold": self.threshold}


@dataclass(frozen=True)
class Failure:
    """A file that could not be predicted, and why (one line that starts with the file)."""

    file: str
    error: str


def collect_images(paths: Iterable[str | Path]) -> tuple[list[Path], list[Failure]]:
    """The image files that PATHS name: files as given, folders read recursively.

    Entries of a folder that are not read (other files, hidden ones, links to folders) are reported
    as UserWarnings, one per kind (`gic.data.skip_summary`). A file named twice is predicted once.

    Returns:
        (the files in order: each PATH's, a folder's sorted by relative path; the PATHS that name
        nothing or a folder without images).
    """
    files: list[Path] = []
    problems: list[Failure] = []
    for path in map(Path, paths):
        if path.is_dir():
            skipped: dict = {}
            try:
                found = list_images(path, skipped)
            except OSError as err:
                problems.append(Failure(shown(path), f"{shown(path)}: unreadable folder ({err.strerror or err})"))
                continue
            for line in skip_summary(skipped):
                warnings.warn(line, stacklevel=2)
            if not found:
                problems.append(Failure(shown(path), f"{shown(path)}: {NO_IMAGES}"))
            files += found
        elif path.exists() or path.is_symlink():  # a broken link is the decoder's to name
            files.append(path)
        else:
            problems.append(Failure(shown(path), f"{shown(path)}: no such file or folder"))
    return list(dict.fromkeys(files)), problems


def input_size(model) -> int:
    """The image side the model takes.

    Raises:
        ModelError: the model does not take square RGB images and give one probability.
    """
    shape, out = tuple(model.input_shape), tuple(model.output_shape)
    if len(shape) != 4 or shape[1] is None or shape[1] != shape[2] or shape[3] != 3 or out[-1] != 1:
        raise ModelError(f"not a gic classifier: input {shape}, output {out}; expected (None, S, S, 3) -> (None, 1)")
    return int(shape[1])


def _decode_batch(pool: ThreadPoolExecutor, files: list[Path], size: int) -> tuple[np.ndarray, dict[int, str]]:
    """The batch's images (a bad file's slot stays zero) and the errors by position."""
    images = np.zeros((len(files), size, size, 3), dtype=np.uint8)
    bad: dict[int, str] = {}

    def work(i: int) -> None:
        try:
            images[i] = decode_image(files[i], size)
        except DataError as err:
            bad[i] = str(err)

    list(pool.map(work, range(len(files))))
    return images, bad


def predict_files(model, files: list[Path], batch_size: int = 32,
                  threshold: float = THRESHOLD) -> Iterator[Prediction | Failure]:
    """Predict every file, in order, a batch at a time.

    Args:
        model: a gic classifier (`gic.model.load_model`).
        files: image files (`collect_images`).
        batch_size: images decoded and predicted together (one `model.predict` per batch).
        threshold: the label is CLASS_NAMES[1] (women) when its probability is >= threshold.

    Yields:
        A Prediction per decoded file, a Failure per file that could not be decoded.
    """
    size = input_size(model)
    batches = [files[i:i + batch_size] for i in range(0, len(files), batch_size)]
    if not batches:
        return
    # Decoding threads release the GIL (PIL) as TensorFlow does: the next batch decodes while the
    # model predicts this one.
    with ThreadPoolExecutor(WORKERS) as decoders, ThreadPoolExecutor(1) as ahead:
        pending = ahead.submit(_decode_batch, decoders, batches[0], size)
        for k, batch in enumerate(batches):
            images, bad = pending.result()
            if k + 1 < len(batches):
                pending = ahead.submit(_decode_batch, decoders, batches[k + 1], size)
            good = [i for i in range(len(batch)) if i not in bad]
            probs = np.zeros(len(batch))
            if good:
                out = model.predict(images[good], batch_size=len(good), verbose=0)
                probs[good] = np.asarray(out, dtype=np.float64).reshape(-1)
            for i, path in enumerate(batch):
                if i in bad:
                    yield Failure(shown(path), bad[i])
                    continue
                p = float(probs[i])
                yield Prediction(file=shown(path), label=CLASS_NAMES[int(p >= threshold)],
                                 probabilities=(1.0 - p, p), threshold=threshold)


def output_format(out: Path | None, fmt: str | None) -> str:
    """The format to write: `fmt` if given, else by OUT's extension, else `table`.

    Raises:
        DataError: OUT's extension names no format and no `fmt` is given.
    """
    if fmt is not None:
        return fmt
    if out is None:
        return "table"
    found = EXTENSION_FORMATS.get(out.suffix.lower())
    if found is None:
        raise DataError(f"--out {out}: cannot tell the format from {out.suffix or 'no extension'!r}; "
                        f"use .csv, .json or .tsv, or --format {'|'.join(FORMATS)}")
    return found


def table_line(values: Iterable[object]) -> str:
    """One tab-separated line: probabilities to 4 decimals."""
    return "\t".join(f"{v:.4f}" if isinstance(v, float) else str(v) for v in values)


def render(predictions: list[Prediction], failures: list[Failure], fmt: str, model: str | Path,
           threshold: float = THRESHOLD) -> str:
    """The whole output in `fmt`: a table (a header, then a row per image), CSV, or JSON with the
    model, the threshold, the classes, the predictions and the files that failed."""
    if fmt == "table":
        return "".join(table_line(line) + "\n" for line in [COLUMNS, *(p.row().values() for p in predictions)])
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(p.row() for p in predictions)
        return buffer.getvalue()
    return json.dumps({"model": str(model), "classes": list(CLASS_NAMES), "threshold": threshold,
                       "predictions": [p.row() for p in predictions],
                       "errors": [{"file": f.file, "error": f.error} for f in failures]}, indent=2) + "\n"
