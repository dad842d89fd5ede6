"""`gic-tune`: the distributed search over gic's two-phase trainer.

    gic-tune run                                   # configs/demo.yaml: synthetic data, CPU, ~2 min
    gic-tune run --config configs/search.yaml --address auto
    gic-tune run --config configs/demo.yaml --resume   # continue an interrupted search
    gic-tune run --set search.num_samples=4 --set trainer.phase1.epochs=1

User mistakes print one line (`error: ...`) and exit with code 2; no traceback.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click
from gic.cli_common import CONTEXT, OneLineErrors, user_errors
from gic.shipped import config_option

# No --config: ./configs/demo.yaml when the current folder has one, else the shipped demo.yaml (gic.shipped).
DEFAULT_CONFIG = Path("configs") / "demo.yaml"


@click.group(cls=OneLineErrors, context_settings=CONTEXT)
@click.version_option(package_name="gic-tune")
def main() -> None:
    """Search the VGG16 classifier's hyperparameters with Ray Tune, Optuna TPE and ASHA.

    `run` searches; `trials`, `report` and `retrain` read an experiment folder (results/<name>/),
    during the search or after it, with no Ray running. Each command's --help describes it.

    \b
    Examples:
      gic-tune run                              # configs/demo.yaml: synthetic data, CPU, ~2 minutes
      gic-tune trials results/demo --top 5 && gic-tune retrain results/demo
    """


@main.command("run")
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=None,
              callback=config_option(DEFAULT_CONFIG),
              show_default="configs/demo.yaml", help="Search file: trainer (or base), space, search.")
@click.option("--name", default=None, help="Experiment name: results go to <storage_path>/<name>/ (default: search.name).")
@click.option("--address", default=None, help="Ray cluster to join: `auto` or host:port. Default: a local Ray on 127.0.0.1.")
@click.option("--num-samples", type=click.IntRange(min=1), default=None, help="Trials in total (search.num_samples).")
@click.option("--resume", is_flag=True, help="Continue the interrupted experiment of this name.")
@click.option("--time-budget", "time_budget", default=None, metavar="DURATION",
              help="Stop the search after this long, e.g. 30m, 2h, 90s: no trial starts after it, running ones stop.")
@click.option("--warm-start", "warm_start", type=click.Path(path_type=Path), default=None,
              help="A previous experiment folder: its trials (with their states) seed the new study.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a key of the search file, e.g. search.max_concurrent=4 or trainer.phase1.epochs=2.")
@click.option("--verbose", is_flag=True,
              help="Show Ray's own notices and logs (INFO) here; without it they go to <experiment>/ray.log.")
@user_errors
def run(config_path: Path, name: str | None, address: str | None, num_samples: int | None, resume: bool,
        overrides: tuple[str, ...], warm_start: Path | None = None, time_budget: str | None = None,
        verbose: bool = False) -> None:
    """Run a search; print progress; write trials.csv and best_config.yaml.

    Prints one line per event (a trial started, stopped by ASHA, finished, retried) with the counts
    and the best so far, and every 30 s (search.progress_every_s) a status block: each running
    trial's epoch, phase and score, and an estimate of the time left; then a summary. Results go to <storage_path>/<name>/; Ctrl-C saves the
    experiment and prints the --resume command. Ray's own notices go to <storage_path>/<name>/ray.log
    (errors are shown here), unless --verbose.

    \b
    Examples:
      gic-tune run --config configs/search.yaml --address auto
      gic-tune run --num-samples 4 --set trainer.phase1.epochs=2 --set search.max_concurrent=1
    """
    from tune.config import load_search_config

    sets = list(overrides)
    if num_samples is not None:
        sets.append(f"search.num_samples={num_samples}")
    if time_budget is not None:
        sets.append(f"search.time_budget_s={parse_duration(time_budget)}")
    spec = load_search_config(config_path, sets)

    from tune.search import run_search

    command = " ".join(shlex.quote(a) for a in ["gic-tune", *sys.argv[1:]])
    if warm_start is not None:
        from gic.errors import GicError
        from tune.trials import require_experiment

        if resume:
            raise GicError("--warm-start starts a new search; --resume continues one: use one of them")
        require_experiment(warm_start)
    summary = run_search(spec, name=name, address=address, resume=resume, echo=_echo, command=command,
                         warm_start=str(warm_start) if warm_start else None, verbose=True if verbose else None)
    if summary.interrupted:
        again = command if resume else f"{command} --resume"
        click.echo(f"interrupted: the experiment is saved in {summary.experiment_path}; "
                   f"continue it with: {again}", err=True)
        sys.exit(130)  # 128 + SIGINT, as a shell reports Ctrl-C
    if summary.state == "failed":
        first = next((e for e in summary.trials.get("error", []) if isinstance(e, str)), "see trials.csv")
        click.echo(f"error: every trial errored ({len(summary.trials)} of {len(summary.trials)}); the first: {first}",
                   err=True)
        sys.exit(1)


def parse_duration(text: str) -> float:
    """Seconds in `90`, `90s`, `30m`, `2h` or `1h30m`.

    Raises:
        GicError: anything else.
    """
    import re

    from gic.errors import GicError

    parts = re.fullmatch(r"\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s?)?\s*", text)
    if not text.strip() or parts is None or not any(parts.groups()):
        raise GicError(f"--time-budget {text}: expected a duration such as 90s, 30m, 2h or 1h30m")
    h, m, sec = (float(g) if g else 0.0 for g in parts.groups())
    seconds = h * 3600 + m * 60 + sec
    if seconds <= 0:
        raise GicError(f"--time-budget {text}: expected a duration above zero")
    return seconds


def _echo(line: str) -> None:
    click.echo(line)
    sys.stdout.flush()


# ---------------------------------------------------------------------- inspect, report, retrain
@main.command("trials")
@click.argument("results_dir", required=False, type=click.Path(path_type=Path))
@click.option("--sort", "sort_key", default=None, metavar="KEY",
              help="Column or hyperparameter: best (default), last, epochs, wall, id, dropout_rate, ...")
@click.option("--reverse", is_flag=True, help="Reverse the order (val accuracies sort best first).")
@click.option("--top", type=click.IntRange(min=1), default=None, help="Keep the first N rows after sorting.")
@click.option("--status", "statuses", multiple=True, metavar="S",
              help="Only these statuses: running, pending, stopped, finished, errored (repeatable or a,b).")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json", "parquet"]), default="table",
              show_default=True, help="table fits the terminal; parquet needs --output or a redirect.")
@click.option("--output", "-o", type=click.Path(path_type=Path), default=None, help="Write to a file instead of stdout.")
@user_errors
def trials_cmd(results_dir: Path | None, sort_key: str | None, reverse: bool, top: int | None,
               statuses: tuple[str, ...], fmt: str, output: Path | None) -> None:
    """The trial table of RESULTS_DIR, read from disk (works during a run, and with no Ray running).

    With no RESULTS_DIR (or a folder of experiments), one line per experiment under results/.

    \b
    Examples:
      gic-tune trials results/demo --top 5
      gic-tune trials results/demo --status finished,stopped --format csv -o trials.csv
    """
    from tune.trials import (experiments_table, is_experiment, list_experiments, render, select,
                             trial_table)

    folder = results_dir or Path("results")
    if results_dir is None or (folder.is_dir() and not is_experiment(folder)):
        frame = list_experiments(folder)
        text = experiments_table(frame) if fmt == "table" else render(frame, fmt)
    else:
        wanted = [s.strip() for item in statuses for s in item.split(",") if s.strip()]
        frame = select(trial_table(folder), sort=sort_key, top=top, status=wanted, reverse=reverse)
        text = render(frame, fmt)
    _emit(text, output)


def _emit(text: str | bytes, output: Path | None) -> None:
    """Text or bytes to a file or stdout; binary (parquet) refuses a terminal."""
    from gic.errors import GicError

    if output is not None:
        from gic.files import atomic_write_bytes

        atomic_write_bytes(output, text if isinstance(text, bytes) else text.encode())
        click.echo(f"wrote {output}", err=True)
    elif isinstance(text, bytes):
        if sys.stdout.isatty():
            raise GicError("--format parquet is binary: add --output FILE or redirect stdout to a file")
        click.get_binary_stream("stdout").write(text)
    else:
        click.echo(text.rstrip("\n"))

@main.command("report")
@click.argument("results_dir", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Folder for report.html, summary.md and the PNGs [default: RESULTS_DIR/report].")
@click.option("--no-study", is_flag=True, help="Skip the Optuna SQLite export (RESULTS_DIR/optuna_study.db).")
@user_errors
def report_cmd(results_dir: Path, out: Path | None, no_study: bool) -> None:
    """Plots, summary.md and a self-contained report.html; the study as an Optuna SQLite file.

    \b
    Examples:
      gic-tune report results/demo
      gic-tune report results/demo --out /tmp/demo-report --no-study
    """
    from tune.report import make_report

    report = make_report(results_dir, out=out, export=not no_study)
    click.echo(f"wrote {report.html}")
    click.echo(f"      {report.summary} and {len(report.pngs)} PNGs beside it")
    if report.study_db is not None:
        click.echo(f"      {report.study_db}: optuna-dashboard sqlite:///{report.study_db}")
    for note in report.notes:
        click.echo(f"note: {note}", err=True)


@main.command("rungs")
@click.argument("results_dir", type=click.Path(path_type=Path))
@click.option("--scheme", "schemes", multiple=True, metavar="BUDGET:GRACE:RF",
              help="A rung scheme to evaluate, e.g. epoch:2:3 or compute:1:3 (repeatable) [default: the search's own].")
@user_errors
def rungs_cmd(results_dir: Path, schemes: tuple[str, ...]) -> None:
    """How well ASHA's rungs predict the final score: Spearman's rho per rung.

    For each rung, the rank correlation between the trials' objective (best val accuracy so far)
    where they reached the rung and their final objective, over the trials that ran to the end. On
    a search run without early stopping (--set search.early_stopping=false) it compares schemes on
    the same trials, and replays Ray's ASHA rule on them: per scheme, the trials it would stop, the
    share of the epoch time it would spend, the best score it would still find, whether it keeps the
    trial that was best at the end, and the final ranks of the trials it lets finish.

    \b
    Examples:
      gic-tune rungs results/demo
      gic-tune rungs results/nostop --scheme epoch:2:3 --scheme compute:1:3
    """
    from gic.errors import GicError

    from tune.analysis import scheme_replays, scheme_table
    from tune.trials import require_experiment, search_config

    folder = require_experiment(results_dir)
    parsed = []
    for text in schemes:
        try:
            budget, grace, rf = text.split(":")
            parsed.append((budget, float(grace), float(rf)))
        except ValueError:
            raise GicError(f"--scheme {text}: expected BUDGET:GRACE:RF, e.g. compute:1:3") from None
        if budget not in ("compute", "epoch"):
            raise GicError(f"--scheme {text}: budget {budget!r}: expected compute or epoch")
    if not parsed:
        search = search_config(folder).get("search") or {}
        parsed = [(str(search.get("budget", "epoch")), float(search.get("grace_period", 1)),
                   float(search.get("reduction_factor", 2)))]
    table = scheme_table(str(folder), parsed)
    if table.empty:
        click.echo(f"{folder}: no rung within these schemes' budgets (grace above the longest trial?)")
        return
    table["spearman"] = [("-" if v is None or v != v else f"{v:.2f}") for v in table["spearman"]]
    table["rung"] = [f"{v:g}" for v in table["rung"]]
    click.echo(table.drop(columns=["budget"]).to_string(index=False))  # the scheme names its budget
    click.echo("spearman: rank correlation between the best val accuracy at the rung and at the end, over the "
               "trials that ran to the end (-: fewer than 3 of them, or no spread)")
    replays = scheme_replays(str(folder), parsed)
    if replays:
        click.echo("\nASHA replayed on these trials (all ran to the end), in the order their results came:")
        click.echo(f"{'scheme':>22}  {'stops':>5}  {'epoch time':>10}  {'best found':>10}  best kept  final ranks kept")
        for r in replays:
            click.echo(f"{r.scheme:>22}  {r.stopped:>5}  {100 * r.epoch_time_share:>9.0f}%  {r.best_found:>10.4f}  "
                       f"{'yes' if r.best_kept else 'NO':>9}  {' '.join(map(str, r.kept_ranks))}")
        click.echo("epoch time: the epoch seconds the scheme would have spent, against the search's own; best found: "
                   "the highest best val accuracy any trial reached before its stop or end; best kept: the trial "
                   "best at the end is not stopped; final ranks kept: the ranks at the end (1 = best) of the "
                   "trials it lets finish")


@main.command("retrain")
@click.argument("results_dir", type=click.Path(path_type=Path))
@click.option("--top", type=click.IntRange(min=1), default=1, show_default=True, help="Retrain the K best trials.")
@click.option("--seeds", type=click.IntRange(min=1), default=1, show_default=True,
              help="Runs per configuration (seed, seed+1, ...): mean ± std.")
@click.option("--train-on", type=click.Choice(["train", "train+validation"]), default="train", show_default=True,
              help="train+validation has no validation to pick an epoch: the last epoch's weights are used.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Output folder [default: RESULTS_DIR/retrain/<settings>, e.g. train-top1-seeds3-baseline].")
@click.option("--overwrite", is_flag=True, help="Train every run again, replacing complete runs in the output folder.")
@click.option("--compare-baseline", is_flag=True,
              help="Also train configs/baseline.yaml's recipe on the same data, image size, budget and seeds.")
@click.option("--baseline", "baseline_path", type=click.Path(path_type=Path), default=None,
              help="The seed-recipe config for --compare-baseline [default: configs/baseline.yaml].")
@click.option("--address", default=None,
              help="Ray cluster (`auto`, host:port, or `local` for a local Ray): the runs go there in parallel.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a trainer key of the retrained configs, e.g. phase1.epochs=30.")
@user_errors
def retrain_cmd(results_dir: Path, top: int, seeds: int, train_on: str, out: Path | None, overwrite: bool,
                compare_baseline: bool, baseline_path: Path | None, address: str | None,
                overrides: tuple[str, ...]) -> None:
    """Retrain the best configuration(s) from scratch, full budget, no early stopping; test metrics.

    A rerun with the same settings keeps the runs that completed and trains the rest; other settings
    get their own folder. Nothing complete is replaced without --overwrite.

    \b
    Examples:
      gic-tune retrain results/demo
      gic-tune retrain results/demo --top 3 --seeds 3 --compare-baseline
    """
    from tune.retrain import BASELINE, retrain

    folder, table = retrain(results_dir, top=top, seeds=seeds, train_on=train_on, out=out,
                            compare_baseline=compare_baseline, address=address,
                            baseline_path=baseline_path or BASELINE, overrides=list(overrides), echo=_echo,
                            overwrite=overwrite)
    click.echo((folder / "comparison.md").read_text().rstrip())
    click.echo(f"wrote {folder}/ (per run: model.keras, metrics.json, history.csv, curves.png, MODEL_CARD.md; "
               "comparison.md, MODEL_CARD.md)")


# ------------------------------------------------------------------------------------- bench
@main.command("bench")
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=None,
              callback=config_option(DEFAULT_CONFIG),
              show_default="configs/demo.yaml", help="Search file to benchmark.")
@click.option("--num-samples", type=click.IntRange(min=1), default=None, help="K: trials in the search.")
@click.option("--name", default=None, help="Experiment name [default: bench-<date>-<time>].")
@click.option("--single/--no-single", default=False,
              help="Then time one full trial of the best configuration alone in a fresh process (stopped after "
                   "30 min), against the search's epoch times [default: --no-single].")
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None, help="Also write the figures here.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a key of the search file, e.g. search.debug.dry_run=true for the machinery alone.")
@user_errors
def bench_cmd(config_path: Path, num_samples: int | None, name: str | None, single: bool,
              json_path: Path | None, overrides: tuple[str, ...]) -> None:
    """Run one search and print where its slot time (wall x trials at a time) went.

    From that one run: wall time, the epochs run per phase, the sum of epoch times and its share of
    the slot time (goal >= 85 %), the rest by category (driver start, trial launch and start,
    checkpoint and report between epochs, idle slots while trials were left to start and in the
    tail, ...), idle cores, and the fixed overhead per trial cold and warm, each with its count and
    spread. `gic bench train` is the trainer's benchmark.

    \b
    Examples:
      gic-tune bench --num-samples 8 --json bench.json
      gic-tune bench --set search.debug.dry_run=true   # the search machinery alone
    """
    from tune.bench import bench_search, format_report, save_json
    from tune.config import load_search_config

    sets = list(overrides) + ([f"search.num_samples={num_samples}"] if num_samples else [])
    spec = load_search_config(config_path, sets)
    _, figures = bench_search(spec, name=name, single=single, echo=_echo)
    click.echo(format_report(figures))
    if json_path is not None:
        save_json(figures, json_path)
        click.echo(f"wrote {json_path}")


# ------------------------------------------------------------------------------ init (packaging)
@main.command("init")
@click.argument("dest", type=click.Path(path_type=Path), default=Path("configs"))
@click.option("--overwrite", is_flag=True, help="Replace files that DEST already has.")
@user_errors
def init_cmd(dest: Path, overwrite: bool) -> None:
    """Copy the shipped configs into DEST [default: ./configs] to edit them.

    A `--config` path that exists is always your file; one that does not exist but names a shipped
    config (demo.yaml, configs/search.yaml, ...) means the shipped one. Existing files are kept
    unless --overwrite.

    \b
    Examples:
      gic-tune init && gic-tune run --config configs/demo.yaml --set search.num_samples=4
      gic-tune init my-configs --overwrite
    """
    from gic.shipped import copy_shipped

    copied, same = copy_shipped(dest, overwrite=overwrite)
    if copied:
        click.echo(f"copied {len(copied)} configs to {dest}/: {', '.join(copied)}")
    if same:
        click.echo(f"{dest}/ already is the shipped folder (an editable install): {len(same)} files left as they are")


if __name__ == "__main__":
    main()
