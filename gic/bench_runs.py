"""One run of `gic bench train`, in its own process: one phase of the seed notebook's pipeline or of
this project's trainer (then that phase's ceiling on this machine), with its peak memory, test
accuracy and the device it ran on.

    python -m gic.bench_runs '{"impl": "trainer", "phase": "p1aug", ...}'   # prints MARKER + one JSON line

`gic.bench` starts one process per (pipeline, phase, repeat), so the peak memory of one never
carries into the next, the seed's fp32 never shares a process with the trainer's mixed precision,
and every repeat starts cold. Phase 2 starts from the weights the same repeat's phase-1 (with
augmentation) run saved: the trainer's checkpoint, the seed's weights file.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import resource
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

MARKER = "GIC_BENCH_RESULT "  # the line of stdout that holds a run's result

PHASES = ("p1", "p1aug", "phase2")  # a job's `phase`; "p1" also runs "p1_warm" (trainer)


def device_info() -> dict[str, Any]:
    """What the run ran on: {"kind": "gpu" | "cpu", "name": the GPU's or the CPU's model name,
    "cores": CPU threads TensorFlow's intra-op pool uses (its setting, else the CPUs this process
    may run on)}. The peak FLOP/s is worked out by the parent (`gic.bench.device_peak`)."""
    import tensorflow as tf

    threads = tf.config.threading.get_intra_op_parallelism_threads()
    cores = threads or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        name = tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU")
        return {"kind": "gpu", "name": name, "cores": cores}
    model = "CPU"
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except OSError:
        pass
    return {"kind": "cpu", "name": model, "cores": cores}


# ------------------------------------------------------------------------------ memory sampling
class PeakMemory:
    """Peak RSS (psutil, sampled every 20 ms) and TF's GPU peak during a `with` block, in bytes."""

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
    """One phase of the seed pipeline (fp32, no caching, Keras fit with validation every epoch).

    job["phase"]: p1 (no augmentation) | p1aug (augmentation layers in the model; saves its best
    weights to job["save_weights"]) | phase2 (loads job["load_weights"], unfreezes the last 3 conv
    layers as the notebook does, Adam at 1e-5). Each phase ends with its best epoch's weights (by
    val_accuracy, the notebook's ModelCheckpoint) and evaluates them on the test split.
    """
    import keras

    root, size, bs, epochs, phase = Path(job["data"]), job["size"], job["batch_size"], job["epochs"], job["phase"]
    keras.utils.set_random_seed(job["seed"])
    train_ds, val_ds, test_ds = _seed_datasets(root, size, bs, job["seed"])
    model, conv_base = _seed_model(size, job["weights"], phase != "p1", job["dense_units"], job["dropout_rate"])
    if phase == "phase2":
        model.load_weights(job["load_weights"])
        conv_base.trainable = True  # the notebook: everything but the last 4 layers frozen
        for layer in conv_base.layers[:-4]:
            layer.trainable = False
        optimizer = keras.optimizers.Adam(learning_rate=1e-5)
    else:
        optimizer = keras.optimizers.RMSprop(learning_rate=1e-3)
    model.compile(optimizer=optimizer, loss="binary_crossentropy", metrics=["accuracy"])
    keep = _keep_best()
    with PeakMemory() as mem:
        start = time.perf_counter()
        model.fit(train_ds, epochs=epochs, validation_data=val_ds, callbacks=[keep], verbose=0)
        wall = time.perf_counter() - start
    if keep.weights is not None:
        model.set_weights(keep.weights)
    if job.get("save_weights"):
        model.save_weights(job["save_weights"])
    test = model.evaluate(test_ds, verbose=0, return_dict=True)
    return {"phases": {phase: {"wall_s": wall, "rss_peak": mem.rss_peak, "gpu_peak": mem.gpu_peak,
                               "test_accuracy": float(test["accuracy"]), "test_loss": float(test["loss"]),
                               "best_val_accuracy": keep.best}},
            "precision": "fp32"}


# ------------------------------------------------------------------------------ the trainer
def trainer_config(job: dict[str, Any]):
    """The TrainConfig a trainer job runs: the seed recipe at the job's size, epochs and weights;
    phase 1 with augmentation when job["augment"], phase 2 only in a phase-2 job."""
    from gic.config import TrainConfig

    cfg = TrainConfig.model_validate({
        "seed": job["seed"],
        "data": {"dir": job["data"], "image_size": job["size"], "batch_size": job["batch_size"],
                 "cache_dir": job["cache_dir"]},
        "model": {"weights": job["weights"], "dense_units": job["dense_units"], "dropout_rate": job["dropout_rate"],
                  "augmentation": "seed"},
        "phase1": {"epochs": job["epochs"], "augment": job["augment"]},
        "phase2": {"epochs": job["epochs"] if job["phase"] == "phase2" else 0, "unfreeze_layers": 3},
        "precision": job["precision"],
    })
    return cfg.with_overrides(list(job.get("overrides", [])))


def _phase2_start(checkpoint: str, into: Path) -> Path:
    """A copy of the phase-1 run's final checkpoint with its best epoch forgotten, so that phase 2
    ends with (and is tested on) the best of its own epochs, not a phase-1 epoch."""
    from gic.checkpoint import read_checkpoint, write_checkpoint

    state = read_checkpoint(checkpoint)
    state.update(best_value=None, best_epoch=0, best_weights=None)
    return write_checkpoint(into, state)


@contextlib.contextmanager
def phase_cpu_seconds():
    """{1: s, 2: s}: this process's CPU seconds (all threads) in `gic.train.phase1` and `phase2`
    while in the block, the spans their `phaseN_wall_s` time. The CPU time of a run does not
    change when other processes load the machine; its wall time does."""
    from gic import train

    seconds: dict[int, float] = {}
    originals = {1: train.phase1, 2: train.phase2}

    def clocked(n: int, fn: Callable) -> Callable:
        def run(*args, **kwargs):
            start = time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                seconds[n] = time.process_time() - start

        return run

    train.phase1, train.phase2 = clocked(1, originals[1]), clocked(2, originals[2])
    try:
        yield seconds
    finally:
        train.phase1, train.phase2 = originals[1], originals[2]


def run_trainer(job: dict[str, Any]) -> dict[str, Any]:
    """One phase of this project's trainer on arrays decoded once (decode not timed), then that
    phase's ceiling (`ceiling`).

    job["phase"]: p1 (no augmentation, on cached base features; then again in the same process,
    "p1_warm", as a reused search worker would with the features in memory) | p1aug (writes its
    final checkpoint to job["checkpoint"]) | phase2 (resumes from job["resume"], trains phase 2
    alone). Timed: `phaseN_wall_s` of `gic.train.train_two_phase`, from the phase's start to the
    end of its last epoch (the one-off caches, tracing and validation included), and the process's
    CPU seconds over the same span (`phase_cpu_seconds`).
    """
    from gic.data import load_dataset
    from gic.train import train_two_phase

    cfg = trainer_config(job)
    phase = job["phase"]
    start = time.perf_counter()
    data = load_dataset(cfg.data)
    decode_s = time.perf_counter() - start
    n = {"train": len(data.train), "validation": len(data.validation), "test": len(data.test)}
    out: dict[str, Any] = {"phases": {}, "decode_s": decode_s, "n": n}
    kwargs: dict[str, Any] = {}
    if phase == "p1aug" and job.get("checkpoint"):
        last = cfg.phase1.epochs

        def save_last(metrics: dict[str, Any], save_checkpoint: Callable) -> None:
            if metrics["epoch"] == last:
                save_checkpoint(job["checkpoint"])

        kwargs["on_epoch"] = save_last
    if phase == "phase2":
        kwargs["resume"] = _phase2_start(job["resume"], Path(job["cache_dir"]) / "phase2-start")

    def measured(timing_key: str) -> dict[str, Any]:
        with PeakMemory() as mem, phase_cpu_seconds() as cpu:
            result = train_two_phase(cfg, data, **kwargs)
        out["precision"] = result.precision
        out["phase2_validation_cached"] = bool(result.timing.get("phase2_validation_cached"))
        return {"wall_s": result.timing[timing_key], "cpu_s": cpu.get(2 if phase == "phase2" else 1),
                "rss_peak": mem.rss_peak, "gpu_peak": mem.gpu_peak,
                "test_accuracy": result.test["test_accuracy"] if result.test else None,
                "test_loss": result.test["test_loss"] if result.test else None,
                "best_val_accuracy": result.best_val_accuracy}

    out["phases"][phase] = measured("phase2_wall_s" if phase == "phase2" else "phase1_wall_s")
    if phase == "p1" and job.get("warm", True):  # a second trial in the same process: features in memory
        out["phases"]["p1_warm"] = measured("phase1_wall_s")
    out["ceiling"] = ceiling(cfg, phase, n["train"], job.get("ceiling_seconds", 0.5))
    return out


# ------------------------------------------------------------------------------ the ceiling
def _steps_per_second(step: Callable, xs, ys, steps: int, jit: bool, min_seconds: float) -> tuple[float, float]:
    """Calls of `step(x, y)` per wall second and per CPU second of this process, on batches already
    on the device.

    `xs` (M, B, ...) and `ys` (M, B, 1) are device tensors; `step` runs `steps` times per call of
    one tf.function (a tf.while_loop over the M batches in turn: no input pipeline, no Python
    between steps), compiled with XLA when `jit`. One call of 1 step first (tracing, first-use
    allocations, not timed), then calls of `steps` until at least `min_seconds` have passed.
    """
    import tensorflow as tf

    one = tf.function(step, jit_compile=jit, reduce_retracing=True)
    m = int(xs.shape[0])

    @tf.function
    def loop(count):
        def body(i, acc):
            j = i % m
            value = one(tf.gather(xs, j), tf.gather(ys, j))
            return i + 1, acc + tf.cast(tf.reduce_sum(value), tf.float32)

        return tf.while_loop(lambda i, acc: i < count, body, (tf.constant(0), tf.constant(0.0)))[1]

    loop(tf.constant(1)).numpy()  # trace and warm up
    done, start, cpu = 0, time.perf_counter(), time.process_time()
    while True:
        loop(tf.constant(steps)).numpy()  # .numpy(): wait for the device
        done += steps
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return done / elapsed, done / max(time.process_time() - cpu, 1e-9)


def ceiling(cfg, phase: str, n_train: int, min_seconds: float = 0.5) -> dict[str, Any]:
    """The bare rates of `phase`'s compiled steps on this machine, for the trainer's `cfg` (same
    precision, batch size, image size, jit setting, optimizer and unfrozen layers), on random
    device-resident batches (the values do not change the speed; the base is built without
    loading weights). Each rate times at least one epoch's steps (ceil(n_train / batch)) and at
    least `min_seconds`.

    Returns:
        {"forward": the base forward (image -> pooled features) in images/s, and per phase
        "head_step" (p1: the head's train step on (B, 512) features), "step" (p1aug: the model's
        train step with the base frozen, i.e. base forward + head step; phase2: the train step
        with phase2.unfreeze_layers convs unfrozen), in images/s; "cpu": the same rates in images
        per CPU second of this process; "unfrozen": that count; "dense_units": the head's width}.
    """
    import keras
    import numpy as np
    import tensorflow as tf

    from gic.model import FEATURE_DIM, build_model, unfreeze
    from gic.runtime import resolve_precision
    from gic.train import make_optimizer, use_xla

    bs, size = cfg.data.batch_size, cfg.data.image_size
    precision, jit = resolve_precision(cfg.precision), use_xla(cfg)
    clf = build_model(cfg.with_overrides({"model.weights": "none"}), precision)
    steps = max(1, math.ceil(n_train / bs))
    rng = np.random.default_rng(0)
    m = min(steps, 4)  # distinct batches
    images = tf.constant(rng.uniform(0, 255, (m, bs, size, size, 3)).astype("float32"))
    labels = tf.constant(rng.integers(0, 2, (m, bs, 1)).astype("float32"))

    def compile_(model, optimizer: str, learning_rate: float) -> None:  # as gic.train.Trainer.compile
        model.compile(optimizer=make_optimizer(optimizer, learning_rate, precision), loss="binary_crossentropy",
                      metrics=[keras.metrics.BinaryAccuracy(name="accuracy")], jit_compile=jit,
                      steps_per_execution=cfg.steps_per_execution)

    rates: dict[str, Any] = {"cpu": {}}

    def measure(name: str, step: Callable, xs, count: int) -> None:
        wall, cpu = _steps_per_second(step, xs, labels, count, jit, min_seconds)
        rates[name], rates["cpu"][name] = bs * wall, bs * cpu

    def train_step(model) -> Callable:
        model.optimizer.build(model.trainable_variables)  # its variables, before the traced loop
        return lambda x, y: model.train_step((x, y))["loss"]

    measure("forward", lambda x, y: clf.features(x, training=False), images, steps)
    if phase == "p1":
        features = tf.constant(rng.normal(0, 1, (m, bs, FEATURE_DIM)).astype("float32"))
        compile_(clf.head, cfg.phase1.optimizer, cfg.phase1.learning_rate)
        measure("head_step", train_step(clf.head), features, max(steps, 64))
    elif phase == "p1aug":
        compile_(clf.model, cfg.phase1.optimizer, cfg.phase1.learning_rate)
        measure("step", train_step(clf.model), images, steps)
    else:
        unfreeze(clf.base, cfg.phase2.unfreeze_layers)
        compile_(clf.model, cfg.phase2.optimizer, cfg.phase2.learning_rate)
        measure("step", train_step(clf.model), images, steps)
    rates["unfrozen"] = cfg.phase2.unfreeze_layers
    rates["dense_units"] = cfg.model.dense_units
    return rates


def run(job: dict[str, Any]) -> dict[str, Any]:
    """Run `job` (`impl`: trainer | seed) in this process; add its peak RSS and the device."""
    from gic.runtime import configure_tensorflow

    configure_tensorflow(threads=job.get("threads"))
    out = (run_seed if job["impl"] == "seed" else run_trainer)(job)
    out["max_rss"] = max_rss_bytes()
    out["device"] = device_info()
    return out


if __name__ == "__main__":
    result = run(json.loads(sys.argv[1]))
    print(MARKER + json.dumps(result), flush=True)
