"""One run of `gic bench train`, in its own process: the seed notebook's pipeline, this project's
trainer, or VGG16's forward alone, with the peak memory and the device it ran on.

    python -m gic.bench_runs '{"impl": "seed", ...}'   # prints MARKER + the result as one JSON line

`gic.bench` starts one process per run, so the peak memory of one never carries into the next and
the seed's fp32 never shares a process with the trainer's mixed precision.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import threading
import time
from pathlib import Path
from typing import Any

MARKER = "GIC_BENCH_RESULT "  # the line of stdout that holds a run's result


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
    """This process's peak resident memory so far, in bytes."""
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

    from gic.weights import assign_base_weights, base_weights

    conv_base = keras.applications.VGG16(weights=None, include_top=False, input_shape=(size, size, 3))
    assign_base_weights(conv_base, base_weights(weights, size))
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
    """The TrainConfig a trainer job runs: the seed recipe at the job's size, epochs and weights."""
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


def run(job: dict[str, Any]) -> dict[str, Any]:
    """Run `job` (`impl`: trainer | seed | ceiling) in this process; add its peak RSS and the device."""
    from gic.runtime import configure_tensorflow

    configure_tensorflow(threads=job.get("threads"))
    run = {"seed": run_seed, "ceiling": run_ceiling}.get(job["impl"], run_trainer)
    out = run(job)
    out["max_rss"] = max_rss_bytes()
    out["device"], out["peak"] = device_peak()
    return out


if __name__ == "__main__":
    result = run(json.loads(sys.argv[1]))
    print(MARKER + json.dumps(result), flush=True)
