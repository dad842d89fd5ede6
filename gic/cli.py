"""`gic`: data, training, prediction and benchmarks for the VGG16 two-phase trainer.

    gic data synth --dest data/synth          # a synthetic stand-in, no download
    gic train --config configs/demo-train.yaml
    gic predict results/train/model.keras photo.jpg

User mistakes print one line (`error: ...`) and exit with code 2; no traceback.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import click

from gic.errors import GicError


def user_errors(fn):
    """Turn GicError (bad input the user can fix) into one line on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except GicError as err:
            click.echo(f"error: {err}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="gic-tune")
def main() -> None:
    """Train and evaluate the VGG16 transfer-learning classifier of men and women photos.

    The data flow is config -> data -> model -> two-phase trainer -> metrics. Start with
    `gic data synth` (no download needed) or `gic data download` + `gic data prepare`.
    """


# --------------------------------------------------------------------------------------- data
@main.group()
def data() -> None:
    """Get, prepare, generate and check image folders (split/class/image layout)."""


@data.command("download")
@click.option("--dest", type=click.Path(path_type=Path), required=True, help="Folder for the raw dataset.")
@click.option("--dataset", default="saadpd/menwomen-classification", show_default=True, help="Kaggle dataset slug.")
@user_errors
def data_download(dest: Path, dataset: str) -> None:
    """Download the Kaggle dataset (credentials: ~/.kaggle/kaggle.json or KAGGLE_USERNAME/KAGGLE_KEY)."""
    import warnings

    from gic.data import download_kaggle

    with warnings.catch_warnings(record=True) as caught:  # e.g. kaggle.json readable by others: one line each
        warnings.simplefilter("always", UserWarning)
        try:
            out = download_kaggle(dest, dataset=dataset)
        finally:
            for w in caught:
                click.echo(f"warning: {w.message}", err=True)
    click.echo(f"downloaded {dataset} to {out}")


@data.command("prepare")
@click.option("--raw", type=click.Path(path_type=Path), required=True, help="The downloaded (extracted) dataset.")
@click.option("--dest", type=click.Path(path_type=Path), required=True, help="Output folder: {train,validation,test}/{men,women}.")
@click.option("--val-per-class", default=200, show_default=True, type=click.IntRange(min=0))
@click.option("--train-per-class", default=799, show_default=True, type=click.IntRange(min=1))
@click.option("--test-per-class", default=400, show_default=True, type=click.IntRange(min=0))
@click.option("--seed", default=0, show_default=True, help="Seed of the shuffle (names are sorted first).")
@user_errors
def data_prepare(raw: Path, dest: Path, val_per_class: int, train_per_class: int, test_per_class: int, seed: int) -> None:
    """Build the seed split: validation, then train from traindata; test from testdata."""
    from gic.data import prepare_split

    counts = prepare_split(raw, dest, val_per_class=val_per_class, train_per_class=train_per_class,
                           test_per_class=test_per_class, seed=seed)
    click.echo(f"prepared {dest}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))


@data.command("synth")
@click.option("--dest", type=click.Path(path_type=Path), required=True, help="Output folder.")
@click.option("--per-class", default=60, show_default=True, type=click.IntRange(min=2), help="Training images per class.")
@click.option("--size", default=64, show_default=True, type=click.IntRange(min=16), help="Image side in px.")
@click.option("--seed", default=0, show_default=True, help="Same seed, same images.")
@user_errors
def data_synth(dest: Path, per_class: int, size: int, seed: int) -> None:
    """Generate a synthetic stand-in dataset with the seed's layout (deterministic per seed)."""
    from gic.data import make_synthetic

    counts = make_synthetic(dest, per_class=per_class, size=size, seed=seed)
    click.echo(f"wrote {dest}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))


@data.command("check")
@click.argument("root", type=click.Path(path_type=Path))
@user_errors
def data_check(root: Path) -> None:
    """Report layout problems, undecodable images, odd modes, tiny images, leakage and imbalance.

    Errors: missing/extra split or class folders, empty classes, undecodable images, the same file
    in two splits (leakage). Warnings: images the loader converts, images under 32 px, class
    imbalance over 1.5x, stray files. Exits 2 on errors, 0 with warnings only.
    """
    from gic.data import check_dataset

    report = check_dataset(root)
    for line in report.lines():
        click.echo(line)
    if report.errors:
        sys.exit(2)
