"""`gic-tune bench`: where one search's slot time went, measured on that search.

    gic-tune bench                                     # configs/demo.yaml, 12 trials, 2 at a time
    gic-tune bench --config configs/search.yaml --num-samples 16 --json bench.json
    gic-tune bench --set search.debug.dry_run=true --num-samples 200   # the machinery alone (load)

It runs one search (a new experiment, `bench-<time>` under the storage path) and prints, from that
one run (so each figure has one run behind it; its count and spread are over the trials, epochs or
gaps of that run):

- wall time, from the bench's start to its end (Ray's start and shutdown included);
- the epochs actually run, per phase (ASHA stops most trials early: the search is measured by the
  epochs it ran, not by how many a full trial would have);
- the sum of the epoch times (each epoch as the trainer timed it: fit + validation) against the
  slot time, wall x slots (slots = `search.max_concurrent`): the share of slot time in epochs;
- where the rest went, slot by slot, in categories that add up to the slot time (`CATEGORIES`);
- the cores (and GPUs) left idle while trials were still to start, and in the tail;
- the fixed overhead per trial, cold (the first trial of its worker process) and warm (a worker
  reused from an earlier trial, `reuse_actors`), with counts, median and range.

With `--single`, one full trial of the best configuration then runs alone in a fresh process (with
a timeout), and its epoch times are set against the search's: how much slower epochs ran side by
side than alone.

Clocks. The driver's callback (`TrialClock`) records when each trial appeared (the start of the
driver step whose searcher call made it), started (its actor started or was reused), delivered each
result and ended. Each result carries the worker's own wall clock at the end of the epoch, when it
entered the trial function, and how long the previous epoch's checkpoint and report took
(tune.trainable). Within a trial the segments telescope, so they add up to the trial's span exactly;
the split between the driver's and the worker's clock (trial start, trial end) assumes the two
clocks agree, which on one machine they do. A worker clock ahead of the driver's shows as a
negative trial start, and the report says so.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from gic.errors import GicError
from gic.files import atomic_write_json
from ray.tune import Callback

from tune.config import SearchSpec, cpu_threads

SINGLE_TIMEOUT_S = 1800.0  # the `--single` run: one full trial alone
# What a result carries that the bench reads (the rest of the result stays in Ray's files).
KEPT = ("epoch", "phase", "epoch_time_s", "worker_pid", "pid", "worker_uss_mb", "worker_rss_mb", "data_shared",
        "data_mb", "epoch_end_at", "trial_entered_at", "trial_prepared_at", "checkpoint_s", "report_s")

# Where the slot time goes: (key, label). Every second of wall x slots falls in exactly one.
CATEGORIES = (
    ("epochs", "epochs (fit + validation, as the trainer timed them)"),
    ("driver_start", "driver start: Ray, data, features, Tuner"),
    ("launch", "trial launch: actor started or reused"),
    ("start", "trial start in the worker, to epoch 1"),
    ("checkpoint", "between epochs: checkpoint written"),
    ("report", "between epochs: report, until the driver resumes it"),
    ("phase2_start", "between epochs: phase-2 start"),
    ("between_other", "between epochs: other"),
    ("end", "trial end: last checkpoint, report and stop"),
    ("idle_pending", "idle slot while trials were left to start"),
    ("idle_tail", "idle slot in the tail (fewer trials than slots)"),
    ("driver_end", "driver end: tables, Ray shutdown"),
)
FIXED_PARTS = ("launch", "start", "phase2_start", "end")  # a trial's fixed overhead: what does not scale with epochs
# Parts of `start` (worker clock), shown under it.
START_PARTS = (
    ("start_dispatch", "Ray: train call, thread, shipped objects"),
    ("start_prepare", "TensorFlow set-up, Keras reset"),
    ("start_build", "config, model build, compile"),
)


# ------------------------------------------------------------------------------------ the clock
@dataclass
class TrialTimes:
    """One trial as the driver saw it, in seconds of the driver's wall clock (time.time())."""
    created: float  # start of the driver step in which the trial first appeared (searcher asked for it)
    start: float | None = None  # its actor started or was reused (the first start; `restarts` counts the others)
    end: float | None = None  # it completed, was stopped, or errored for good
    results: list[tuple[float, dict[str, Any]]] = field(default_factory=list)  # (arrival, kept keys)
    restarts: int = 0


class TrialClock(Callback):
    """Driver-side timestamps of each trial (TrialTimes), and when the Tuner's loop began."""

    def __init__(self) -> None:
        self.trials: dict[str, TrialTimes] = {}
        self.loop_started: float | None = None  # the Tuner's controller set up its callbacks
        self._step_began: float | None = None
        self._seen = 0

    def _see(self, trials) -> None:
        now = time.time()
        for trial in trials[self._seen:]:
            self.trials.setdefault(trial.trial_id, TrialTimes(created=self._step_began or now))
        self._seen = max(self._seen, len(trials))

    def setup(self, **info):
        self.loop_started = self._step_began = time.time()

    def on_step_begin(self, iteration, trials, **info):
        self._see(trials)
        self._step_began = time.time()

    def on_step_end(self, iteration, trials, **info):
        self._see(trials)

    def on_trial_start(self, iteration, trials, trial, **info):
        self._see(trials)
        times = self.trials.setdefault(trial.trial_id, TrialTimes(created=time.time()))
        if times.start is None:
            times.start = time.time()
        else:
            times.restarts += 1

    def on_trial_result(self, iteration, trials, trial, result, **info):
        times = self.trials.setdefault(trial.trial_id, TrialTimes(created=time.time()))
        times.results.append((time.time(), {k: result.get(k) for k in KEPT}))

    def on_trial_complete(self, iteration, trials, trial, **info):
        if trial.trial_id in self.trials:
            self.trials[trial.trial_id].end = time.time()

    on_trial_error = on_trial_complete


# ---------------------------------------------------------------------------------- accounting
def stats(values: list[float]) -> dict[str, Any]:
    """Count, sum, median, min and max of `values` (seconds); None where there are no values."""
    if not values:
        return {"n": 0, "sum": 0.0, "median": None, "min": None, "max": None}
    return {"n": len(values), "sum": float(sum(values)), "median": float(statistics.median(values)),
            "min": float(min(values)), "max": float(max(values))}


def _num(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if out == out else None


def trial_segments(times: TrialTimes, ended: float) -> dict[str, list[float]]:
    """One trial's span, creation to end, cut into `CATEGORIES`' trial segments (seconds; a list
    per segment: one value per occurrence, e.g. one per epoch).

    launch: created -> actor started; start: actor started -> epoch 1 began (worker clock: the end
    of epoch 1 less its epoch time), in START_PARTS; per epoch its epoch_time_s; between two epochs
    the worker's gap, split into the previous epoch's checkpoint write and report (as the worker
    timed them) and the rest (`phase2_start` at the phase boundary, else `between_other`); end:
    the last epoch's end -> the trial ended. The segments add up to `end - created` exactly.
    A trial with no result is launch + start. `ended` stands in for a trial that never ended.
    """
    out: dict[str, list[float]] = {k: [] for k, _ in (*CATEGORIES, *START_PARTS)}
    end = times.end if times.end is not None else ended
    start = times.start if times.start is not None else end
    out["launch"].append(start - times.created)
    if not times.results:
        out["start"].append(end - start)
        return out
    results = [(at, r) for at, r in times.results]
    # the worker's clock at each epoch's end; a result without it (an older trainable) uses its arrival
    ends = [_num(r.get("epoch_end_at")) or at for at, r in results]
    took = [_num(r.get("epoch_time_s")) or 0.0 for _, r in results]
    first_began = ends[0] - took[0]
    out["start"].append(first_began - start)
    first = results[0][1]
    entered, prepared = _num(first.get("trial_entered_at")), _num(first.get("trial_prepared_at"))
    if entered is not None and prepared is not None:
        out["start_dispatch"].append(entered - start)
        out["start_prepare"].append(prepared - entered)
        out["start_build"].append(first_began - prepared)
    out["epochs"].extend(took)
    for i in range(1, len(results)):
        gap = (ends[i] - took[i]) - ends[i - 1]
        r = results[i][1]
        checkpoint, report = _num(r.get("checkpoint_s")) or 0.0, _num(r.get("report_s")) or 0.0
        if r.get("checkpoint_s") is not None:
            out["checkpoint"].append(checkpoint)
            out["report"].append(report)
        else:
            checkpoint = report = 0.0
        boundary = int(r.get("phase") or 1) == 2 and int(results[i - 1][1].get("phase") or 1) == 1
        out["phase2_start" if boundary else "between_other"].append(gap - checkpoint - report)
    out["end"].append(end - ends[-1])
    return out


def idle_slots(spans: list[tuple[float, float]], t0: float, t1: float, slots: int) -> dict[str, list[float]]:
    """Slot-seconds with no trial in them, from the trials' (created, ended) spans within [t0, t1].

    Before the first trial: `driver_start`; after the last one ended: `driver_end`; in between,
    at each moment the idle slots are `idle_pending` up to the number of trials not created yet
    and `idle_tail` beyond it (fewer trials left than slots). `overlap` holds slot-seconds when more
    trials than slots were live at once (none expected: the searcher's concurrency limit). One value
    per unbroken stretch of a kind.
    """
    out: dict[str, list[float]] = {"driver_start": [], "driver_end": [], "idle_pending": [], "idle_tail": [],
                                   "overlap": []}
    if not spans:
        out["driver_start"].append((t1 - t0) * slots)
        return out
    first, last = min(c for c, _ in spans), max(e for _, e in spans)
    out["driver_start"].append((first - t0) * slots)
    out["driver_end"].append((t1 - last) * slots)
    events = sorted({*(c for c, _ in spans), *(e for _, e in spans)})
    total = len(spans)
    going: set[str] = set()  # the kinds whose stretch the previous interval continued
    for u, v in zip(events, events[1:]):
        live = sum(c <= u < e for c, e in spans)
        idle = max(0, slots - live)
        pending = min(idle, total - sum(c <= u for c, _ in spans))
        now = {"idle_pending": pending, "idle_tail": idle - pending, "overlap": max(0, live - slots)}
        for kind, count in now.items():
            if not count:
                continue
            if kind in going:
                out[kind][-1] += count * (v - u)
            else:
                out[kind].append(count * (v - u))
        going = {kind for kind, count in now.items() if count}
    return out


def figures(clock: TrialClock, t0: float, t1: float, slots: int, cpu: float = 1.0, gpu: float = 0.0,
            statuses: dict[str, str] | None = None, first_line_at: float | None = None) -> dict[str, Any]:
    """The bench's figures from one search's TrialClock.

    Args:
        clock: the search's TrialClock.
        t0, t1: the bench's start and end (driver wall clock, seconds): wall = t1 - t0.
        slots: trials at a time (`search.max_concurrent`).
        cpu, gpu: what each trial holds: idle slot-seconds times these are idle core- and GPU-seconds.
        statuses: trial id -> its row's status (finished, stopped, errored), for the counts.
        first_line_at: when the search printed its first progress line (after Ray's start and the
            checks, before the weights, data and features), to split the driver's start.

    Returns:
        A dict of plain numbers, lists and dicts (strict JSON once NaN is None; `format_figures`
        prints it): every duration in seconds, every share a fraction of wall x slots.
    """
    wall = t1 - t0
    slot_s = wall * slots
    ids = {id(t): trial_id for trial_id, t in clock.trials.items()}
    trials = sorted(clock.trials.values(), key=lambda t: (t.start or t.created, t.created))
    parts: dict[str, list[float]] = {k: [] for k, _ in (*CATEGORIES, *START_PARTS)}
    fixed: dict[str, list[float]] = {"cold": [], "warm": []}
    first_epoch_excess: list[float] = []
    epochs_by_phase: dict[int, list[float]] = {1: [], 2: []}
    per_trial_epochs: list[int] = []
    per_trial: list[dict[str, Any]] = []
    seen_pids: set[Any] = set()
    for times in trials:
        seg = trial_segments(times, t1)
        for key, values in seg.items():
            parts[key].extend(values)
        if not times.results:
            continue
        per_trial_epochs.append(len(times.results))
        by_phase: dict[int, list[float]] = {}
        for _, r in times.results:
            phase = 2 if int(r.get("phase") or 1) == 2 else 1
            took = _num(r.get("epoch_time_s")) or 0.0
            epochs_by_phase[phase].append(took)
            by_phase.setdefault(phase, []).append(took)
        for values in by_phase.values():
            if len(values) >= 2:
                first_epoch_excess.append(values[0] - statistics.median(values[1:]))
        pid = times.results[0][1].get("worker_pid") or times.results[0][1].get("pid")
        kind = "warm" if pid is not None and pid in seen_pids else "cold"
        seen_pids.add(pid)
        fixed[kind].append(sum(sum(seg[k]) for k in FIXED_PARTS))
        per_trial.append({"trial_id": ids[id(times)], "kind": kind, "n_epochs": len(times.results),
                          "phase2": bool(seg["phase2_start"]), **{k: sum(v) for k, v in seg.items()}})
    spans = [(t.created, t.end if t.end is not None else t1) for t in trials]
    idle = idle_slots(spans, t0, t1, slots)
    for key in ("driver_start", "driver_end", "idle_pending", "idle_tail"):
        parts[key] = idle[key]
    breakdown = {}
    for key, _ in (*CATEGORIES, *START_PARTS):
        s = stats(parts[key])
        s["share"] = s["sum"] / slot_s if slot_s else None
        breakdown[key] = s
    overlap = sum(idle["overlap"])
    accounted = sum(breakdown[k]["sum"] for k, _ in CATEGORIES)
    epoch_s = breakdown["epochs"]["sum"]
    n_results = sum(len(t.results) for t in trials)
    last = [t.results[-1][1] for t in trials if t.results]
    uss = [v for v in (_num(r.get("worker_uss_mb")) for r in last) if v is not None]
    rss = [v for v in (_num(r.get("worker_rss_mb")) for r in last) if v is not None]
    cold, warm = stats(fixed["cold"]), stats(fixed["warm"])
    driver_start = breakdown["driver_start"]["sum"] / slots if slots else 0.0
    loop = (clock.loop_started - t0) if clock.loop_started is not None else None
    ray_start = (first_line_at - t0) if first_line_at is not None and loop is not None and first_line_at <= t0 + loop \
        else None
    counts: dict[str, int] = {}
    for status in (statuses or {}).values():
        counts[status] = counts.get(status, 0) + 1
    return {
        "trials": len([t for t in trials if t.results]), "trials_created": len(trials), "slots": slots,
        "cpu_per_trial": cpu, "gpu_per_trial": gpu, "statuses": counts,
        "wall_s": wall, "slot_s": slot_s, "results": n_results,
        "epochs": {"total": len(epochs_by_phase[1]) + len(epochs_by_phase[2]), "phase1": len(epochs_by_phase[1]),
                   "phase2": len(epochs_by_phase[2])},
        "epochs_per_trial": stats([float(n) for n in per_trial_epochs]),
        "epoch_s": {"total": epoch_s, "phase1": stats(epochs_by_phase[1]), "phase2": stats(epochs_by_phase[2])},
        "epoch_share": epoch_s / slot_s if slot_s else None,
        "first_epoch_excess": stats(first_epoch_excess),
        "breakdown": breakdown, "accounted_s": accounted, "overlap_s": overlap,
        "driver_start_parts": {"ray_start_s": ray_start,
                               "resolve_s": (loop - ray_start) if ray_start is not None else None,
                               "before_tuner_s": loop,
                               "tuner_to_first_trial_s": (driver_start - loop) if loop is not None else None},
        # cores (GPUs) a slot holds with no epoch while trials wait: no trial in it yet, or one launching
        # (Ray's PENDING: its actor starting or being reset); and in the tail
        **{f"idle_{unit}_s": {"pending": (breakdown["idle_pending"]["sum"] + breakdown["launch"]["sum"]) * per,
                              "pending_no_trial": breakdown["idle_pending"]["sum"] * per,
                              "pending_launching": breakdown["launch"]["sum"] * per,
                              "tail": breakdown["idle_tail"]["sum"] * per}
           for unit, per in (("core", cpu), ("gpu", gpu))},
        "fixed": {"cold": cold, "warm": warm},
        # the median of each part of the fixed overhead, over the cold and over the warm trials
        "fixed_parts": {kind: {k: stats([t[k] for t in per_trial if t["kind"] == kind
                                         and (k != "phase2_start" or t["phase2"])])["median"]
                               for k in (*FIXED_PARTS, *(p for p, _ in START_PARTS))} for kind in ("cold", "warm")},
        "per_trial": per_trial,  # each trial: kind, n_epochs, and its segments in seconds (epochs: their sum)
        "n_cold": cold["n"], "n_warm": warm["n"],
        "warm_over_cold": (warm["median"] / cold["median"]) if cold["median"] and warm["median"] is not None else None,
        "results_per_s": n_results / wall if wall else None,
        "worker_uss_mb": statistics.fmean(uss) if uss else None,
        "worker_rss_mb": statistics.fmean(rss) if rss else None,
        "data_mb": max((_num(r.get("data_mb")) or 0.0 for r in last), default=0.0),
        "data_shared_trials": sum(bool(r.get("data_shared")) for r in last),
        "single_trial_s": None,
    }


# ------------------------------------------------------------------------------------ printing
def _spread(s: dict[str, Any], unit: str = " s", digits: int = 2) -> str:
    """`median M (min - max), n = N` of a stats dict; `none` when it has no values."""
    if not s["n"]:
        return "none"
    if s["n"] == 1:
        return f"{s['median']:.{digits}f}{unit}, n = 1"
    return f"median {s['median']:.{digits}f}{unit} ({s['min']:.{digits}f} - {s['max']:.{digits}f}), n = {s['n']}"


def format_figures(f: dict[str, Any]) -> str:
    """The figures of `figures` as text: the headline, where the slot time went (a table whose
    shares add up to 100 %), idle cores, fixed overhead per trial, memory."""
    e, es = f["epochs"], f["epoch_s"]
    statuses = ", ".join(f"{n} {k}" for k, n in sorted(f.get("statuses", {}).items()))
    share = f["epoch_share"]
    lines = [
        f"one search: {f['trials']} trials, {f['slots']} at a time ({f['cpu_per_trial']:g} CPU + "
        f"{f['gpu_per_trial']:g} GPU each); every figure below is from this one run",
        f"  wall time                         {f['wall_s']:8.1f} s   (bench start to end, Ray's start and shutdown included)",
        f"  trials                            {f['trials']:8d}     ({statuses or 'no table'})",
        f"  epochs run                        {e['total']:8d}     (phase 1: {e['phase1']}, phase 2: {e['phase2']}; "
        f"per trial {_spread(f['epochs_per_trial'], '', 0)})",
        f"  sum of epoch times                {es['total']:8.1f} s   (phase 1: {_spread(es['phase1'])}; "
        f"phase 2: {_spread(es['phase2'])})",
        f"  slot time, wall x {f['slots']} slots          {f['slot_s']:8.1f} s",
        f"  share of slot time in epochs      {100 * share if share is not None else float('nan'):8.1f} %   (goal >= 85 %)",
        f"  results/s                         {f['results_per_s'] or 0:8.2f}",
        "  where the slot time went                                    slot-s   share   count  per occurrence",
    ]
    b = f["breakdown"]
    for key, label in CATEGORIES:
        s = b[key]
        lines.append(f"    {label:<56}{s['sum']:8.1f} {100 * (s['share'] or 0):6.1f} % {s['n']:6d}  {_spread(s)}")
        if key == "epochs" and f["first_epoch_excess"]["n"]:
            x = f["first_epoch_excess"]
            lines.append(f"      of which a phase's first epoch over its later ones' median (tracing): "
                         f"{x['sum']:.1f} s, {_spread(x)}")
        if key == "start":
            for part, part_label in START_PARTS:
                if b[part]["n"]:
                    lines.append(f"      {part_label:<54}{b[part]['sum']:8.1f} {100 * (b[part]['share'] or 0):6.1f} %"
                                 f" {b[part]['n']:6d}  {_spread(b[part])}")
            if (b["start"]["min"] or 0) < 0:
                lines.append("      (a negative trial start: the worker's clock is ahead of the driver's by about that "
                             "much; start and end shift by it, their sum does not)")
        if key == "driver_start" and f["driver_start_parts"]["before_tuner_s"] is not None:
            d = f["driver_start_parts"]
            head = (f"Ray's start and checks {d['ray_start_s']:.1f} s; weights, data, features {d['resolve_s']:.1f} s"
                    if d["ray_start_s"] is not None else f"Ray, checks, weights, data, features {d['before_tuner_s']:.1f} s")
            lines.append(f"      {head}; Tuner to the first trial {d['tuner_to_first_trial_s']:.1f} s (each x {f['slots']} slots)")
            shown = [f"{at:.1f} s {text[:44] + ('...' if len(text) > 44 else '')}" for at, text in f.get("driver_lines", [])
                     if not text.startswith(" ")]
            if shown:
                lines.append("      progress lines at: " + "; ".join(shown))
    total = f["accounted_s"]
    lines.append(f"    {'total':<56}{total:8.1f} {100 * total / f['slot_s'] if f['slot_s'] else 0:6.1f} %")
    if f["overlap_s"] > 0:
        lines.append(f"    (more trials than slots at once for {f['overlap_s']:.1f} slot-s: the total exceeds wall x slots)")
    for unit, what in (("core", "cores"), ("gpu", "GPUs")):
        if unit == "gpu" and not f["gpu_per_trial"]:
            continue
        i = f[f"idle_{unit}_s"]
        lines.append(f"  {what} idle while a trial was pending  {i['pending']:8.1f} {unit}-s (goal 0): "
                     f"{i['pending_no_trial']:.1f} with no trial in the slot ({b['idle_pending']['n']} stretches), "
                     f"{i['pending_launching']:.1f} while one launched ({b['launch']['n']} launches); "
                     f"in the tail {i['tail']:.1f} {unit}-s")
    fx = f["fixed"]
    lines.append("  fixed overhead per trial (launch + start + phase-2 start + end)")
    for kind, label in (("cold", "cold (first trial of its worker)"), ("warm", "warm (a reused worker)")):
        lines.append(f"    {label:<36}{_spread(fx[kind])}")
        m = f["fixed_parts"][kind]
        if fx[kind]["n"] and m["start"] is not None:
            def part(key: str) -> str:
                return "-" if m[key] is None else f"{m[key]:.2f}"
            lines.append(f"      medians: launch {part('launch')}, start {part('start')} (TensorFlow set-up and "
                         f"Keras reset {part('start_prepare')}, build and compile {part('start_build')}), phase-2 start "
                         f"{part('phase2_start')}, end {part('end')} s")
    ratio = f["warm_over_cold"]
    caveat = f"from {fx['cold']['n']} cold and {fx['warm']['n']} warm trials"
    if fx["cold"]["n"] < 3:
        caveat += ": too few cold trials to judge the goal"
    lines.append(f"    warm / cold (medians)               {'n/a' if ratio is None else f'{ratio:.2f}'}   "
                 f"(goal <= 0.33; {caveat})")
    if f.get("single_trial_s") is not None:
        lines.append(single_line(f))
    if f.get("worker_uss_mb") is not None:
        lines.append(f"  memory per extra trial (worker USS)  {f['worker_uss_mb']:6.0f} MB   (RSS {f['worker_rss_mb']:.0f} MB,"
                     f" mean of {f['trials']} trials; dataset {f['data_mb']:.1f} MB, one shared copy in the object "
                     f"store in {f['data_shared_trials']}/{f['trials']} trials)")
    return "\n".join(lines)


def single_line(f: dict[str, Any]) -> str:
    """The `--single` comparison: one full trial alone against the same phase's epochs in the search."""
    alone = f["single"]
    text = f"  one full trial alone (fresh process, best configuration): {f['single_trial_s']:.1f} s"
    for phase in ("phase1", "phase2"):
        a, s = alone.get(phase), f["epoch_s"][phase]
        if a and a["n"] and s["n"] and a["median"]:
            text += (f"; {phase.replace('phase', 'phase ')} epoch median {a['median']:.2f} s alone vs "
                     f"{s['median']:.2f} s in the search ({s['median'] / a['median']:.2f}x)")
    return text


# ------------------------------------------------------------------------------ one trial alone
def time_single_trial(config_file: Path, threads: int, timeout_s: float = SINGLE_TIMEOUT_S) -> dict[str, Any]:
    """One full trial (no early stop) of `config_file` in a fresh process, at `threads` threads.

    Returns:
        {"wall_s": seconds from the process's first line to the end of training (TF import, data
        from the decode cache, model build, both phases; the interpreter's start not counted),
        "phase1"/"phase2": stats of the epoch times (seconds)}.

    Raises:
        GicError: the run failed, or took longer than `timeout_s` seconds (it is killed).
    """
    code = ("import json, sys, time; t0 = time.perf_counter()\n"
            "from tune.bench import _single\n"
            "epochs = _single(sys.argv[1], int(sys.argv[2]))\n"
            "print('GIC_SINGLE', json.dumps({'wall_s': time.perf_counter() - t0, 'epochs': epochs}))")
    try:
        out = subprocess.run([sys.executable, "-c", code, str(config_file), str(threads)], capture_output=True,
                             text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise GicError(f"the single-trial run took longer than {timeout_s:g} s and was stopped") from None
    marked = [line for line in out.stdout.splitlines() if line.startswith("GIC_SINGLE ")]
    if out.returncode != 0 or not marked:
        tail = (out.stderr or out.stdout).strip().splitlines()[-1:] or ["no output"]
        raise GicError(f"the single-trial run failed (exit {out.returncode}): {tail[0]}")
    got = json.loads(marked[-1].split(" ", 1)[1])
    return {"wall_s": float(got["wall_s"]),
            **{f"phase{p}": stats([float(t) for ph, t in got["epochs"] if ph == p]) for p in (1, 2)}}


def _single(config_file: str, threads: int) -> list[tuple[int, float]]:
    from gic.config import load_config
    from gic.data import load_dataset
    from gic.runtime import configure_tensorflow
    from gic.train import train_two_phase

    configure_tensorflow(threads=threads)
    cfg = load_config(config_file)
    result = train_two_phase(cfg, load_dataset(cfg.data), evaluate_test=False)
    return [(int(h["phase"]), float(h["epoch_time_s"])) for h in result.history]


# ---------------------------------------------------------------------------------------- run
def bench_search(spec: SearchSpec, *, name: str | None = None, single: bool = False,
                 echo: Callable[[str], None] = print, num_cpus: int | None = None,
                 single_timeout_s: float = SINGLE_TIMEOUT_S) -> tuple[Any, dict[str, Any]]:
    """Run the search with a TrialClock and account for its slot time (`figures`); with `single`
    (real trainer only), then one full trial of the best configuration alone (`time_single_trial`).

    Returns:
        The search's summary (tune.search.SearchSummary) and the figures (`format_report` prints them).

    Raises:
        GicError: as run_search does, or the single-trial run failed or timed out.
    """
    from tune.search import run_search

    name = name or f"bench-{time.strftime('%Y%m%d-%H%M%S')}"
    clock = TrialClock()
    said: list[tuple[float, str]] = []  # the search's progress lines and when they were printed

    def timed_echo(line: str) -> None:
        said.append((time.time(), line))
        echo(line)

    t0 = time.time()
    summary = run_search(spec, name=name, echo=timed_echo, callbacks=[clock], num_cpus=num_cpus)
    t1 = time.time()
    frame = summary.trials
    statuses = (dict(zip(frame["trial_id"].astype(str), frame["status"].astype(str)))
                if frame is not None and len(frame) and "status" in frame else {})
    r = spec.search.resources_per_trial
    out = figures(clock, t0, t1, spec.search.max_concurrent, r.cpu, r.gpu, statuses, said[0][0] if said else None)
    # the driver's start, step by step: each progress line printed before the Tuner's loop began
    loop = clock.loop_started or t1
    out["driver_lines"] = [[round(at - t0, 2), line] for at, line in said if at <= loop]
    out["experiment_path"] = summary.experiment_path
    best_config = Path(summary.experiment_path, "best_config.yaml")
    if single and not spec.search.debug.dry_run and best_config.is_file():
        echo(f"timing one full trial of the best configuration alone, in a fresh process "
             f"(stopped after {single_timeout_s:g} s) ...")
        alone = time_single_trial(best_config, cpu_threads(r.cpu), single_timeout_s)
        out["single_trial_s"], out["single"] = alone.pop("wall_s"), alone
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
    """The figures as strict JSON at `path` (NaN as null), written atomically."""
    atomic_write_json(path, f)
