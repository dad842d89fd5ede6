"""`gic bench train`: each phase of this project's trainer against its ceiling on this machine and
against the seed notebook's pipeline, every figure repeated.

    gic bench train --data /path/to/faces --size 128 --epochs 3 --repeats 3

Phases: 1 without augmentation (the trainer on cached base features; "warm": a second trial in the
same process, features in memory), 1 with augmentation, and 2 (3 conv layers unfrozen, started from
the same repeat's phase-1-with-augmentation weights). Every (pipeline, phase, repeat) is its own
subprocess (`gic.bench_runs`), with a timeout: its own peak memory, its own test accuracy (the best
epoch of that phase, by validation accuracy), its own wall time.

What is timed: the wall time of a phase from its start to the end of its last epoch, validation,
tracing and one-off caches included, model build, data decode and test evaluation excluded.
img/s = epochs x train images / that time.

The ceiling of a phase is measured in the trainer's process right after it: the same model's
compiled steps on batches already on the device (no input pipeline, no Python between steps), at
the trainer's precision, batch size, image size and jit setting. Its time for the phase is
    p1:      (train + validation images) / forward rate  +  epochs x train / head-step rate
    p1_warm: epochs x train / head-step rate                    (features already in memory)
    p1aug:   validation / forward rate  +  epochs x train / frozen-model step rate
    phase2:  validation x (1 - unfrozen share) / forward rate  +  epochs x train / phase-2 step rate
i.e. the trainer's one-off forward passes (the phase-1 features, the cached validation outputs) and
its training steps at the bare rates; per-epoch validation on the cached outputs (under 1% of the
arithmetic), tracing, augmentation and the input pipeline are what the trainer may lose against it.
Goal: the trainer at >= 85% of its ceiling's img/s in every phase (`GOAL`). The same ratio in CPU
seconds of the process (the trainer's phase against the ceiling's rates per CPU second) is printed
beside it: on a machine shared with other work the wall-time ratio moves with their load, the CPU
ratio does not, and it tells extra work (the input pipeline, tracing, validation) from idle time.

Hardware peaks (`cpu_peak`, `gpu_peak`) turn achieved FLOP/s into a fraction of what the chip can do.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from gic.bench_runs import MARKER
from gic.cost import conv_macs, unfrozen_share
from gic.errors import GicError

GOAL = 0.85  # each trainer phase's img/s over its ceiling's
DEFAULT_TIMEOUT_S = 1800.0  # one subprocess (one phase of one pipeline, one repeat)

# ------------------------------------------------------------------------------ FLOP counting
# Multiply-adds of VGG16's convs come from gic.cost.conv_macs; here 1 multiply-add = 2 FLOPs.
HEAD_UNITS = 256


def head_flops(dense_units: int = HEAD_UNITS) -> int:
    """FLOPs of the head's forward for one image: Dense(512 -> dense_units) with its bias (the output
    layer's 2 x dense_units, 0.2% of it at 256 units, is left out)."""
    return 2 * (512 * dense_units + dense_units)


def base_forward_flops(size: int, convs: slice = slice(None)) -> int:
    """FLOPs of VGG16's conv base forward for one size x size image (`convs`: a slice of its 13 convs)."""
    return 2 * sum(conv_macs(size)[convs])


def train_flops_per_image(size: int, unfrozen: int, dense_units: int = HEAD_UNITS) -> float:
    """FLOPs to train on one image: forward of the whole model plus backward (~2x forward) of the head
    and the top `unfrozen` convs."""
    trainable = base_forward_flops(size, slice(13 - unfrozen, None)) if unfrozen else 0
    return base_forward_flops(size) + 2 * trainable + 3 * head_flops(dense_units)


def forward_flops_per_image(size: int, dense_units: int = HEAD_UNITS) -> float:
    """FLOPs of the whole model's forward for one size x size image."""
    return base_forward_flops(size) + head_flops(dense_units)


def phase_flops(phase: str, impl: str, size: int, epochs: int, n_train: int, n_val: int, unfrozen: int = 3,
                dense_units: int = HEAD_UNITS, lower_cached: bool = True) -> float:
    """The arithmetic a pipeline executes in a phase, in FLOPs.

    Args:
        phase: p1 | p1_warm | p1aug | phase2 (`PHASE_LABELS`).
        impl: `seed` (every epoch: train images forward + backward, validation images forward
            through the whole model), `trainer` (the one-off passes of its caches, then train steps
            and validation on cached outputs) or `ceiling` (the trainer's, less per-epoch validation).
        unfrozen: conv layers trained in phase 2; lower_cached: the trainer's phase 2 validated on
            the cached output of the frozen lower convs (else on the whole model every epoch).
    """
    fwd, head = base_forward_flops(size), head_flops(dense_units)
    if impl == "seed":
        step = train_flops_per_image(size, unfrozen if phase == "phase2" else 0, dense_units)
        return epochs * (n_train * step + n_val * (fwd + head))
    per_val = 0 if impl == "ceiling" else head
    if phase in ("p1", "p1_warm"):
        once = (n_train + n_val) * fwd if phase == "p1" else 0
        return once + epochs * (n_train * 3 * head + n_val * per_val)
    if phase == "p1aug":
        return n_val * fwd + epochs * (n_train * (fwd + 3 * head) + n_val * per_val)
    lower, upper = base_forward_flops(size, slice(0, 13 - unfrozen)), base_forward_flops(size, slice(13 - unfrozen, None))
    if lower_cached:
        once, val = n_val * lower, upper + head
    else:
        once, val = 0, fwd + head
    return once + epochs * (n_train * train_flops_per_image(size, unfrozen, dense_units)
                            + (0 if impl == "ceiling" else n_val * val))


# ------------------------------------------------------------------------------ hardware peaks
# Dense bf16/fp16 tensor-core peaks from the vendors' data sheets (FLOP/s, no sparsity): NVIDIA's
# H100/H200, A100, L40S, L4, A10 and A10G product briefs. fp32 on a GPU: no figure (TF32 or not
# depends on TensorFlow's settings).
GPU_BF16_PEAKS = (("H200", 989e12), ("H100 PCIe", 756e12), ("H100", 989e12), ("A100", 312e12),
                  ("L40S", 362e12), ("L4", 121e12), ("A10G", 70e12), ("A10", 125e12))

# Dense FLOPs per cycle per core (1 multiply-add = 2 FLOPs), by what the core has:
#   AMX-BF16      1024  TDPBF16PS: a 16x32 by 32x16 bf16 tile product (8192 multiply-adds) every 16
#                       cycles. Intel's published per-core figure ("1024 BF16 ops/cycle", Intel
#                       Architecture Day 2021; Intel 64 and IA-32 Architectures Optimization
#                       Reference Manual, the Intel AMX chapter).
#   AVX512-BF16    128  VDPBF16PS zmm: 32 bf16 pairs into 16 fp32 sums = 64 FLOPs, 2 per cycle on the two
#                       512-bit FMA ports (Cooper Lake, Sapphire Rapids and later; same manual).
#   AVX-512 FMA     64  2 x 512-bit FMA x 16 fp32 lanes x 2 (Skylake-SP Gold/Platinum and later; the
#                       manual's Skylake Server chapter). Xeons with one 512-bit FMA unit do 32.
#   AVX2 FMA        32  2 x 256-bit FMA x 8 fp32 lanes x 2 (Intel Haswell and later, AMD Zen 2 and
#                       later; the manual's Haswell chapter, AMD's Software Optimization Guides).
# AMD Zen 4 (family 0x19 with AVX-512) runs 512-bit instructions on its 256-bit units, one zmm FMA or
# VDPBF16PS per cycle: 32 fp32 / 64 bf16 (AMD, Software Optimization Guide for AMD Family 19h
# Processors, pub. 56665; A. Yee, "Zen4's AVX512 Teardown", numberworld.org, 2022). Zen 5 (family
# 0x1a) has 512-bit units: 64 / 128 (A. Yee, "Zen5's AVX512 Teardown", 2024; the mobile parts keep
# 256-bit units and do half). Measured on this project's CI machine (Zen 4, KVM, one core, a loop of
# 12 independent VDPBF16PS / VFMADD zmm): 232 bf16 and 116 fp32 GFLOP per CPU-second, i.e. 64 and 32
# FLOPs/cycle at 3.6 GHz, where /proc/cpuinfo reports 2.6 GHz.
CPU_FLOPS_PER_CYCLE = {"amx_bf16": 1024, "avx512_bf16": 128, "avx512f": 64, "avx2": 32}
ZEN4_FLOPS_PER_CYCLE = {"avx512_bf16": 64, "avx512f": 32, "avx2": 32}
CPU_UNIT_NAMES = {"amx_bf16": "AMX-BF16", "avx512_bf16": "AVX512-BF16", "avx512f": "AVX-512 FMA",
                  "avx2": "AVX2 FMA"}


@dataclass(frozen=True)
class Peak:
    """A device's dense peak for one precision: `flops` FLOP/s, and how it was worked out (`how`,
    one line); `clock_ghz` and `clock_from` for a CPU (None on a GPU)."""

    flops: float
    how: str
    clock_ghz: float | None = None
    clock_from: str | None = None


def _cpuinfo_field(text: str, name: str) -> str | None:
    match = re.search(rf"^{re.escape(name)}\s*:\s*(.*)$", text, re.MULTILINE)
    return match.group(1).strip() if match else None


def cpu_flags(cpuinfo: str) -> set[str]:
    """The first `flags` line of a /proc/cpuinfo text, as a set (empty when there is none)."""
    return set((_cpuinfo_field(cpuinfo, "flags") or "").split())


def cpu_peak(cpuinfo: str, precision: str, cores: int, max_khz: int | None = None,
             ghz: float | None = None) -> Peak | None:
    """The dense peak of `cores` CPU cores at `precision`, from a /proc/cpuinfo text.

    The unit: for bf16, AMX-BF16 where the flags have amx_bf16 (or amx_tile), else AVX512-BF16
    (avx512_bf16); for fp32, fp16 (computed in fp32 on CPUs) and bf16 without those, AVX-512 FMA
    (avx512f), else AVX2 FMA (avx2 with fma); the per-cycle figures are `CPU_FLOPS_PER_CYCLE`
    (sources in the comment above it), `ZEN4_FLOPS_PER_CYCLE` on AMD family 0x19.

    The clock: `ghz` when given, else `max_khz` (cpufreq's cpuinfo_max_freq, in kHz), else the first
    `cpu MHz` of `cpuinfo`. In a VM that is often the nominal clock, below what the cores boost to.

    Returns:
        Peak(FLOP/s = cores x GHz x 1e9 x FLOPs/cycle, ...), or None when neither AVX2 FMA nor a
        clock is known.
    """
    flags = cpu_flags(cpuinfo)
    units = []
    if precision == "bf16":
        units += [u for u, have in (("amx_bf16", {"amx_bf16", "amx_tile"} & flags),
                                    ("avx512_bf16", "avx512_bf16" in flags)) if have]
    units += [u for u, have in (("avx512f", "avx512f" in flags), ("avx2", {"avx2", "fma"} <= flags)) if have]
    if not units:
        return None
    unit = units[0]
    vendor, family = _cpuinfo_field(cpuinfo, "vendor_id"), _cpuinfo_field(cpuinfo, "cpu family")
    zen4 = vendor == "AuthenticAMD" and family == "25"
    per_cycle = (ZEN4_FLOPS_PER_CYCLE if zen4 and unit != "amx_bf16" else CPU_FLOPS_PER_CYCLE)[unit]
    if ghz:
        clock, source = ghz, "--cpu-ghz"
    elif max_khz:
        clock, source = max_khz / 1e6, "cpufreq max"
    else:
        mhz = _cpuinfo_field(cpuinfo, "cpu MHz")
        try:
            clock, source = float(mhz) / 1e3, "cpuinfo MHz"
        except (TypeError, ValueError):
            return None
    arch = " (Zen 4: 512-bit ops on 256-bit units)" if zen4 and unit in ("avx512_bf16", "avx512f") else ""
    how = (f"{cores} core{'s' if cores != 1 else ''} x {clock:.2f} GHz ({source}) x {per_cycle} FLOPs/cycle "
           f"{CPU_UNIT_NAMES[unit]}{arch}")
    return Peak(cores * clock * 1e9 * per_cycle, how, clock, source)


def gpu_peak(name: str, precision: str) -> Peak | None:
    """The dense bf16/fp16 tensor-core peak of the GPU called `name` (`GPU_BF16_PEAKS`); None for
    fp32 or a GPU not in the table."""
    if precision == "fp32":
        return None
    for key, flops in GPU_BF16_PEAKS:
        if key in name:
            return Peak(flops, f"{key} dense {precision} tensor cores (data sheet)")
    return None


def device_peak(device: dict[str, Any], precision: str, ghz: float | None = None) -> Peak | None:
    """The peak of the device a run reported (`gic.bench_runs.device_info`) at `precision`: GPUs from
    `GPU_BF16_PEAKS`, CPUs from this machine's /proc/cpuinfo and cpufreq (`cpu_peak`)."""
    if device["kind"] == "gpu":
        return gpu_peak(device["name"], precision)
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    try:
        max_khz = int(Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq").read_text().strip())
    except (OSError, ValueError):
        max_khz = None
    return cpu_peak(cpuinfo, precision, device["cores"], max_khz, ghz)


def cpu_flags_line() -> str:
    """The flags of this CPU that set its peak (AMX, AVX-512, AVX2/FMA), as one line."""
    try:
        flags = cpu_flags(Path("/proc/cpuinfo").read_text())
    except OSError:
        return "unknown"
    shown = sorted(f for f in flags if f.startswith(("amx", "avx512")) or f in ("avx2", "fma"))
    return " ".join(shown) + ("" if any(f.startswith("amx") for f in flags) else " (no amx)")


# ------------------------------------------------------------------------------ subprocess runs
class BenchTimeout(GicError):
    """A benchmark run did not finish within the timeout (the user's --timeout)."""


class BenchRunFailed(Exception):
    """A benchmark run exited without a result; the message ends with its last lines of output."""


def run_job(job: dict[str, Any], label: str, timeout: float | None = DEFAULT_TIMEOUT_S) -> dict[str, Any]:
    """One benchmark run in a fresh Python process (`gic.bench_runs`), in its own process group;
    its result comes back as a JSON line.

    Args:
        job: what `gic.bench_runs.run` takes; label: the run's name in messages.
        timeout: seconds before the run (and anything it started) is killed.

    Raises:
        BenchTimeout: it ran past `timeout`. BenchRunFailed: it failed (the message ends with its
        last 15 lines of output).
    """
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
    proc = subprocess.Popen([sys.executable, "-m", "gic.bench_runs", json.dumps(job)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        raise BenchTimeout(f"benchmark run {label} did not finish within --timeout {timeout:g} s; it was stopped "
                           "and nothing after it ran") from None
    except BaseException:  # Ctrl-C: take the run down with us
        _kill_group(proc)
        raise
    for line in stdout.splitlines():
        if line.startswith(MARKER):
            return json.loads(line[len(MARKER):])
    tail = "\n".join((stderr or stdout).strip().splitlines()[-15:])
    raise BenchRunFailed(f"benchmark run {label} failed (exit {proc.returncode}):\n{tail}")


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """Within the block, SIGTERM raises KeyboardInterrupt (in the main thread): the run under way is
    killed with its process group and the temporary folder removed, as on Ctrl-C. A run is in a
    session of its own, so a signal to ours does not reach it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.communicate()


# ------------------------------------------------------------------------------ figures and rows
@dataclass(frozen=True)
class Figure:
    """Repeated measurements of one quantity: `median`, `spread` (half the range, (max - min) / 2)
    and `n` (how many); an empty Figure has median None."""

    values: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def median(self) -> float | None:
        return statistics.median(self.values) if self.values else None

    @property
    def spread(self) -> float:
        return (max(self.values) - min(self.values)) / 2 if self.values else 0.0

    def text(self, fmt: str = ".1f", scale: float = 1.0) -> str:
        """`median ±spread` (no ± for a single value), or `-` when empty."""
        if not self.values:
            return "-"
        med = f"{self.median * scale:{fmt}}"
        return med if self.n == 1 else f"{med} ±{self.spread * scale:{fmt}}"


@dataclass
class Row:
    """One line of the table: a phase (`PHASE_LABELS` key) of one pipeline (trainer | ceiling | seed)
    at `precision`, with one dict per repeat (images_per_s, wall_s, tflops, peak_fraction,
    rss_peak_mb, gpu_peak_mb, test_accuracy, test_loss, ceiling_fraction, ceiling_cpu_fraction; None:
    not measured)."""

    phase: str
    impl: str
    precision: str
    runs: list[dict[str, float | None]] = field(default_factory=list)
    ratio: float | None = None  # median img/s over the seed's, same phase

    def figure(self, key: str) -> Figure:
        return Figure(tuple(r[key] for r in self.runs if r.get(key) is not None))


PHASE_LABELS = {"p1": "phase 1, no aug", "p1_warm": "phase 1, no aug (warm)", "p1aug": "phase 1, aug",
                "phase2": "phase 2"}


def ceiling_seconds(phase: str, rates: dict[str, float], epochs: int, n_train: int, n_val: int, size: int) -> float:
    """The ceiling's time for `phase` (module docstring), from `gic.bench_runs.ceiling`'s rates in images/s."""
    fwd = rates["forward"]
    if phase == "p1":
        return (n_train + n_val) / fwd + epochs * n_train / rates["head_step"]
    if phase == "p1_warm":
        return epochs * n_train / rates["head_step"]
    if phase == "p1aug":
        return n_val / fwd + epochs * n_train / rates["step"]
    return n_val * (1 - unfrozen_share(size, rates["unfrozen"])) / fwd + epochs * n_train / rates["step"]


PHASES_ALL = ("p1", "p1aug", "phase2")


def plan_runs(common: dict[str, Any], tmp: Path, impls: tuple[str, ...], which: str, repeats: int,
              seed_repeats: int) -> list[tuple[str, str, int, dict[str, Any]]]:
    """Every run as (impl, phase, repeat, job), repeat by repeat (so that a change in the machine's load spreads over every row):
    per repeat the trainer's phases, then the seed's. Phase 2 resumes the same repeat's phase-1
    (with augmentation) weights; every trainer run has a fresh cache folder (cold feature caches)."""
    phases = {"all": PHASES_ALL, "p1": ("p1",), "p1aug": ("p1aug", "phase2")}[which]
    runs = []
    for r in range(1, max(repeats, seed_repeats) + 1):
        for impl, count in (("trainer", repeats), ("seed", seed_repeats)):
            if impl not in impls or r > count:
                continue
            for phase in phases:
                job = {**common, "impl": impl, "phase": phase, "augment": phase != "p1",
                       "cache_dir": str(tmp / f"cache-{impl}-{phase}-{r}")}
                if impl == "trainer" and phase == "p1aug":
                    job["checkpoint"] = str(tmp / f"trainer-p1aug-{r}")
                elif impl == "trainer" and phase == "phase2":
                    job["resume"] = str(tmp / f"trainer-p1aug-{r}")
                elif impl == "seed" and phase == "p1aug":
                    job["save_weights"] = str(tmp / f"seed-p1aug-{r}.weights.h5")
                elif impl == "seed" and phase == "phase2":
                    job["load_weights"] = str(tmp / f"seed-p1aug-{r}.weights.h5")
                runs.append((impl, phase, r, job))
    return runs


def bench_train(data: str | Path, size: int, epochs: int = 2, batch_size: int = 32, precision: str = "auto",
                weights: str = "hed", seed: int = 0, threads: int | None = None, overrides: tuple[str, ...] = (),
                impls: tuple[str, ...] = ("trainer", "seed"), which: str = "all", repeats: int = 3,
                seed_repeats: int = 1, timeout: float | None = DEFAULT_TIMEOUT_S, cpu_ghz: float | None = None,
                echo: Callable[[str], Any] = print) -> tuple[list[Row], dict[str, Any]]:
    """Run every phase of the trainer (with its ceiling) and of the seed pipeline, each repeat in its
    own process.

    Args:
        data: a folder with {train,validation,test}/{men,women}.
        size: image side in px; epochs: per phase; weights: hed | imagenet | none | a file.
        overrides: trainer `KEY=VALUE` overrides; impls: which pipelines run.
        which: `all`, `p1` (phase 1 without augmentation alone) or `p1aug` (phase 1 with augmentation,
            then phase 2).
        repeats: runs of each trainer phase (each with its ceiling); seed_repeats: of each seed phase.
        timeout: seconds one run may take (None: no limit); cpu_ghz: the CPU clock for its peak.
        echo: prints a line per run as it ends.

    Returns:
        (rows, meta): a Row per (phase, pipeline) with one entry per repeat, and what `format_table`
        needs besides (device, peaks, split sizes, the trainer's precision, decode seconds).

    Raises:
        DataError: a split folder is missing. ConfigError: a bad override. BenchTimeout: a run took longer than `timeout`.
        BenchRunFailed: a run failed.
    """
    from gic.errors import DataError

    from gic.config import TrainConfig

    data = Path(data).resolve()
    for split in ("train", "validation", "test"):
        if not (data / split).is_dir():
            raise DataError(f"{data / split}: missing; expected {data}/{{train,validation,test}}/{{men,women}}")
    TrainConfig().with_overrides(list(overrides))  # a bad --set is said now, not after minutes of runs
    common = {"data": str(data), "size": size, "batch_size": batch_size, "epochs": epochs, "weights": weights,
              "seed": seed, "threads": threads, "dense_units": HEAD_UNITS, "dropout_rate": 0.5,
              "precision": precision, "overrides": list(overrides)}
    results: list[tuple[str, str, int, dict[str, Any]]] = []
    with _sigterm_as_interrupt(), tempfile.TemporaryDirectory(prefix="gic-bench-") as tmp:
        plan = plan_runs(common, Path(tmp), impls, which, repeats, seed_repeats)
        for i, (impl, phase, r, job) in enumerate(plan, start=1):
            count = repeats if impl == "trainer" else seed_repeats
            label = f"'{impl} {PHASE_LABELS[phase]}' (repeat {r} of {count})"
            start = time.perf_counter()
            res = run_job(job, label, timeout)
            echo(f"  [{i}/{len(plan)}] {impl:<7} {PHASE_LABELS[phase]:<16} repeat {r}/{count}  "
                 f"{time.perf_counter() - start:6.1f} s")
            results.append((impl, phase, r, res))
    return _rows(results, size, epochs, data, cpu_ghz)


def _rows(results, size: int, epochs: int, data: Path, cpu_ghz: float | None) -> tuple[list[Row], dict[str, Any]]:
    """Rows and meta from the runs' results (`bench_train`)."""
    trainer_n = next((res["n"] for impl, _, _, res in results if impl == "trainer"), None)
    n = trainer_n or {split: count_images(data, split) for split in ("train", "validation", "test")}
    n_train, n_val = n["train"], n["validation"]
    device = results[0][3]["device"]
    precision = next((res["precision"] for impl, _, _, res in results if impl == "trainer"), "fp32")
    used = {"fp32" if impl == "seed" else precision for impl, _, _, _ in results}
    peaks = {p: device_peak(device, p, cpu_ghz) for p in sorted(used)}
    rows: dict[tuple[str, str], Row] = {}

    def add(phase: str, impl: str, prec: str, entry: dict[str, Any]) -> dict[str, Any]:
        row = rows.setdefault((phase, impl), Row(phase, impl, prec))
        wall = entry["wall_s"]
        peak = peaks.get(prec)
        flops = entry["flops"]
        run = {"images_per_s": epochs * n_train / wall, "wall_s": wall, "tflops": flops / wall / 1e12,
               "peak_fraction": flops / wall / peak.flops if peak else None,
               "rss_peak_mb": entry.get("rss_peak") and entry["rss_peak"] / 2**20,
               "gpu_peak_mb": entry["gpu_peak"] / 2**20 if entry.get("gpu_peak") is not None else None,
               "test_accuracy": entry.get("test_accuracy"), "test_loss": entry.get("test_loss")}
        row.runs.append(run)
        return run

    for impl, phase, r, res in results:
        for name, entry in res["phases"].items():
            cached = res.get("phase2_validation_cached", True)
            if impl == "seed":
                entry["flops"] = phase_flops(name, "seed", size, epochs, n_train, n_val)
                add(name, "seed", "fp32", entry)
                continue
            rates = res["ceiling"]
            kw = {"unfrozen": rates["unfrozen"], "dense_units": rates["dense_units"]}
            entry["flops"] = phase_flops(name, "trainer", size, epochs, n_train, n_val, lower_cached=cached, **kw)
            trainer_run = add(name, "trainer", precision, entry)
            wall = ceiling_seconds(name, rates, epochs, n_train, n_val, size)
            ceiling_run = add(name, "ceiling", precision, {
                "wall_s": wall, "flops": phase_flops(name, "ceiling", size, epochs, n_train, n_val, **kw)})
            trainer_run["ceiling_fraction"] = trainer_run["images_per_s"] / ceiling_run["images_per_s"]
            if device["kind"] == "cpu" and entry.get("cpu_s"):  # on a GPU the CPU seconds say little
                cpu_rates = {**rates, **rates["cpu"]}
                trainer_run["ceiling_cpu_fraction"] = (
                    ceiling_seconds(name, cpu_rates, epochs, n_train, n_val, size) / entry["cpu_s"])
    order = {"p1": 0, "p1_warm": 1, "p1aug": 2, "phase2": 3}
    impl_order = {"trainer": 0, "ceiling": 1, "seed": 2}
    out = sorted(rows.values(), key=lambda row: (order[row.phase], impl_order[row.impl]))
    for row in out:
        seed = rows.get(("p1" if row.phase == "p1_warm" else row.phase, "seed"))
        if row.impl == "trainer" and seed is not None:
            row.ratio = row.figure("images_per_s").median / seed.figure("images_per_s").median
    decode = [res["decode_s"] for impl, _, _, res in results if impl == "trainer"]
    meta = {"device": device, "peaks": peaks, "n_train": n_train, "n_val": n_val, "n_test": n["test"],
            "precision": precision, "decode_s": Figure(tuple(decode)), "cpu_flags": cpu_flags_line()
            if device["kind"] == "cpu" else None}
    return out, meta


# ------------------------------------------------------------------------------ the table
def _percent(figure: Figure) -> str:
    """A fraction as a percentage: whole numbers, one decimal under 10%."""
    if not figure.n:
        return "-"
    return figure.text(".0f" if figure.median >= 0.1 else ".1f", 100)


def format_table(rows: list[Row], meta: dict[str, Any], size: int, epochs: int) -> str:
    """A plain-text table of `bench_train`'s rows and meta, then what its figures mean: medians over
    the repeats with ± half their range, n the repeats; `*` marks a trainer phase under `GOAL` of its
    ceiling; the seed row of each phase is the 1.0x reference of `vs seed`. The GPU peak memory
    column is there when the runs had a GPU."""
    device, peaks = meta["device"], meta["peaks"]
    gpu = device["kind"] == "gpu"
    head = (f"{'phase':<23} {'pipeline':<13} {'n':>2} {'img/s':>16} {'% ceiling':>10} {'% ceil CPU':>10} {'vs seed':>7} "
            f"{'peak RSS MB':>11} " + (f"{'GPU peak MB':>11} " if gpu else "")
            + f"{'TFLOP/s':>13} {'% peak':>9} {'test acc':>13} {'wall s':>11}")
    lines = [head, "-" * len(head)]
    under = False
    for r in rows:
        ips, frac = r.figure("images_per_s"), r.figure("ceiling_fraction")
        mark = ""
        if frac.n and frac.median < GOAL:
            mark, under = " *", True
        ratio = "1.0x" if r.impl == "seed" else (f"{r.ratio:.1f}x" if r.ratio is not None else "-")
        lines.append(
            f"{PHASE_LABELS[r.phase]:<23} {r.impl + ' ' + r.precision:<13} {ips.n:>2} {ips.text():>16} "
            f"{_percent(frac) + mark:>10} {_percent(r.figure('ceiling_cpu_fraction')):>10} {ratio:>7} "
            f"{r.figure('rss_peak_mb').text('.0f'):>11} "
            + (f"{r.figure('gpu_peak_mb').text('.0f'):>11} " if gpu else "")
            + f"{r.figure('tflops').text('.3f'):>13} {_percent(r.figure('peak_fraction')):>9} "
            f"{r.figure('test_accuracy').text('.3f'):>13} {r.figure('wall_s').text():>11}")
    lines.append("")
    cores = device["cores"]
    where = device["name"] + ("" if gpu else f" ({cores} core{'s' if cores != 1 else ''} used)")
    lines.append(f"device: {where}; {size} px, {epochs} epoch(s) per phase, {meta['n_train']} train / "
                 f"{meta['n_val']} validation / {meta['n_test']} test images")
    if meta.get("cpu_flags"):
        lines.append(f"cpu flags: {meta['cpu_flags']}")
    for prec, peak in peaks.items():
        lines.append(f"peak {prec}: " + (f"{peak.flops / 1e12:.3f} TFLOP/s = {peak.how}" if peak else "unknown"))
    over = [max(r.figure("peak_fraction").values) for r in rows if r.figure("peak_fraction").n]
    clocked = [p for p in peaks.values() if p and p.clock_ghz]
    if over and max(over) > 1 and clocked:
        lines.append(f"  a figure over 100% of peak: the cores run faster than {clocked[0].clock_ghz:.2f} GHz "
                     f"(at least {clocked[0].clock_ghz * max(over):.2f} GHz); --cpu-ghz sets the clock")
    lines.append("n: repeats, each in its own process; figures: the median ± half the range (max - min)")
    lines.append(f"% ceiling: the trainer's img/s over its ceiling's, the same repeat; goal >= {GOAL:.0%} in every "
                 f"phase{' (* = under it)' if under else ''}")
    if any(r.figure("ceiling_cpu_fraction").n for r in rows):
        lines.append("% ceil CPU: the same in CPU seconds of the process (all threads), the ceiling's over the "
                     "trainer's: extra work, not idle time; another process's load does not change it")
    lines.append("ceiling: the phase's compiled steps on device-resident batches at the trainer's precision, batch, "
                 "size and jit, plus its one-off forward passes (no input pipeline, tracing or per-epoch validation)")
    lines.append("img/s = epochs x train images / phase wall time (validation, tracing and one-off caches included); "
                 "test acc: the phase's best epoch by validation accuracy, standard error "
                 f"~{math.sqrt(0.25 / max(meta['n_test'], 1)):.3f} ({meta['n_test']} images)")
    lines.append("phase 2 starts from the same repeat's phase-1 (aug) weights; (warm) = a second trial in the same "
                 "process, features in memory")
    if meta["decode_s"].n:
        lines.append(f"trainer: folder decoded into arrays in {meta['decode_s'].text()} s per run (once per search; "
                     "not counted above)")
    return "\n".join(lines)


def count_images(data: str | Path, split: str) -> int:
    """How many images the loader reads under `data`/`split` (every class folder)."""
    from gic.data import list_images

    root = Path(data) / split
    return sum(len(list_images(d)) for d in root.iterdir() if d.is_dir())
