"""Benchmarks that print figures, side by side: this project's trainer against the seed's pipeline.

    gic bench train --data /path/to/faces --size 160 --epochs 3

For each phase (1 without augmentation, 1 with augmentation, 2) it runs the trainer and a faithful
copy of the seed notebook's pipeline on the same machine and data, and prints images/s, their
ratio, peak memory, achieved FLOP/s (and the fraction of the hardware's peak where it is known)
and test accuracy. Each run is its own subprocess, so the peak memory of one never carries into
the next and the seed's fp32 never shares a process with the trainer's mixed precision.

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
import resource
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# ------------------------------------------------------------------------------ FLOP counting
VGG16_BLOCKS = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))  # (channels, conv layers) per block
HEAD_UNITS = 256


def vgg16_conv_macs(size: int) -> list[int]:
    """Multiply-accumulates of each of VGG16's 13 3x3 'same' convs for one size x size image.

    2x2 max pooling with stride 2 ('valid') halves the side, rounding down, after each block.
    """
    macs, side, cin = [], size, 3
    for cout, n in VGG16_BLOCKS:
        for _ in range(n):
            macs.append(side * side * cin * cout * 9)
            cin = cout
        side //= 2
    return macs


def head_flops(dense_units: int = HEAD_UNITS) -> int:
    return 2 * (512 * dense_units + dense_units)


def train_flops_per_image(size: int, unfrozen: int, dense_units: int = HEAD_UNITS) -> float:
    """Forward of the whole model plus backward (~2x forward) of the head and the top `unfrozen` convs."""
    conv = [2 * m for m in vgg16_conv_macs(size)]
    trainable = sum(conv[len(conv) - unfrozen:]) if unfrozen else 0
    return sum(conv) + 2 * trainable + 3 * head_flops(dense_units)


def forward_flops_per_image(size: int, dense_units: int = HEAD_UNITS) -> float:
    return 2 * sum(vgg16_conv_macs(size)) + head_flops(dense_units)


def phase_flops(mode: str, size: int, epochs: int, n_train: int, n_val: int, unfrozen: int = 0,
                dense_units: int = HEAD_UNITS) -> float:
    """Useful arithmetic of one phase: training images every epoch, validation images every epoch.

    mode `features`: the one-off forward of train + validation through the base, then the head
    alone (forward + backward) on the pooled features every epoch.
    """
    if mode == "features":
        base = 2 * sum(vgg16_conv_macs(size))
        return (n_train + n_val) * base + epochs * (n_train * 3 + n_val) * head_flops(dense_units)
    return epochs * (n_train * train_flops_per_image(size, unfrozen, dense_units)
                     + n_val * forward_flops_per_image(size, dense_units))


# Dense bf16 tensor-core peaks from the vendors' data sheets (FLOP/s, no sparsity).
GPU_BF16_PEAKS = (("H200", 989e12), ("H100 PCIe", 756e12), ("H100", 989e12), ("A100", 312e12),
                  ("L40S", 362e12), ("L4", 121e12), ("A10G", 70e12), ("A10", 125e12))


def device_peak() -> tuple[str, float | None]:
    """(device name, bf16 dense peak FLOP/s or None when unknown). CPUs: unknown (clock, AVX-512
    issue width and core sharing vary too much in a VM to state a peak we could defend)."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        name = tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU")
        for key, peak in GPU_BF16_PEAKS:
            if key in name:
                return name, peak
        return name, None
    model = "CPU"
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except OSError:
        pass
    return f"{model} ({os.cpu_count()} cores)", None


# ------------------------------------------------------------------------------ memory sampling
class PeakMemory:
    """Peak RSS (psutil, sampled every 20 ms) and TF's GPU peak during a `with` block."""

    def __init__(self, interval: float = 0.02):
        self.interval, self.rss_peak, self.gpu_peak = interval, 0, None
        self._stop = threading.Event()

    def __enter__(self) -> "PeakMemory":
        import psutil

        self._proc = psutil.Process()
        self.rss_peak = self._proc.memory_info().rss
        self._gpu_reset()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.rss_peak = max(self.rss_peak, self._proc.memory_info().rss)

    def _gpu_reset(self) -> None:
        import tensorflow as tf

        if tf.config.list_physical_devices("GPU"):
            try:
                tf.config.experimental.reset_memory_stats("GPU:0")
            except (ValueError, RuntimeError):
                pass

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.rss_peak = max(self.rss_peak, self._proc.memory_info().rss)
        import tensorflow as tf

        if tf.config.list_physical_devices("GPU"):
            try:
                self.gpu_peak = tf.config.experimental.get_memory_info("GPU:0")["peak"]
            except (ValueError, RuntimeError):
                self.gpu_peak = None


def max_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


# ------------------------------------------------------------------------------ the seed pipeline
def _seed_datasets(root: Path, size: int, batch_size: int, seed: int):
    """The notebook's input: image_dataset_from_directory, re-read and decoded every epoch."""
    import keras

    def load(split: str, shuffle: bool):
        return keras.utils.image_dataset_from_directory(root / split, image_size=(size, size), batch_size=batch_size,
                                                        shuffle=shuffle, seed=seed, verbose=False)

    return load("train", True), load("validation", False), load("test", False)


def _seed_model(size: int, weights: str, augment: bool, dense_units: int, dropout_rate: float):
    """The notebook's model: augmentation layers inside it, VGG16 preprocessing, frozen conv base."""
    import keras

    from gic.model import base_weights, conv_layers

    conv_base = keras.applications.VGG16(weights=None, include_top=False, input_shape=(size, size, 3))
    arrays = base_weights(weights, size)
    if arrays is not None:
        for layer, kernel, bias in zip(conv_layers(conv_base), arrays[::2], arrays[1::2]):
            layer.set_weights([kernel, bias])
    conv_base.trainable = False
    inputs = keras.Input(shape=(size, size, 3))
    x = inputs
    if augment:
        x = keras.Sequential([keras.layers.RandomFlip("horizontal"), keras.layers.RandomRotation(0.1),
                              keras.layers.RandomZoom(0.2)], name="data_augmentation")(x)
    x = keras.applications.vgg16.preprocess_input(x)
    x = conv_base(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(dense_units, activation="relu")(x)
    x = keras.layers.Dropout(dropout_rate)(x)
    outputs = keras.layers.Dense(1, activation="sigmoid")(x)
    return keras.Model(inputs, outputs), conv_base


def _keep_best():
    """The notebook's ModelCheckpoint(save_best_only=True) + reload, in memory: best val_accuracy."""
    import keras

    class KeepBest(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.best, self.weights = -1.0, None

        def on_epoch_end(self, epoch, logs=None):
            value = (logs or {}).get("val_accuracy", -1.0)
            if value > self.best:
                self.best, self.weights = value, self.model.get_weights()

    return KeepBest()


def run_seed(job: dict[str, Any]) -> dict[str, Any]:
    """The seed pipeline: fp32, no caching, Keras fit with validation every epoch."""
    import keras

    root, size, bs, epochs = Path(job["data"]), job["size"], job["batch_size"], job["epochs"]
    keras.utils.set_random_seed(job["seed"])
    train_ds, val_ds, test_ds = _seed_datasets(root, size, bs, job["seed"])
    model, conv_base = _seed_model(size, job["weights"], job["augment"], job["dense_units"], job["dropout_rate"])
    out: dict[str, Any] = {"phases": {}}

    def fit(phase: str, optimizer) -> None:
        model.compile(optimizer=optimizer, loss="binary_crossentropy", metrics=["accuracy"])
        keep = _keep_best()
        with PeakMemory() as mem:
            start = time.perf_counter()
            model.fit(train_ds, epochs=epochs, validation_data=val_ds, callbacks=[keep], verbose=0)
            wall = time.perf_counter() - start
        if keep.weights is not None:
            model.set_weights(keep.weights)
        test = model.evaluate(test_ds, verbose=0, return_dict=True)
        out["phases"][phase] = {"wall_s": wall, "rss_peak": mem.rss_peak, "gpu_peak": mem.gpu_peak,
                                "test_accuracy": float(test["accuracy"]), "best_val_accuracy": keep.best}

    fit(job["phase1"], keras.optimizers.RMSprop(learning_rate=1e-3))
    if job.get("phase2"):
        conv_base.trainable = True  # the notebook: everything but the last 4 layers frozen
        for layer in conv_base.layers[:-4]:
            layer.trainable = False
        fit("phase2", keras.optimizers.Adam(learning_rate=1e-5))
    out["n"] = {"train": int(sum(len(y) for _, y in train_ds.unbatch().batch(4096))),
                "validation": int(sum(len(y) for _, y in val_ds.unbatch().batch(4096)))}
    return out


# ------------------------------------------------------------------------------ the trainer
def trainer_config(job: dict[str, Any]):
    from gic.config import TrainConfig

    cfg = TrainConfig.model_validate({
        "seed": job["seed"],
        "data": {"dir": job["data"], "image_size": job["size"], "batch_size": job["batch_size"],
                 "cache_dir": job["cache_dir"]},
        "model": {"weights": job["weights"], "dense_units": job["dense_units"], "dropout_rate": job["dropout_rate"],
                  "augmentation": "seed"},
        "phase1": {"epochs": job["epochs"], "augment": job["augment"]},
        "phase2": {"epochs": job["epochs"] if job.get("phase2") else 0, "unfreeze_layers": 3},
        "precision": job["precision"],
    })
    return cfg.with_overrides(list(job.get("overrides", [])))


def run_trainer(job: dict[str, Any]) -> dict[str, Any]:
    """This project's trainer on arrays decoded once; `warm` repeats phase 1 as a reused worker would."""
    from gic.data import load_dataset
    from gic.train import train_two_phase

    cfg = trainer_config(job)
    start = time.perf_counter()
    data = load_dataset(cfg.data)
    decode_s = time.perf_counter() - start
    out: dict[str, Any] = {"phases": {}, "decode_s": decode_s, "n": {"train": len(data.train),
                                                                      "validation": len(data.validation)}}
    with PeakMemory() as mem:
        result = train_two_phase(cfg, data)
    phases = [job["phase1"]] + (["phase2"] if job.get("phase2") else [])
    for i, phase in enumerate(phases, start=1):
        out["phases"][phase] = {"wall_s": result.timing[f"phase{i}_wall_s"], "rss_peak": mem.rss_peak,
                                "gpu_peak": mem.gpu_peak, "test_accuracy": result.test["test_accuracy"],
                                "best_val_accuracy": result.best_val_accuracy}
    out["precision"] = result.precision
    if job.get("warm"):  # a second trial in the same process: features and weights in memory
        with PeakMemory() as mem:
            again = train_two_phase(cfg, data)
        out["phases"][job["phase1"] + "_warm"] = {
            "wall_s": again.timing["phase1_wall_s"], "rss_peak": mem.rss_peak, "gpu_peak": mem.gpu_peak,
            "test_accuracy": again.test["test_accuracy"], "best_val_accuracy": again.best_val_accuracy}
    return out


def run_ceiling(job: dict[str, Any]) -> dict[str, Any]:
    """VGG16's forward alone, fp32 against the trainer's precision, on the same batches: how much
    mixed precision by itself can buy on this hardware (the trainer's ratios are bounded by it,
    times what caching removes)."""
    import keras
    import numpy as np

    from gic.runtime import KERAS_POLICY, resolve_precision

    size, bs = job["size"], job["batch_size"]
    x = np.random.default_rng(0).uniform(0, 255, (4 * bs, size, size, 3)).astype("float32")
    rates: dict[str, float] = {}
    for precision in dict.fromkeys(("fp32", resolve_precision(job["precision"]))):
        previous = keras.config.dtype_policy()
        keras.config.set_dtype_policy(KERAS_POLICY[precision])
        try:
            model = keras.applications.VGG16(weights=None, include_top=False, input_shape=(size, size, 3))
        finally:
            keras.config.set_dtype_policy(previous)
        model.predict(x[:bs], batch_size=bs, verbose=0)  # trace once
        start = time.perf_counter()
        model.predict(x, batch_size=bs, verbose=0)
        rates[precision] = len(x) / (time.perf_counter() - start)
    return {"forward_images_per_s": rates}


def _worker(job: dict[str, Any]) -> dict[str, Any]:
    from gic.runtime import configure_tensorflow

    configure_tensorflow(threads=job.get("threads"))
    run = {"seed": run_seed, "ceiling": run_ceiling}.get(job["impl"], run_trainer)
    out = run(job)
    out["max_rss"] = max_rss_bytes()
    out["device"], out["peak"] = device_peak()
    return out


MARKER = "GIC_BENCH_RESULT "


def run_job(job: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
    """One benchmark run in a fresh Python process; its result comes back as a JSON line."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
    proc = subprocess.run([sys.executable, "-m", "gic.bench", json.dumps(job)], capture_output=True, text=True,
                          env=env, timeout=timeout)
    for line in proc.stdout.splitlines():
        if line.startswith(MARKER):
            return json.loads(line[len(MARKER):])
    tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
    raise RuntimeError(f"benchmark run {job['impl']}/{job.get('phase1', '-')} failed (exit {proc.returncode}):\n{tail}")


# ------------------------------------------------------------------------------ the table
@dataclass
class Row:
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
                impls: tuple[str, ...] = ("trainer", "seed"), which: str = "all", echo=print) -> list[Row]:
    """Run the trainer and the seed pipeline per phase, each in its own process; return the rows.

    which: `all`, `p1` (phase 1 without augmentation alone) or `p1aug` (phase 1 with augmentation,
    then phase 2).
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
                        vgg16_conv_macs(size))
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
    bench_train.meta = meta  # type: ignore[attr-defined]
    return rows


def format_table(rows: list[Row], meta: dict[str, Any], size: int, epochs: int, n_test: int | None = None) -> str:
    """A plain-text table; the seed row of each phase is the 1.0x reference."""
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
    from gic.data import list_images

    root = Path(data) / "test"
    return sum(len(list_images(d)) for d in root.iterdir() if d.is_dir())


if __name__ == "__main__":
    result = _worker(json.loads(sys.argv[1]))
    print(MARKER + json.dumps(result), flush=True)
