"""`gic-tune bench`: how much of a search's wall time goes into training, measured on a real search.

    gic-tune bench                                     # configs/demo.yaml, 12 trials
    gic-tune bench --config configs/search.yaml --num-samples 16
    gic-tune bench --set search.debug.dry_run=true --num-samples 200   # the machinery alone (load)

It runs a K-trial ASHA search (a new experiment, `bench-<time>` under the storage path) and then,
unless `--no-single`, one full trial of the best configuration alone in a fresh process, at one
trial's resources. It prints, from one run:

- wall time of the search, and the sum of the trial times (start to end of each trial);
- K x the time of one full trial run alone: what the same K trials cost one after another, each in
  a fresh process, with no early stopping (the disk caches the search wrote, decoded images and
  phase-1 features, are warm for it, which flatters the single trial, not the search);
- per-trial fixed overhead, cold and warm: from the driver starting the trial to its first result,
  less one steady epoch (the median of its later phase-1 epochs). A trial is cold when it is the
  first on its worker process (process start, TF import, model build, first traced step, the
  phase-1 feature pass), warm when the process ran a trial before (`reuse_actors`);
- results/s, and the share of the trial slots' time (wall x max_concurrent) spent in epochs.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from gic.files import atomic_write_json
from ray.tune import Callback

from tune.config import SearchSpec, cpu_threads


@dataclass
class TrialTimes:
    """One trial as the driver saw it: when it started and each result with its arrival time (seconds)."""
    start: float  # driver clock when the trial was started (first start; retries keep it)
    results: list[tuple[float, dict[str, Any]]] = field(default_factory=list)  # (driver clock, result)
    end: float | None = None


class TrialClock(Callback):
    """Driver-side timestamps of each trial's start, results and end."""

    def __init__(self) -> None:
        self.trials: dict[str, TrialTimes] = {}

    def on_trial_start(self, iteration, trials, trial, **info):
        self.trials.setdefault(trial.trial_id, TrialTimes(start=time.time()))

    def on_trial_result(self, iteration, trials, trial, result, **info):
        keep = {k: result.get(k) for k in ("epoch", "phase", "epoch_time_s", "worker_pid", "pid", "worker_uss_mb",
                                           "worker_rss_mb", "data_shared", "data_mb")}
        self.trials.setdefault(trial.trial_id, TrialTimes(start=time.time())).results.append((time.time(), keep))

    def on_trial_complete(self, iteration, trials, trial, **info):
        if trial.trial_id in self.trials:
            self.trials[trial.trial_id].end = time.time()

    on_trial_error = on_trial_complete


def fixed_overheads(clock: TrialClock) -> dict[str, list[float]]:
    """Per-trial fixed cost (first result - start - one steady epoch), split cold / warm by worker."""
    seen_pids: set[Any] = set()
    out: dict[str, list[float]] = {"cold": [], "warm": []}
    for times in sorted(clock.trials.values(), key=lambda t: t.start):
        if not times.results:
            continue
        first_at, first = times.results[0]
        later = [r["epoch_time_s"] for _, r in times.results[1:]
                 if r.get("phase") == first.get("phase") and r.get("epoch_time_s") is not None]
        steady = statistics.median(later) if later else float(first.get("epoch_time_s") or 0.0)
        pid = first.get("worker_pid") or first.get("pid")
        kind = "warm" if pid in seen_pids else "cold"
        seen_pids.add(pid)
        out[kind].append(max(0.0, first_at - times.start - steady))
    return out


def figures(clock: TrialClock, wall_s: float, slots: int, single_s: float | None) -> dict[str, Any]:
    """The printed figures of one bench run, from the clock and the single-trial time."""
    trials = [t for t in clock.trials.values() if t.results]
    k = len(trials)
    results = sum(len(t.results) for t in trials)
    epoch_s = sum(float(r.get("epoch_time_s") or 0.0) for t in trials for _, r in t.results)
    trial_s = sum((t.end or t.results[-1][0]) - t.start for t in trials)
    over = fixed_overheads(clock)
    mean = lambda xs: statistics.fmean(xs) if xs else float("nan")  # noqa: E731
    cold, warm = mean(over["cold"]), mean(over["warm"])
    last = [t.results[-1][1] for t in trials]
    uss = [float(r["worker_uss_mb"]) for r in last if r.get("worker_uss_mb") is not None]
    rss = [float(r["worker_rss_mb"]) for r in last if r.get("worker_rss_mb") is not None]
    memory = {"worker_uss_mb": mean(uss), "worker_rss_mb": mean(rss),
              "data_mb": max((float(r.get("data_mb") or 0) for r in last), default=0.0),
              "data_shared_trials": sum(bool(r.get("data_shared")) for r in last)}
    return {"trials": k, "results": results, "wall_s": wall_s, "sum_trial_s": trial_s, **memory,
            "single_trial_s": single_s, "k_x_single_s": k * single_s if single_s else None,
            "fixed_cold_s": cold, "fixed_warm_s": warm, "n_cold": len(over["cold"]), "n_warm": len(over["warm"]),
            "warm_over_cold": warm / cold if cold > 0 else float("nan"),  # NaN (no trials of a kind) stays NaN
            "results_per_s": results / wall_s if wall_s else float("nan"),
            "epoch_share": epoch_s / (wall_s * slots) if wall_s else float("nan"), "slots": slots}


def format_figures(f: dict[str, Any]) -> str:
    """The search figures of `bench_search` as aligned text lines (seconds, shares, memory)."""
    def s(x: float | None) -> str:
        return f"{'n/a':>10}" if x is None or x != x else f"{x:8.1f} s"

    lines = [
        f"search of {f['trials']} trials, {f['slots']} at a time, {f['results']} results",
        f"  wall time                           {s(f['wall_s'])}",
        f"  sum of trial times                  {s(f['sum_trial_s'])}",
        f"  K x one full trial alone            {s(f['k_x_single_s'])}"
        + (f"   ({f['trials']} x {f['single_trial_s']:.1f} s)" if f["single_trial_s"] else ""),
    ]
    if f["k_x_single_s"]:
        lines.append(f"  search speed-up over K alone        {f['k_x_single_s'] / f['wall_s']:8.2f} x")
    ratio = f["warm_over_cold"]
    lines += [
        f"  fixed overhead per trial, cold      {s(f['fixed_cold_s'])}   ({f['n_cold']} trial{'s' if f['n_cold'] != 1 else ''})",
        f"  fixed overhead per trial, warm      {s(f['fixed_warm_s'])}   ({f['n_warm']} trial{'s' if f['n_warm'] != 1 else ''})",
        f"  warm / cold                         {'n/a' if ratio != ratio else f'{ratio:8.2f}'}"
        + "     (goal <= 0.33)",
        f"  results/s                           {f['results_per_s']:8.2f}",
        f"  share of slot time in epochs        {100 * f['epoch_share']:7.1f} %",
    ]
    if f.get("worker_uss_mb") == f.get("worker_uss_mb"):  # not NaN: real trials report their memory
        lines.append(f"  memory per extra trial (worker USS) {f['worker_uss_mb']:8.0f} MB   (RSS {f['worker_rss_mb']:.0f} MB; "
                     f"dataset {f['data_mb']:.1f} MB, one shared copy in the object store in "
                     f"{f['data_shared_trials']}/{f['trials']} trials)")
    return "\n".join(lines)


def time_single_trial(config_file: Path, threads: int) -> float:
    """Wall time of one full trial (no early stop) in a fresh process: TF import, data from the
    decode cache, model build, both phases. The process start itself is not counted."""
    code = ("import json, sys, time; t0 = time.perf_counter()\n"
            "from tune.bench import _single\n"
            "_single(sys.argv[1], int(sys.argv[2]))\n"
            "print('GIC_SINGLE', json.dumps(time.perf_counter() - t0))")
    out = subprocess.run([sys.executable, "-c", code, str(config_file), str(threads)], capture_output=True,
                         text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    marked = [line for line in out.stdout.splitlines() if line.startswith("GIC_SINGLE ")]
    if out.returncode != 0 or not marked:
        tail = (out.stderr or out.stdout).strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"the single-trial run failed: {tail[0]}")
    return float(marked[-1].split(" ", 1)[1])


def _single(config_file: str, threads: int) -> None:
    from gic.config import load_config
    from gic.data import load_dataset
    from gic.runtime import configure_tensorflow
    from gic.train import train_two_phase

    configure_tensorflow(threads=threads)
    cfg = load_config(config_file)
    train_two_phase(cfg, load_dataset(cfg.data), evaluate_test=False)


def bench_search(spec: SearchSpec, *, name: str | None = None, single: bool = True,
                 echo: Callable[[str], None] = print, num_cpus: int | None = None) -> tuple[Any, dict[str, Any]]:
    """Run the search with a TrialClock, then (real trainer only) one full trial alone.

    Returns:
        The search's summary (tune.search.SearchSummary) and the figures (`format_report` prints them).
    """
    from tune.search import run_search

    name = name or f"bench-{time.strftime('%Y%m%d-%H%M%S')}"
    clock = TrialClock()
    summary = run_search(spec, name=name, echo=echo, callbacks=[clock], num_cpus=num_cpus)
    single_s = None
    best_config = Path(summary.experiment_path, "best_config.yaml")
    if single and not spec.search.debug.dry_run and best_config.is_file():
        echo("timing one full trial of the best configuration alone, in a fresh process ...")
        single_s = time_single_trial(best_config, cpu_threads(spec.search.resources_per_trial.cpu))
    out = figures(clock, summary.wall_s, spec.search.max_concurrent, single_s)
    out["experiment_path"] = summary.experiment_path
    if spec.search.debug.dry_run:
        from tune.dryrun import figures as dry_figures

        out["scheduler"] = dry_figures(summary, spec)
    return summary, out


def format_report(f: dict[str, Any]) -> str:
    """format_figures plus the scheduler-overhead lines of a dry-run load test, when present."""
    text = format_figures(f)
    if "scheduler" in f:
        d = f["scheduler"]
        text += (f"\n  dry run (no training): scheduler overhead {d['overhead_per_trial_s']:.3f} s per trial, "
                 f"{100 * d['overhead_fraction']:.1f} % of slot time")
    return text + f"\n  experiment: {f['experiment_path']}"


def save_json(f: dict[str, Any], path: Path) -> None:
    """The figures as strict JSON at `path`, written atomically."""
    atomic_write_json(path, f)
