"""Retrain the best configuration(s) of a search from scratch and measure them on the test split.

(About 410 lines, one job: plan the runs, train them here or on Ray, compare them; split further it
would scatter one flow over several files.)

    gic-tune retrain results/demo                            # best trial, 1 seed, in this process
    gic-tune retrain results/demo --top 3 --seeds 3 --compare-baseline --address auto

A search picks configurations by val accuracy after early stopping; the number to quote comes from
here: each configuration trained again with the full epoch budget (E1 + E2, no early stopping),
its best-val-accuracy weights evaluated once on the untouched test split. With
`--train-on train+validation` there is no held-out validation to pick an epoch, so the last
epoch's weights are used (and metrics.json says so).

Output (default <experiment>/retrain/<settings>/, e.g. retrain/train-top1-seeds3-baseline/; `--set`
overrides add a hash, so retrains with other settings never share a folder; a rerun of the same
settings keeps the runs that are complete and trains the rest):
    <config>/seed<k>/   config.yaml, model.keras (loadable by `gic predict`), metrics.json,
                        history.csv, curves.png, versions.json, MODEL_CARD.md + model_card.json
    summary.csv         one row per run
    comparison.csv/.md  per configuration: test accuracy, AUC and training time, mean ± std over seeds
    MODEL_CARD.md       every model: data, test metrics over seeds, the trials, versions, rebuild commands
                        (+ model_card.json; see tune.model_card)

Runs in this process print a line per epoch (epoch, phase, loss, val_accuracy, seconds).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from gic.config import TrainConfig, load_config
from gic.errors import GicError
from gic.shipped import shipped_dir

from tune.experiment import RETRAIN_DIR
from tune.results import params_of
from tune.trials import require_experiment, search_config, select, trial_table

BASELINE = shipped_dir() / "baseline.yaml"  # the seed recipe as shipped (installed package data or the clone's configs/)
# What the baseline takes from the tuned config to run on the same data, image size and budget; the
# recipe itself (head, dropout, augmentation, optimizers, learning rates, unfrozen layers) stays.
SHARED_WITH_BASELINE = ("data", "phase1.epochs", "phase2.epochs", "model.weights", "precision", "jit_compile",
                        "steps_per_execution")


@dataclass(frozen=True)
class Run:
    """One training run: a named configuration and a seed."""

    name: str  # "best-<trial id>", "top2-<trial id>" or "baseline"
    seed: int
    config: dict[str, Any]  # TrainConfig as a dict (plain data: it travels to Ray workers)
    train_on: str

    @property
    def folder(self) -> str:
        return f"{self.name}/seed{self.seed}"


def tuned_configs(experiment: str | Path, top: int = 1, overrides: list[str] | None = None) -> list[tuple[str, TrainConfig]]:
    """The top-K trials' full trainer configs (the search's base config plus each trial's params).

    Raises:
        GicError: no trial has a score yet, or the folder lacks the search's trainer config.
    """
    from tune.space import apply_params

    folder = require_experiment(experiment)
    base = search_config(folder).get("trainer")
    if not base:
        raise GicError(f"{folder}: no search_config.yaml with the trainer config; cannot rebuild the trials' configs")
    frame = select(trial_table(folder), sort="best", status=["finished", "stopped"])
    frame = frame.dropna(subset=["best_val_accuracy"]).head(top)
    if frame.empty:
        raise GicError(f"{folder}: no finished or stopped trial with a val accuracy yet; nothing to retrain")
    out = []
    for rank, row in enumerate(frame.to_dict("records"), start=1):
        cfg = apply_params(TrainConfig.model_validate(base), params_of(row))
        if overrides:
            cfg = cfg.with_overrides(list(overrides))
        out.append((f"{'best' if rank == 1 else f'top{rank}'}-{row['trial_id']}", cfg))
    return out


def baseline_config(tuned: TrainConfig, path: str | Path = BASELINE) -> TrainConfig:
    """The seed recipe on the tuned config's data, image size, epoch budget, weights and precision."""
    recipe = load_config(path).to_dict()
    source = tuned.to_dict()
    for key in SHARED_WITH_BASELINE:
        node_from, node_to = source, recipe
        *parents, leaf = key.split(".")
        for part in parents:
            node_from, node_to = node_from[part], node_to[part]
        node_to[leaf] = node_from[leaf]
    return TrainConfig.model_validate(recipe)


def plan_runs(configs: list[tuple[str, TrainConfig]], seeds: int, train_on: str,
              baseline: TrainConfig | None) -> list[Run]:
    """K configs x S seeds (+ the baseline x S seeds): seed k is the config's own seed + k."""
    named = list(configs) + ([("baseline", baseline)] if baseline is not None else [])
    first_seed = configs[0][1].seed
    runs = []
    for name, cfg in named:
        for k in range(seeds):
            seeded = cfg.with_overrides({"seed": first_seed + k})
            runs.append(Run(name=name, seed=first_seed + k, config=seeded.to_dict(), train_on=train_on))
    return runs


def _merge_train_validation(data):
    """train+validation as the training split; the validation split stays only as a (seen) monitor."""
    import dataclasses

    import numpy as np
    from gic.data import Split

    merged = Split(images=np.concatenate([data.train.images, data.validation.images]),
                   labels=np.concatenate([data.train.labels, data.validation.labels]),
                   paths=[*data.train.paths, *data.validation.paths])
    return dataclasses.replace(data, train=merged, fingerprint=f"{data.fingerprint}+val")


def train_run(run: Run, data, out: str | Path, on_epoch=None) -> dict[str, Any]:
    """Train one run from scratch into `out`; return its metrics (also written to metrics.json).

    Every file is written atomically and metrics.json last, so a run folder with a metrics.json is
    complete (what `run_all` reuses after an interruption).

    Args:
        run: the configuration and seed.
        data: the decoded dataset.
        out: the run's folder.
        on_epoch: called after every epoch with the trainer's epoch metrics (`gic.train`'s `on_epoch`).
    """
    from gic.config import save_config
    from gic.evaluate import plot_curves
    from gic.files import atomic_path, atomic_write_json, versions
    from gic.train import train_two_phase

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = TrainConfig.model_validate(run.config)
    save_config(cfg, out / "config.yaml")
    atomic_write_json(out / "versions.json", versions())  # of the machine that trains it (a Ray worker)
    merged = run.train_on == "train+validation"
    if merged:  # no held-out validation to pick an epoch by: the last epoch's weights are kept
        data = _merge_train_validation(data)
    started = time.perf_counter()
    result = train_two_phase(cfg, data, restore_best=not merged, on_epoch=on_epoch)
    train_s = time.perf_counter() - started
    if merged:
        selection = {"weights": "last epoch", "epoch": cfg.total_epochs,
                     "why": "trained on train+validation: no held-out validation to pick the best epoch; "
                            "val_accuracy in history.csv is on images the model trained on"}
    else:
        selection = {"weights": "best val_accuracy", "epoch": result.best_epoch}
    with atomic_path(out / "history.csv") as tmp:
        pd.DataFrame(result.history).to_csv(tmp, index=False)
    with atomic_path(out / "model.keras") as tmp:
        result.model.save(tmp)
    plot_curves(result.history, out / "curves.png", title=f"{run.name} seed {run.seed} ({run.train_on})")
    metrics = {"name": run.name, "seed": run.seed, "train_on": run.train_on, "selected": selection,
               "best_epoch": result.best_epoch, "best_val_accuracy": result.best_val_accuracy,
               **(result.test or {}), "train_time_s": round(train_s, 2), "precision": result.precision,
               "epochs": cfg.total_epochs, "train_images": len(data.train), "test_images": len(data.test)}
    atomic_write_json(out / "metrics.json", metrics)
    return metrics


def finished_run(run: Run, folder: Path) -> dict[str, Any] | None:
    """The metrics of `run` when `folder` holds it complete (metrics.json written last), else None.

    Raises:
        GicError: `folder` holds a complete run of another configuration (never replaced silently).
    """
    metrics_file = folder / "metrics.json"
    if not metrics_file.is_file():
        return None
    import yaml

    done = yaml.safe_load((folder / "config.yaml").read_text()) if (folder / "config.yaml").is_file() else None
    metrics = json.loads(metrics_file.read_text())
    if done != run.config or metrics.get("train_on") != run.train_on:
        raise GicError(f"{folder}: holds a finished run of another configuration; add --overwrite to replace it, "
                       "or choose another --out")
    return metrics


def _remote_run(run: Run, data, threads: int) -> dict[str, bytes]:
    """A Ray task: train in a temporary folder on the worker and send the files back to the driver."""
    from gic.runtime import configure_tensorflow

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        configure_tensorflow(threads=threads)
    except Exception:  # noqa: BLE001 - a reused worker is configured already
        pass
    with tempfile.TemporaryDirectory(prefix="gic-retrain-run-") as tmp:
        train_run(run, data, tmp)
        return {p.name: p.read_bytes() for p in Path(tmp).iterdir() if p.is_file()}


def epoch_progress(total: int, echo=print, held_out: bool = True):
    """An `on_epoch` callback that prints one line per epoch, so that a long run is never silent.
    Without a held-out validation split (`--train-on train+validation`) the validation images are
    training images: their accuracy is printed as `fit accuracy`, not as val_accuracy."""
    label = "val_accuracy" if held_out else "fit accuracy (validation images, trained on)"

    def on_epoch(m: dict[str, Any], save_checkpoint=None) -> None:
        echo(f"    epoch {m['epoch']:>3}/{total} phase {m['phase']}  loss {m['loss']:.4f}  "
             f"{label} {m['val_accuracy']:.4f}  ({m['epoch_time_s']:.1f}s)")

    return on_epoch


def run_all(runs: list[Run], out: Path, address: str | None, resources: dict[str, float],
            echo=print, overwrite: bool = False, data=None) -> list[dict[str, Any]]:
    """Every run: in this process one after another, or as Ray tasks on a cluster in parallel.

    Runs already complete in `out` (an earlier, interrupted retrain with the same settings) are
    kept and not trained again, unless `overwrite`. The dataset is decoded once here (unless given
    as `data`); on a cluster it goes to the workers through the object store, and each run's files
    come back to this machine (no shared filesystem needed). Runs in this process print a line per
    epoch; Ray tasks a line per finished run.
    """
    from gic.data import load_dataset

    results = []
    if not overwrite:
        todo = []
        for run in runs:
            metrics = finished_run(run, out / run.folder)
            (todo.append(run) if metrics is None else results.append(metrics))
        if results:
            echo(f"{len(results)} of {len(runs)} runs already complete in {out}: kept"
                 + ("" if todo else "; nothing to train"))
        runs = todo
    if not runs:
        return sorted(results, key=lambda m: (m["name"] != "baseline", m["name"], m["seed"]))
    if data is None:
        data = load_dataset(TrainConfig.model_validate(runs[0].config).data)
    if address is None:
        from gic.runtime import configure_tensorflow

        configure_tensorflow(threads=None)
        for i, run in enumerate(runs, start=1):
            echo(f"[{i}/{len(runs)}] {run.name} seed {run.seed} on {run.train_on}")
            total = TrainConfig.model_validate(run.config).total_epochs
            metrics = train_run(run, data, out / run.folder, on_epoch=epoch_progress(total, echo, run.train_on == "train"))
            echo(f"    test_accuracy {metrics.get('test_accuracy', float('nan')):.4f}  "
                 f"test_auc {metrics.get('test_auc', float('nan')):.4f}  ({metrics['train_time_s']:.0f} s)")
            results.append(metrics)
        return sorted(results, key=lambda m: (m["name"] != "baseline", m["name"], m["seed"]))

    import ray

    from tune.ray_start import RayNotices, init_ray, verbose_from_env

    with RayNotices(out, verbose_from_env()) as notices:  # Ray's own notices -> <out>/ray.log
        owns = notices.start(init_ray, None if address == "local" else address)
        try:
            results += _run_on_ray(runs, out, resources, data, echo)
        finally:
            if owns:
                notices.closing()  # workers stopped by the shutdown print Ray's tracebacks: not news
                ray.shutdown()
    return sorted(results, key=lambda m: (m["name"] != "baseline", m["name"], m["seed"]))


def _run_on_ray(runs: list[Run], out: Path, resources: dict[str, float], data, echo) -> list[dict[str, Any]]:
    """The runs as Ray tasks in parallel; each run's files are written here as it ends (metrics.json last)."""
    import ray
    from gic.files import atomic_write_bytes

    cpu, gpu = float(resources.get("cpu", 1)), float(resources.get("gpu", 0))
    task = ray.remote(num_cpus=cpu, num_gpus=gpu, max_retries=1)(_remote_run)
    data_ref = ray.put(data)
    pending = {task.remote(run, data_ref, max(1, int(cpu))): run for run in runs}
    echo(f"{len(runs)} runs submitted to Ray ({cpu:g} CPU + {gpu:g} GPU each)")
    results = []
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        run = pending.pop(done[0])
        files = ray.get(done[0])
        folder = out / run.folder
        for name in sorted(files, key=lambda n: n == "metrics.json"):  # metrics.json last: complete
            atomic_write_bytes(folder / name, files[name])
        metrics = json.loads(files["metrics.json"])
        echo(f"    {run.name} seed {run.seed}: test_accuracy {metrics.get('test_accuracy', float('nan')):.4f}")
        results.append(metrics)
    return results


def _mean_std(values: list[float], digits: int = 4) -> str:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return "-"
    mean = sum(values) / len(values)
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def comparison(results: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per configuration: test accuracy, AUC (mean ± sample std over seeds), training time."""
    frame = pd.DataFrame(results)
    rows = []
    for name, group in frame.groupby("name", sort=False):
        rows.append({"config": name, "seeds": len(group),
                     "test_accuracy": _mean_std(group["test_accuracy"].tolist()),
                     "test_auc": _mean_std(group["test_auc"].tolist()),
                     "train_time_s": _mean_std(group["train_time_s"].tolist(), digits=1),
                     "test_accuracy_mean": group["test_accuracy"].mean(),
                     "test_auc_mean": group["test_auc"].mean(),
                     "train_time_s_mean": group["train_time_s"].mean()})
    order = {n: i for i, n in enumerate(dict.fromkeys([r["config"] for r in rows if r["config"] != "baseline"]))}
    rows.sort(key=lambda r: order.get(r["config"], len(order)))
    return pd.DataFrame(rows)


def comparison_markdown(table: pd.DataFrame, experiment: Path, train_on: str, seeds: int) -> str:
    """comparison.md: per configuration, test accuracy, AUC and training time (mean ± std over seeds)."""
    title = "tuned vs seed recipe" if (table["config"] == "baseline").any() else "tuned"
    lines = [f"# Retrain of {experiment.name}: {title}", "",
             f"Each configuration trained from scratch on `{train_on}` with every epoch of its config's budget "
             f"(phase 1 + phase 2, no early stopping), {seeds} seed(s); "
             "test metrics of the " + ("last epoch's weights" if train_on == "train+validation" else
                                         "best-val-accuracy weights") + " on the untouched test split.", "",
             "| config | seeds | test accuracy | test AUC | training time (s) |", "|---|---|---|---|---|"]
    for row in table.to_dict("records"):
        label = "seed recipe (configs/baseline.yaml)" if row["config"] == "baseline" else f"tuned: {row['config']}"
        lines.append(f"| {label} | {row['seeds']} | {row['test_accuracy']} | {row['test_auc']} | {row['train_time_s']} |")
    return "\n".join(lines) + "\n"


def retrain_folder_name(top: int, seeds: int, train_on: str, compare_baseline: bool,
                        overrides: list[str] | None) -> str:
    """The default output folder of one retrain's settings, so that retrains with other settings
    never share (and replace) one folder: `train-top1-seeds3-baseline`, plus `-set-<hash>` of the
    sorted `--set` overrides when there are any."""
    import hashlib

    name = f"{train_on.replace('+', '-')}-top{top}-seeds{seeds}" + ("-baseline" if compare_baseline else "")
    if overrides:
        name += "-set-" + hashlib.sha256("\n".join(sorted(overrides)).encode()).hexdigest()[:8]
    return name


def retrain(experiment: str | Path, top: int = 1, seeds: int = 1, train_on: str = "train", out: str | Path | None = None,
            compare_baseline: bool = False, address: str | None = None, baseline_path: str | Path = BASELINE,
            overrides: list[str] | None = None, echo=print, overwrite: bool = False,
            command: str | None = None) -> tuple[Path, pd.DataFrame]:
    """Retrain the top-K configurations (and the baseline) S times; write files, the comparison and
    the model cards (`tune.model_card`).

    Args:
        experiment: the search's experiment folder.
        top, seeds: K and S.
        train_on: `train`, or `train+validation` (the last epoch's weights are kept).
        out: output folder [default: `<experiment>/retrain/<retrain_folder_name(...)>`].
        compare_baseline: also train the seed recipe (`baseline_path`) on the same data and budget.
        address: Ray address for parallel runs, or None for this process.
        overrides: `key=value` trainer overrides for every retrained config.
        overwrite: train every run again even where `out` holds it complete.
        command: this retrain's command line, for the model cards [default: this process's].

    Returns:
        (output folder, the comparison table).

    Raises:
        GicError: a bad `train_on`, no scored trial, or `out` holds runs of other settings.
    """
    if train_on not in ("train", "train+validation"):
        raise GicError(f"--train-on {train_on}: expected train or train+validation")
    folder = require_experiment(experiment).resolve()
    configs = tuned_configs(folder, top, overrides)
    baseline = baseline_config(configs[0][1], baseline_path) if compare_baseline else None
    runs = plan_runs(configs, seeds, train_on, baseline)
    if out is None:
        out = folder / RETRAIN_DIR / retrain_folder_name(top, seeds, train_on, compare_baseline, overrides)
    out = Path(out)
    from gic.files import atomic_path, atomic_write_text, check_writable

    check_writable(out)
    resources = (search_config(folder).get("search") or {}).get("resources_per_trial") or {}
    echo(f"retraining {len(configs)} configuration(s){' + the seed recipe' if baseline else ''} x {seeds} seed(s) "
         f"= {len(runs)} runs, {configs[0][1].total_epochs} epochs each, on {train_on}; writing {out}")
    from gic.data import load_dataset

    from tune.model_card import data_summary, write_model_cards

    first = TrainConfig.model_validate(runs[0].config)
    data = load_dataset(first.data)  # once, here: the runs and the model cards' data section
    results = run_all(runs, out, address, resources, echo, overwrite=overwrite, data=data)
    with atomic_path(out / "summary.csv") as tmp:
        pd.DataFrame(results).drop(columns=["selected", "confusion_matrix"], errors="ignore").to_csv(tmp, index=False)
    table = comparison(results)
    with atomic_path(out / "comparison.csv") as tmp:
        table.to_csv(tmp, index=False)
    atomic_write_text(out / "comparison.md", comparison_markdown(table, folder, train_on, seeds))
    from gic.files import command_line

    write_model_cards(out, results, data_summary(data, first), folder, baseline_path if baseline else None,
                      command or command_line())
    return out, table
