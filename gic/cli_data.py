"""`gic data`: get, prepare, generate and check image folders (the commands; the work is in gic.data).

    gic data download --dest data/menwomen-raw
    gic data prepare --raw data/menwomen-raw --dest data/menwomen
    gic data synth --dest data/synth
    gic data check data/menwomen
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from gic.cli_common import user_errors


@click.group()
def data() -> None:
    """Get, prepare, generate and check image folders (split/class/image layout).

    A prepared folder is {train,validation,test}/{men,women}/ with images in any format Pillow
    decodes, in sub-folders too.

    \b
    Examples:
      gic data synth --dest data/synth --per-class 160 --size 64
      gic data check data/synth
    """


@data.command("download")
@click.option("--dest", type=click.Path(path_type=Path), required=True, help="Folder for the raw dataset.")
@click.option("--dataset", default="saadpd/menwomen-classification", show_default=True, help="Kaggle dataset slug.")
@user_errors
def data_download(dest: Path, dataset: str) -> None:
    """Download and extract a Kaggle dataset (the seed's men/women photos by default, ~806 MB).

    Credentials come from KAGGLE_USERNAME and KAGGLE_KEY, or ~/.kaggle/kaggle.json (chmod 600); the
    key is never printed. Archive members that would land outside DEST are refused.

    \b
    Examples:
      gic data download --dest data/menwomen-raw
      gic data download --dest data/other-raw --dataset OWNER/DATASET   # any Kaggle dataset slug
    """
    from gic.data import download_kaggle

    out = download_kaggle(dest, dataset=dataset)  # a kaggle.json readable by others: a `warning:` line
    click.echo(f"downloaded {dataset} to {out}")


@data.command("prepare")
@click.option("--raw", type=click.Path(path_type=Path), required=True, help="The downloaded (extracted) dataset.")
@click.option("--dest", type=click.Path(path_type=Path), required=True, help="Output folder: {train,validation,test}/{men,women}.")
@click.option("--val-per-class", default=200, show_default=True, type=click.IntRange(min=0),
              help="Validation images per class, taken first from traindata.")
@click.option("--train-per-class", default=799, show_default=True, type=click.IntRange(min=1),
              help="Training images per class, the next ones from traindata.")
@click.option("--test-per-class", default=400, show_default=True, type=click.IntRange(min=0),
              help="Test images per class, from testdata.")
@click.option("--seed", default=0, show_default=True, help="Seed of the shuffle (names are sorted first).")
@user_errors
def data_prepare(raw: Path, dest: Path, val_per_class: int, train_per_class: int, test_per_class: int, seed: int) -> None:
    """Build the seed split: validation, then train from traindata; test from testdata.

    Names are sorted, then shuffled with SEED, so the split is the same on every machine, and no
    file is in two splits. DEST is written whole or not at all.

    \b
    Examples:
      gic data prepare --raw data/menwomen-raw --dest data/menwomen
      gic data prepare --raw data/menwomen-raw --dest data/small --train-per-class 100 --val-per-class 50
    """
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
    """Generate a synthetic stand-in dataset with the seed's layout (deterministic per seed).

    No download: the same seed writes the same bytes, and hyperparameters matter on it.

    \b
    Examples:
      gic data synth --dest data/synth
      gic data synth --dest data/synth-64 --per-class 160 --size 64 --seed 1
    """
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

    \b
    Examples:
      gic data check data/menwomen
      gic data check data/menwomen && gic train --config configs/baseline.yaml   # train only on a clean folder
    """
    from gic.data import check_dataset

    report = check_dataset(root)
    for line in report.lines():
        click.echo(line)
    if report.errors:
        sys.exit(2)
