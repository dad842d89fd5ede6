"""`gic`: data, training, prediction and benchmarks for the VGG16 two-phase trainer.

    gic data synth --dest data/synth          # a synthetic stand-in, no download
    gic train --config configs/demo-train.yaml
    gic predict results/train/model.keras photo.jpg

User mistakes print one line (`error: ...`) and exit with code 2; no traceback.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from gic.cli_common import CONTEXT, OneLineErrors, user_errors
from gic.cli_data import data
from gic.errors import GicError
from gic.shipped import config_option


@click.group(cls=OneLineErrors, context_settings=CONTEXT)
@click.version_option(package_name="gic-tune")
def main() -> None:
    """Train and evaluate the VGG16 transfer-learning classifier of men and women photos.

    The data flow is config -> data -> model -> two-phase trainer -> metrics. Start with
    `gic data synth` (no download needed) or `gic data download` + `gic data prepare`.
    `gic COMMAND --help` describes each command. The search over this trainer is `gic-tune`.

    \b
    Examples:
      gic train --config configs/demo-train.yaml      # ~1 minute on 2 cores, synthetic data
      gic predict results/train/demo-train/model.keras photo.jpg
    """


main.add_command(data)


# -------------------------------------------------------------------------------------- train
@main.command("train")
@click.option("--config", "config_path", type=click.Path(path_type=Path), required=True, callback=config_option(),
              help="Trainer YAML (e.g. configs/demo-train.yaml, configs/baseline.yaml): your file if it exists, "
                   "else the shipped config of that name (gic-tune init copies them out).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config key, e.g. --set phase1.epochs=5 (repeatable).")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Output folder [default: results/train/<config name>].")
@click.option("--resume", is_flag=True, help="Continue the run in OUT from its last checkpoint (written every epoch).")
@click.option("--overwrite", is_flag=True, help="Replace the earlier run in OUT (its model, metrics and checkpoint).")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads for TensorFlow.")
@user_errors
def train_cmd(config_path: Path, overrides: tuple[str, ...], out: Path | None, resume: bool, overwrite: bool,
              threads: int | None) -> None:
    """Train the two-phase VGG16 classifier and evaluate its best weights on the test split.

    Writes to OUT: config.yaml (resolved), command.txt, versions.json, history.csv, metrics.json,
    model.keras (best weights), curves.png and checkpoint/ (for --resume). An OUT that holds an
    earlier run is never replaced without --overwrite; --resume refuses a config that differs from
    the run's own, and on a finished run says so and touches nothing.

    \b
    Examples:
      gic train --config configs/demo-train.yaml
      gic train --config configs/demo-train.yaml --resume       # after a crash or Ctrl-C
    """
    from gic.config import load_config
    from gic.files import check_writable

    cfg = load_config(config_path, list(overrides))
    out = out or Path("results") / "train" / config_path.stem
    if resume and overwrite:
        raise GicError("--resume continues the run in OUT, --overwrite replaces it: use one of them")
    fresh = not out.exists() or (out.is_dir() and not any(out.iterdir()))
    checkpoint = out / "checkpoint"
    if resume:
        if _resume_plan(cfg, out) == "complete":
            return
    else:
        _clear_earlier_run(out, overwrite)
    out = check_writable(out)
    try:
        run_training(cfg, out, resume=checkpoint if resume else None, threads=threads)
    except BaseException:
        # Nothing half-written: a new run stopped before its first checkpoint (bad data or weights,
        # a crash, Ctrl-C) leaves no folder behind; a folder with a checkpoint is kept for --resume.
        from gic.checkpoint import find_checkpoint

        if fresh and find_checkpoint(checkpoint) is None:
            import shutil

            shutil.rmtree(out, ignore_errors=True)
        raise


RUN_OUTPUTS = ("config.yaml", "command.txt", "versions.json", "history.csv", "metrics.json", "model.keras",
               "curves.png", "checkpoint")
RESUME_SAFE_KEYS = ("data.cache_dir",)  # where caches live: changing it changes no result


def _clear_earlier_run(out: Path, overwrite: bool) -> None:
    """Refuse to replace an earlier run in `out` unless `overwrite`; with it, remove that run's files."""
    from gic.checkpoint import find_checkpoint

    # A run killed before its first checkpoint left only its self-description: nothing to lose.
    earlier = [name for name in ("metrics.json", "model.keras", "history.csv") if (out / name).exists()]
    if find_checkpoint(out / "checkpoint") is not None:
        earlier.append("checkpoint")
    if not earlier:
        return
    if not overwrite:
        raise GicError(f"{out}: holds an earlier run ({', '.join(earlier)}); add --resume to continue it, "
                       "--overwrite to replace it, or choose another --out")
    import shutil

    for name in RUN_OUTPUTS:
        target = out / name
        shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
    for leftover in out.glob(".checkpoint.*"):
        shutil.rmtree(leftover, ignore_errors=True)


def _resume_plan(cfg, out: Path) -> str:
    """"complete" when the run in `out` has finished (said on stdout, nothing touched), else
    "continue". Refuses a missing checkpoint and a config that differs from the run's own."""
    import json

    from gic.checkpoint import META, find_checkpoint

    checkpoint = find_checkpoint(out / "checkpoint")
    if checkpoint is None:
        raise GicError(f"{out / 'checkpoint'}: no checkpoint to resume from; run without --resume first")
    meta = json.loads((checkpoint / META).read_text())
    from gic.config import config_changes

    changed = config_changes(meta.get("config", {}), cfg.to_dict(), safe=RESUME_SAFE_KEYS)
    if changed:
        raise GicError(f"--resume: {out} was trained with other settings ({'; '.join(changed)}); "
                       "resume with the run's own config (OUT/config.yaml), or train into a new --out")
    if meta["epoch"] >= cfg.total_epochs and (out / "metrics.json").is_file() and (out / "model.keras").is_file():
        metrics = json.loads((out / "metrics.json").read_text())
        click.echo(f"{out}: already complete ({meta['epoch']}/{cfg.total_epochs} epochs, best val_accuracy "
                   f"{metrics.get('best_val_accuracy') or float('nan'):.4f} at epoch {metrics.get('best_epoch')}); nothing to resume")
        return "complete"
    return "continue"


def run_training(cfg, out: Path, resume: Path | None = None, threads: int | None = None) -> dict:
    """config -> data -> two-phase training -> files in `out`; returns metrics.json's content."""
    import pandas as pd

    from gic.config import save_config
    from gic.data import load_dataset
    from gic.evaluate import plot_curves
    from gic.files import atomic_path, atomic_write_json, atomic_write_text, command_line, versions
    from gic.runtime import configure_tensorflow

    configure_tensorflow(threads=threads)
    save_config(cfg, out / "config.yaml")
    atomic_write_text(out / "command.txt", command_line() + "\n")
    atomic_write_json(out / "versions.json", versions())
    data = load_dataset(cfg.data, progress=True)
    click.echo(f"data: {len(data.train)} train / {len(data.validation)} validation / {len(data.test)} test images "
               f"at {cfg.data.image_size} px from {cfg.data.dir}")
    total = cfg.total_epochs

    def on_epoch(m: dict, save_checkpoint) -> None:
        save_checkpoint(out / "checkpoint")
        click.echo(f"epoch {m['epoch']:>3}/{total} phase {m['phase']}  loss {m['loss']:.4f}  "
                   f"accuracy {m['accuracy']:.4f}  val_loss {m['val_loss']:.4f}  "
                   f"val_accuracy {m['val_accuracy']:.4f}  ({m['epoch_time_s']:.1f}s)")

    from gic.train import train_two_phase

    result = train_two_phase(cfg, data, on_epoch=on_epoch, resume=resume)
    metrics = result.metrics()
    with atomic_path(out / "history.csv") as tmp:
        pd.DataFrame(result.history).to_csv(tmp, index=False)
    with atomic_path(out / "model.keras") as tmp:
        result.model.save(tmp)
    plot_curves(result.history, out / "curves.png", title=f"{cfg.model.weights} weights, {cfg.data.image_size} px")
    atomic_write_json(out / "metrics.json", metrics)
    test = result.test or {}
    click.echo(f"best val_accuracy {result.best_val_accuracy:.4f} at epoch {result.best_epoch}; "
               f"test_accuracy {test.get('test_accuracy', float('nan')):.4f}, test_auc {test.get('test_auc', float('nan')):.4f}"
               f" ({result.precision})")
    click.echo(f"wrote {out}/ (model.keras, metrics.json, history.csv, curves.png)")
    return metrics


# ------------------------------------------------------------------------------------ predict
@main.command("predict")
@click.argument("model_path", metavar="MODEL", type=click.Path(path_type=Path))
@click.argument("paths", metavar="PATH...", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Write the predictions to this file instead of the terminal; the format follows its "
                   "extension (.csv, .json, .tsv) unless --format says.")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default=None,
              help="table (tab-separated, with a header), csv or json [default: by --out's extension, else table].")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True,
              help="Images decoded and predicted together (one model.predict per batch).")
@click.option("--threshold", type=click.FloatRange(0.0, 1.0), default=0.5, show_default=True,
              help="Label women when p_women >= THRESHOLD, else men.")
@user_errors
def predict_cmd(model_path: Path, paths: tuple[Path, ...], out: Path | None, fmt: str | None, batch_size: int,
                threshold: float) -> None:
    """Predict men or women for image files and folders with a trained model.

    MODEL is a .keras file written by `gic train` or `gic-tune retrain`, loaded in Keras' safe mode
    (a model holding code, such as a Lambda layer, is refused). Each PATH is an image file or a
    folder, read recursively: every file whose extension Pillow decodes, hidden files and links to
    folders skipped (what the training data loader reads).

    Prints a header (file, label, p_men, p_women, threshold), then one row per image as its batch is
    done. A file that cannot be read is named on stderr and the others go on; the exit code is then 2.

    \b
    Examples:
      gic predict results/train/demo-train/model.keras photo1.jpg photo2.jpg
      gic predict model.keras photos/ --out predictions.csv --batch-size 64
    """
    from gic.errors import ModelError
    from gic.model import load_model
    from gic.predict import (COLUMNS, Failure, collect_images, input_size, output_format, predict_files, render,
                             table_line)

    fmt = output_format(out, fmt)
    model = load_model(model_path)
    try:
        input_size(model)
    except ModelError as err:
        raise ModelError(f"{model_path}: {err}") from None
    files, failures = collect_images(paths)
    unfound = len(failures)  # PATHs that name nothing or an empty folder
    for failure in failures:
        click.echo(f"error: {failure.error}", err=True)
    stream = fmt == "table" and out is None  # rows on the terminal as batches finish
    if stream and files:
        click.echo(table_line(COLUMNS))
    predictions = []
    for item in predict_files(model, files, batch_size=batch_size, threshold=threshold):
        if isinstance(item, Failure):
            failures.append(item)
            click.echo(f"error: {item.error}", err=True)
        elif stream:
            click.echo(table_line(item.row().values()))
        else:
            predictions.append(item)
    if not stream:
        text = render(predictions, failures, fmt, model_path, threshold)
        if out is None:
            click.echo(text, nl=False)
        else:
            from gic.files import atomic_write_text

            atomic_write_text(out, text)
            counts = ", ".join(f"{sum(p.label == name for p in predictions)} {name}" for name in ("men", "women"))
            click.echo(f"wrote {out}: {len(predictions)} images ({counts})")
    if failures:
        click.echo(f"error: {len(failures)} of {len(files) + unfound} path(s) not predicted (named above)", err=True)
        sys.exit(2)


# -------------------------------------------------------------------------------------- bench
@main.group()
def bench() -> None:
    """Benchmarks that print figures: this trainer against the seed's pipeline, and the search.

    \b
    Examples:
      gic bench train --data data/synth-64 --size 64 --epochs 2
      gic bench search --num-samples 8
    """


@bench.command("train")
@click.option("--data", "data_dir", type=click.Path(path_type=Path), required=True,
              help="Image folder with {train,validation,test}/{men,women}.")
@click.option("--size", type=click.IntRange(min=32), default=160, show_default=True, help="Image side in px.")
@click.option("--epochs", type=click.IntRange(min=1), default=2, show_default=True, help="Epochs per phase.")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True, help="Images per step.")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]), default="auto", show_default=True,
              help="The trainer's precision (the seed pipeline is always fp32).")
@click.option("--weights", default="hed", show_default=True, help="VGG16 base weights: hed | imagenet | none | FILE.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads for TensorFlow.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a trainer config key, e.g. --set jit_compile=on (repeatable).")
@click.option("--only", type=click.Choice(["both", "trainer", "seed"]), default="both", show_default=True,
              help="Run only one side (no ratio without the seed; no ceiling without the trainer).")
@click.option("--phase", type=click.Choice(["all", "p1", "p1aug"]), default="all", show_default=True,
              help="p1: phase 1 without augmentation alone (e.g. at the seed's 20 epochs); p1aug: phase 1 "
                   "with augmentation, then phase 2.")
@click.option("--repeats", type=click.IntRange(min=1), default=3, show_default=True,
              help="Runs of each trainer phase (each with its ceiling), each in its own process.")
@click.option("--seed-repeats", type=click.IntRange(min=1), default=1, show_default=True,
              help="Runs of each phase of the seed pipeline (4-5x slower than the trainer's).")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=1800, show_default=True,
              help="Seconds one run (one phase of one pipeline, one repeat) may take before it is stopped.")
@click.option("--cpu-ghz", type=click.FloatRange(min=0, min_open=True), default=None,
              help="The CPU cores' clock for the hardware peak [default: cpufreq's max, else /proc/cpuinfo's "
                   "MHz, which a VM often reports below the boost clock].")
@user_errors
def bench_train_cmd(data_dir: Path, size: int, epochs: int, batch_size: int, precision: str, weights: str,
                    threads: int | None, overrides: tuple[str, ...], only: str, phase: str, repeats: int,
                    seed_repeats: int, timeout: float, cpu_ghz: float | None) -> None:
    """Each phase of the trainer against its ceiling on this machine and against the seed pipeline.

    Per phase (1 without augmentation on cached features, 1 with augmentation, 2 with 3 conv layers
    unfrozen) and pipeline: images/s, % of the ceiling (in wall time, and in CPU seconds, which
    another process's load does not change), ratio to the seed, peak memory, FLOP/s and
    the fraction of the hardware's peak, test accuracy after that phase, wall time. Every run is its
    own process; figures are medians over the repeats with ± half their range.

    The ceiling is measured in each trainer run: the same model's compiled steps on device-resident
    batches at the trainer's precision, batch size and jit setting. The goal is 85% of it.

    \b
    Examples:
      gic bench train --data data/synth-64 --size 64 --epochs 2
      gic bench train --data data/menwomen --size 180 --epochs 3 --precision bf16 --only trainer
    """
    from gic.bench import BenchRunFailed, bench_train, format_table

    impls = ("trainer", "seed") if only == "both" else (only,)
    click.echo(f"gic bench train: {data_dir} at {size} px, {epochs} epoch(s) per phase, batch {batch_size}, "
               f"{repeats} repeat(s) of the trainer, {seed_repeats} of the seed")
    try:
        rows, meta = bench_train(data_dir, size, epochs=epochs, batch_size=batch_size, precision=precision,
                                 weights=weights, threads=threads, overrides=overrides, impls=impls, which=phase,
                                 repeats=repeats, seed_repeats=seed_repeats, timeout=timeout, cpu_ghz=cpu_ghz,
                                 echo=click.echo)
    except BenchRunFailed as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(1)
    click.echo("")
    click.echo(format_table(rows, meta, size, epochs))


@bench.command("search", add_help_option=False,
               context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
def bench_search_cmd(ctx: click.Context) -> None:
    """The search benchmark: `gic-tune bench` (a K-trial search and where its time went).

    It lives in the search package (gic never imports tune); this command hands its arguments over
    to it, --help included.
    """
    import shutil

    exe = shutil.which("gic-tune")
    if exe is None:
        raise click.UsageError("gic-tune is not on PATH; install the package (pip install -e .)")
    if any(arg in ("-h", "--help") for arg in ctx.args):
        # The options are gic-tune bench's: show its help, under this command's name.
        import subprocess

        shown = subprocess.run([exe, "bench", "--help"], capture_output=True, text=True, check=False)
        click.echo(shown.stdout.replace("gic-tune bench", "gic bench search"), nl=False)
        return
    sys.stdout.flush()
    os.execv(exe, [exe, "bench", *ctx.args])


if __name__ == "__main__":
    main()
