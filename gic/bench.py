"""Benchmarks that print figures, side by side: this project's trainer against the seed's pipeline.

    gic bench train --data /path/to/faces --size 160 --epochs 3

For each phase (1 without augmentation, 1 with augmentation, 2) it runs the trainer and a faithful
copy of the seed notebook's pipeline on the same machine and data, and prints images/s, their
ratio, peak memory, achieved FLOP/s (and the fraction of the hardware's peak where it is known)
and test accuracy. Each run is its own subprocess (`gic.bench_runs`), so the peak memory of one
never carries into the next and the seed's fp32 never shares a process with the trainer's mixed
precision.

What is timed (the same for both): the wall time of a phase from its start to the end of its last
epoch, validation included, model build and test evaluation excluded. That counts tracing, the
seed's image_dataset_from_directory re-reads and, for the trainer's phase-1 feature cache, the
one-off pass of the frozen base over train + validation (a cold cache). The trainer's decode of
the folder into arrays happens once per search and is reported on its own line.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gic.bench_runs import MARKER
from gic.cost import conv_macs

# ------------------------------------------------------------------------------ FLOP counting
# Multiply-adds of VGG16's convs come from gic.cost.conv_macs; here 1 multiply-add = 2 FLOPs.
HEAD_UNITS = 256


def head_flops(dense_units: int = HEAD_UNITS) -> int:
    """FLOPs of the head's forward for one image: Dense(512 -> dense_units) with its bias (the output
    layer's 2 x dense_units, 0.2% of it at 256 units, is left out)."""
    return 2 * (512 * dense_units + dense_units)


def train_flops_per_image(size: int, unfrozen: int, dense_units: int = HEAD_UNITS) -> float:
    """FLOPs to train on one image: forward of the whole model plus backward (~2x forward) of the head
    and the top `unfrozen` convs."""
    conv = [2 * m for m in conv_macs(size)]
    trainable = sum(conv[len(conv) - unfrozen:]) if unfrozen else 0
    return sum(conv) + 2 * trainable + 3 * head_flops(dense_units)


def forward_flops_per_image(size: int, dense_units: int = HEAD_UNITS) -> float:
    """FLOPs of the whole model's forward for one size x size image."""
    return 2 * sum(conv_macs(size)) + head_flops(dense_units)


def phase_flops(mode: str, size: int, epochs: int, n_train: int, n_val: int, unfrozen: int = 0,
                dense_units: int = HEAD_UNITS) -> float:
    """Useful arithmetic of one phase in FLOPs: training images every epoch, validation images every epoch.

    mode `features`: the one-off forward of train + validation through the base, then the head
    alone (forward + backward) on the pooled features every epoch.
    """
    if mode == "features":
        base = 2 * sum(conv_macs(size))
        return (n_train + n_val) * base + epochs * (n_train * 3 + n_val) * head_flops(dense_units)
    return epochs * (n_train * train_flops_per_image(size, unfrozen, dense_units)
                     + n_val * forward_flops_per_image(size, dense_units))


def run_job(job: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
    """One benchmark run in a fresh Python process (`gic.bench_runs`); its result comes back as a JSON line.

    Raises:
        RuntimeError: the run failed; the message ends with its last 15 lines of output.
    """
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
    proc = subprocess.run([sys.executable, "-m", "gic.bench_runs", json.dumps(job)], capture_output=True, text=True,
                          env=env, timeout=timeout)
    for line in proc.stdout.splitlines():
        if line.startswith(MARKER):
            return json.loads(line[len(MARKER):])
    tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
    raise RuntimeError(f"benchmark run {job['impl']}/{job.get('phase1', '-')} failed (exit {proc.returncode}):\n{tail}")


# ------------------------------------------------------------------------------ the table
@dataclass
class Row:
    """One line of the table: a phase (a PHASE_LABELS key) run by one pipeline (trainer | seed)."""

    phase: str
    impl: str
    images_per_s: float
    ratio: float | None
    rss_peak_mb: float
    gpu_peak_mb: float | None
    tflops: float
    peak_fraction: float | None
    test_accuracy: float
    wall_s: float


PHASE_LABELS = {"p1": "phase 1, no aug", "p1_warm": "phase 1, no aug (warm)", "p1aug": "phase 1, aug",
                "phase2": "phase 2"}


def bench_train(data: str | Path, size: int, epochs: int = 2, batch_size: int = 32, precision: str = "auto",
                weights: str = "hed", seed: int = 0, threads: int | None = None, overrides: tuple[str, ...] = (),
                impls: tuple[str, ...] = ("trainer", "seed"), which: str = "all",
                echo=print) -> tuple[list[Row], dict[str, Any]]:
    """Run the trainer and the seed pipeline per phase, each in its own process.

    Args:
        data: a folder with {train,validation,test}/{men,women}.
        size: image side in px; epochs: per phase; weights: hed | imagenet | none | a file.
        overrides: trainer `KEY=VALUE` overrides; impls: which pipelines run.
        which: `all`, `p1` (phase 1 without augmentation alone) or `p1aug` (phase 1 with augmentation,
            then phase 2).

    Returns:
        (rows, meta): a Row per (phase, pipeline), and what `format_table` needs besides (device,
        peak FLOP/s, split sizes, the trainer's precision, decode seconds, forward img/s per precision).

    Raises:
        DataError: a split folder is missing. RuntimeError: a run failed (`run_job`).
    """
    data = Path(data).resolve()
    for split in ("train", "validation", "test"):
        if not (data / split).is_dir():
            from gic.errors import DataError

            raise DataError(f"{data / split}: missing; expected {data}/{{train,validation,test}}/{{men,women}}")
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="gic-bench-") as cache:
        common = {"data": str(data), "size": size, "batch_size": batch_size, "epochs": epochs, "weights": weights,
                  "seed": seed, "threads": threads, "dense_units": HEAD_UNITS, "dropout_rate": 0.5,
                  "cache_dir": cache, "precision": precision, "overrides": list(overrides)}
        jobs = [("p1", {"augment": False, "phase1": "p1", "warm": True}),
                ("p1aug", {"augment": True, "phase1": "p1aug", "phase2": True})]
        jobs = [(name, extra) for name, extra in jobs if which in ("all", name)]
        results: dict[str, dict[str, Any]] = {}
        for impl in impls:
            for name, extra in jobs:
                job = {**common, **extra, "impl": impl}
                echo(f"  running {impl:<7} {PHASE_LABELS[name]}{' + phase 2' if extra.get('phase2') else ''} ...")
                res = run_job(job)
                results.setdefault(impl, {"phases": {}, "n": res["n"]})["phases"].update(res["phases"])
                results[impl].update({k: v for k, v in res.items() if k not in ("phases", "decode_s")})
                results[impl]["decode_s"] = max(results[impl].get("decode_s") or 0.0, res.get("decode_s") or 0.0)
        ceiling = None
        if "trainer" in impls:
            echo("  running VGG16 forward alone, fp32 and the trainer's precision ...")
            ceiling = run_job({**common, "impl": "ceiling"})["forward_images_per_s"]
        any_res = next(iter(results.values()))
        n_train, n_val = any_res["n"]["train"], any_res["n"]["validation"]
        peak = any_res["peak"]
        for phase in ("p1", "p1_warm", "p1aug", "phase2"):
            seed_ips = None
            for impl in ("trainer", "seed"):
                r = results.get(impl, {}).get("phases", {}).get(phase)
                if r is None:
                    continue
                features = impl == "trainer" and phase.startswith("p1") and not phase.startswith("p1aug")
                if phase == "p1_warm":  # features already in memory: only the head's arithmetic
                    flops = phase_flops("features", size, epochs, n_train, n_val) - (n_train + n_val) * 2 * sum(
                        conv_macs(size))
                else:
                    flops = phase_flops("features" if features else "images", size, epochs, n_train, n_val,
                                        unfrozen=3 if phase == "phase2" else 0)
                ips = epochs * n_train / r["wall_s"]
                if impl == "seed":
                    seed_ips = ips
                achieved = flops / r["wall_s"]
                rows.append(Row(phase=phase, impl=impl, images_per_s=ips, ratio=None,
                                rss_peak_mb=r["rss_peak"] / 2**20,
                                gpu_peak_mb=r["gpu_peak"] / 2**20 if r["gpu_peak"] is not None else None,
                                tflops=achieved / 1e12, peak_fraction=achieved / peak if peak else None,
                                test_accuracy=r["test_accuracy"], wall_s=r["wall_s"]))
            seed_phase = "p1" if phase == "p1_warm" else phase
            seed_r = results.get("seed", {}).get("phases", {}).get(seed_phase)
            if seed_r is not None:
                seed_ips = epochs * n_train / seed_r["wall_s"]
                for row in rows:
                    if row.phase == phase and row.impl == "trainer":
                        row.ratio = row.images_per_s / seed_ips
        meta = {"device": any_res["device"], "peak": peak, "n_train": n_train, "n_val": n_val,
                "precision": results.get("trainer", {}).get("precision", "-"),
                "decode_s": results.get("trainer", {}).get("decode_s"), "ceiling": ceiling}
    return rows, meta


def format_table(rows: list[Row], meta: dict[str, Any], size: int, epochs: int, n_test: int | None = None) -> str:
    """A plain-text table of `bench_train`'s rows and meta; the seed row of each phase is the 1.0x
    reference. `n_test` (test images) adds the standard error of a test accuracy."""
    head = (f"{'phase':<24} {'pipeline':<16} {'img/s':>8} {'vs seed':>8} {'peak RSS':>9} {'GPU peak':>9} "
            f"{'TFLOP/s':>8} {'% peak':>7} {'test acc':>9} {'wall s':>7}")
    lines = [head, "-" * len(head)]
    for r in rows:
        impl = f"trainer {meta['precision']}" if r.impl == "trainer" else "seed fp32"
        ratio = f"{r.ratio:.1f}x" if r.ratio is not None else ("1.0x" if r.impl == "seed" else "-")
        gpu = f"{r.gpu_peak_mb:.0f} MB" if r.gpu_peak_mb is not None else "-"
        frac = f"{100 * r.peak_fraction:.1f}" if r.peak_fraction is not None else "-"
        lines.append(f"{PHASE_LABELS[r.phase]:<24} {impl:<16} {r.images_per_s:>8.1f} {ratio:>8} "
                     f"{r.rss_peak_mb:>6.0f} MB {gpu:>9} {r.tflops:>8.3f} {frac:>7} {r.test_accuracy:>9.3f} "
                     f"{r.wall_s:>7.1f}")
    peak = f"{meta['peak'] / 1e12:.0f} TFLOP/s bf16 dense" if meta["peak"] else "unknown (CPU)"
    lines.append("")
    lines.append(f"device: {meta['device']}; peak: {peak}; {size} px, {epochs} epoch(s) per phase, "
                 f"{meta['n_train']} train / {meta['n_val']} validation images")
    acc_noise = f"; test accuracy standard error ~{math.sqrt(0.25 / n_test):.3f} ({n_test} images)" if n_test else ""
    lines.append("img/s = epochs x train images / phase wall time (validation, tracing and the one-off feature "
                 f"pass included){acc_noise}")
    rates = meta.get("ceiling") or {}
    if len(rates) == 2:
        (p32, fp32), (plow, low) = rates.items()
        lines.append(f"hardware: VGG16 forward alone {fp32:.1f} img/s {p32}, {low:.1f} img/s {plow}: {low / fp32:.1f}x "
                     "is what mixed precision alone buys here; the ratios above are that times what caching removes")
    if meta.get("decode_s") is not None:
        lines.append(f"trainer: folder decoded once into arrays in {meta['decode_s']:.1f} s (once per search, "
                     "not counted above); (warm) = a second trial in the same worker, features in memory")
    return "\n".join(lines)


def count_test_images(data: str | Path) -> int:
    """How many images the loader reads under `data`/test (every class folder)."""
    from gic.data import list_images

    root = Path(data) / "test"
    return sum(len(list_images(d)) for d in root.iterdir() if d.is_dir())
