"""Where a prepared folder comes from besides the generator: the Kaggle download and the seed split.

`download_kaggle` fetches saadpd/menwomen-classification (never printing the key) and extracts it
with `safe_extract`; `prepare_split` turns the extracted archive into the prepared layout with the
seed notebook's split sizes, deterministically, with no photo in two splits.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import shutil
import stat
import tempfile
import warnings
from pathlib import Path

import numpy as np

from gic.data.archive import safe_extract
from gic.data.layout import CLASS_NAMES, SPLITS, few, fresh_dest, list_images, publish, shown
from gic.errors import DataError

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------ seed split
def find_kaggle_part(raw: Path, part: str) -> Path | None:
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


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except OSError as err:
        raise DataError(f"{shown(path)}: unreadable ({err.strerror or err}; a broken link?)") from None
    return h.hexdigest()


def prepare_split(raw: str | Path, dest: str | Path, val_per_class: int = 200, train_per_class: int = 799,
                  test_per_class: int = 400, seed: int = 0) -> dict[str, int]:
    """Build the seed split from the extracted Kaggle archive.

    Per class, after sorting the file paths and a seeded shuffle: validation = the first
    `val_per_class` of traindata, train = the next `train_per_class`, test = the first
    `test_per_class` of testdata. Sub-folders of a class folder are read and kept as they are.

    No content goes in twice: a file whose bytes (sha256) equal those of a file already chosen
    (traindata before testdata, men before women) is left out and the next file of the shuffled
    order takes its place, so the archive's shared photos cannot leak between splits; the files left
    out are reported in one UserWarning (count and a few names). Files are hard-linked when
    possible, else copied; the output is built in a temporary folder and renamed into place.

    Args:
        raw: extracted archive with `traindata/traindata/{men,women}` and `testdata/testdata/{men,women}`
            (or one level less nesting).
        dest: output folder `{train,validation,test}/{men,women}`; must not exist or be empty.
        val_per_class, train_per_class, test_per_class: images per class in each split.
        seed: the shuffle's seed.

    Returns:
        Image counts per split (both classes together).

    Raises:
        DataError: `raw` lacks a part, a class has too few (distinct) images, a file is unreadable,
            or `dest` is not empty.
    """
    raw, dest = Path(raw), Path(dest)
    if not raw.is_dir():
        raise DataError(f"{shown(raw)}: no such folder; expected the extracted Kaggle archive (gic data download)")
    wanted = {"traindata": val_per_class + train_per_class, "testdata": test_per_class}
    chosen: dict[str, dict[str, list[tuple[Path, Path]]]] = {split: {} for split in SPLITS}  # (source, relative)
    kept: dict[str, Path] = {}  # digest -> the file chosen with that content
    left_out: list[str] = []  # "left out (same bytes as kept)"
    for p, (part, needed) in enumerate(wanted.items()):
        base = find_kaggle_part(raw, part)
        if base is None:
            raise DataError(f"{shown(raw)}: expected {part}/{part}/{{{','.join(CLASS_NAMES)}}} "
                            f"(or {part}/{{{','.join(CLASS_NAMES)}}}) from the Kaggle archive")
        for label, cls in enumerate(CLASS_NAMES):
            files = list_images(base / cls)
            what = (f"validation {val_per_class} + train {train_per_class}" if part == "traindata"
                    else f"test {test_per_class}")
            if len(files) < needed:
                raise DataError(f"{shown(base / cls)}: found {len(files)} images, need {needed} ({what})")
            picked: list[Path] = []
            repeats = 0
            for i in np.random.default_rng([seed, p, label]).permutation(len(files)):
                if len(picked) == needed:
                    break
                digest = _digest(files[i])
                if digest in kept:
                    repeats += 1
                    left_out.append(f"{shown(files[i])} (same bytes as {shown(kept[digest])})")
                    continue
                kept[digest] = files[i]
                picked.append(files[i])
            if len(picked) < needed:
                raise DataError(f"{shown(base / cls)}: found {len(files)} images but only {len(files) - repeats} with "
                                f"content not already chosen, need {needed} ({what})")
            pairs = [(src, src.relative_to(base / cls)) for src in picked]
            if part == "traindata":
                chosen["validation"][cls] = pairs[:val_per_class]
                chosen["train"][cls] = pairs[val_per_class:]
            else:
                chosen["test"][cls] = pairs
    tmp = fresh_dest(dest)
    try:
        for split in SPLITS:
            for cls in CLASS_NAMES:
                (tmp / split / cls).mkdir(parents=True)
                for src, rel in chosen[split][cls]:
                    (tmp / split / cls / rel).parent.mkdir(parents=True, exist_ok=True)
                    _link_or_copy(src, tmp / split / cls / rel)
        publish(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if left_out:
        warnings.warn(f"{shown(raw)}: left out {len(left_out)} file(s) with the same bytes as a file already in "
                      f"{shown(dest)} (they would have been in two splits, or twice in one); the next files of the "
                      f"shuffled order took their place: {few(left_out)}", stacklevel=2)
    return {split: sum(len(v) for v in chosen[split].values()) for split in SPLITS}


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
                raise DataError(f"{shown(target)}: already exists; remove it or choose another --dest")
            os.replace(entry, target)
        done = True
    finally:
        shutil.rmtree(download, ignore_errors=True)
        if created and not done:
            with contextlib.suppress(OSError):
                dest.rmdir()  # only if still empty
    return dest

