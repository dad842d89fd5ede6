"""The two-phase trainer every trial runs: a frozen VGG16 base with a new head, then fine-tuning.

    result = train_two_phase(cfg, data, on_epoch=report)   # -> TrainResult

Phase 1 trains the head with the base frozen; phase 2 unfreezes the top `unfreeze_layers` conv
layers and recompiles with a low learning rate (keras-io's transfer-learning guide). One global
epoch counter runs 1..E1+E2 over both phases, which is what the search's scheduler sees.

Speed without changing the recipe: when phase 1 has no augmentation, the frozen base's output for
an image never changes, so it is computed once per (dataset, image size, weights, precision) and
phase 1 trains the head on those features (Chollet measured ~70x per epoch). Likewise phase 2
validates on the cached output of the conv layers that stay frozen. Batches are gathered from the
caller's arrays (under Ray, the object store's shared copy), never copied whole. Augmentation runs in
the input pipeline with stateless ops seeded by (seed, epoch, batch), and each epoch's order comes
from (seed, epoch): a run resumed from a checkpoint repeats the uninterrupted run's history.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from gic import runtime
from gic.checkpoint import read_checkpoint, write_checkpoint
from gic.config import TrainConfig
from gic.data import Dataset, Split
from gic.errors import GicError
from gic.evaluate import evaluate
from gic.files import atomic_path
from gic.model import Classifier, augment_batch, build_model, conv_layers, split_model, unfreeze, weights_id

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

EpochCallback = Callable[[dict[str, Any], Callable[[str | Path], Path]], Any]


@dataclass
class TrainResult:
    history: list[dict[str, Any]]
    best_epoch: int
    best_val_accuracy: float
    model: keras.Model
    precision: str
    test: dict[str, Any] | None = None
    timing: dict[str, Any] = field(default_factory=dict)

    def metrics(self) -> dict[str, Any]:
        """What metrics.json holds: best epoch and score, test metrics, timings."""
        return {"best_epoch": self.best_epoch, "best_val_accuracy": self.best_val_accuracy,
                **(self.test or {}), "precision": self.precision, **self.timing}


# ----------------------------------------------------------------------------- optimizers
def make_optimizer(name: str, learning_rate: float, precision: str) -> keras.optimizers.Optimizer:
    cls = {"rmsprop": keras.optimizers.RMSprop, "adam": keras.optimizers.Adam,
           "adamw": keras.optimizers.AdamW, "sgd": keras.optimizers.SGD}[name]
    opt = cls(learning_rate=learning_rate)
    if precision == "fp16":  # fp16 needs loss scaling; bf16 has fp32's range and does not
        opt = keras.optimizers.LossScaleOptimizer(opt)
    return opt


# ------------------------------------------------------------------------ phase-1 features
_FEATURE_CACHE: dict[str, dict[str, np.ndarray]] = {}  # per process: reused workers skip the pass


def forget_features() -> None:
    """Empty this process's feature cache (a search hands every trial its features anew)."""
    _FEATURE_CACHE.clear()


def feature_cache_key(cfg: TrainConfig, data: Dataset, precision: str) -> str:
    return f"{data.fingerprint}-{cfg.data.image_size}-{weights_id(cfg.model.weights, cfg.seed)}-{precision}"


def _cache_root(cfg: TrainConfig) -> Path:
    return Path(cfg.data.cache_dir or os.environ.get("GIC_CACHE_DIR") or Path.home() / ".cache" / "gic")


# A search shares features between its trials, on every node: `shared(key, load)` returns the
# features, calling `load()` (disk, else compute) only where no other trial has them (tune.features).
SharedFeatures = Callable[[str, Callable[[], dict[str, np.ndarray]]], dict[str, np.ndarray]]


def base_features(clf: Classifier, cfg: TrainConfig, data: Dataset, precision: str,
                  shared: SharedFeatures | None = None) -> dict[str, np.ndarray]:
    """Pooled conv-base features of the train and validation images: this process's memory, then
    the search's shared store (when given), then the disk cache, then computed (and written to both)."""
    key = feature_cache_key(cfg, data, precision)
    if key not in _FEATURE_CACHE:
        load = lambda: _disk_or_compute_features(clf, cfg, data, key)  # noqa: E731
        _FEATURE_CACHE[key] = shared(key, load) if shared is not None else load()
    return _FEATURE_CACHE[key]


def _disk_or_compute_features(clf: Classifier, cfg: TrainConfig, data: Dataset, key: str) -> dict[str, np.ndarray]:
    path = _cache_root(cfg) / "features" / f"{key}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                feats = {k: z[k] for k in ("train", "validation")}
            if len(feats["train"]) == len(data.train) and len(feats["validation"]) == len(data.validation):
                return feats
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache file is recomputed, never trusted
    feats = {name: clf.features.predict(_image_batches(split, cfg.data.batch_size), verbose=0)
             for name, split in (("train", data.train), ("validation", data.validation))}
    try:
        with atomic_path(path) as tmp:
            np.savez(tmp, **feats)
    except OSError:
        pass  # a read-only or full cache disk costs speed, not the run
    return feats


def validation_features(clf: Classifier, cfg: TrainConfig, data: Dataset, precision: str) -> np.ndarray:
    """Pooled base features of the validation images alone, for phase 1 with augmentation.

    Validation images are never augmented and the base is frozen in phase 1, so their features are
    the same every epoch: evaluating the head on them skips a full base forward of the validation
    split per epoch (20% of the seed split's per-epoch arithmetic). The full cache is used when there.
    """
    key = feature_cache_key(cfg, data, precision)
    if key in _FEATURE_CACHE:
        return _FEATURE_CACHE[key]["validation"]
    vkey = f"{key}-validation"
    if vkey not in _FEATURE_CACHE:
        _FEATURE_CACHE[vkey] = {"validation": clf.features.predict(
            _image_batches(data.validation, cfg.data.batch_size), verbose=0)}
    return _FEATURE_CACHE[vkey]["validation"]


# Phase-2 validation cache budget (host memory). At 180 px with 400 validation images in bf16 a cut in
# block4 or above fits (n <= 6: <= 200 MB); n >= 7 (block3, 45 x 45 x 256) validates the whole model.
LOWER_CACHE_MAX_BYTES = 256 * 2**20


# ------------------------------------------------------------------------------- pipelines
def _image_batches(split: Split, batch_size: int) -> tf.data.Dataset:
    """The split's images in order (for a forward pass), gathered batch by batch, without a copy."""
    return _Batches(split.images, split.labels, batch_size, seed=0).epoch(0)


class _Batches:
    """Epoch datasets over arrays; order and augmentation seeded per epoch.

    The arrays are not copied: each batch is gathered from the caller's array. Under Ray that array
    is a read-only view of the object store's shared memory, so N trials on a node hold one copy of
    the dataset between them, not N (a `tf.constant` would copy it into every trial).
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, batch_size: int, seed: int):
        self.x = x
        with tf.device("/CPU:0"):
            self.y = tf.constant(y.reshape(-1, 1).astype("float32"))
        self.n, self.batch_size, self.seed = len(x), batch_size, seed
        self.dtype = tf.as_dtype(x.dtype)

    def _take(self, idx: tf.Tensor) -> tf.Tensor:
        x = self.x
        batch = tf.numpy_function(lambda i: np.take(x, i, axis=0), [idx], self.dtype, stateful=False)
        return tf.ensure_shape(batch, (None, *x.shape[1:]))

    def epoch(self, epoch: int, augment=None) -> tf.data.Dataset:
        order = np.random.default_rng([self.seed, epoch]).permutation(self.n) if epoch else np.arange(self.n)
        y, seed = self.y, self.seed

        def gather(i, idx):
            images = tf.cast(self._take(idx), tf.float32)
            if augment is not None:
                images = augment_batch(images, augment, tf.stack([tf.constant(seed, tf.int64), epoch * 100_003 + i]))
            return images, tf.gather(y, idx)

        ds = tf.data.Dataset.from_tensor_slices(order).batch(self.batch_size).enumerate()
        return ds.map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(tf.data.AUTOTUNE)


# ---------------------------------------------------------------------------------- trainer
class _TwoPhase:
    def __init__(self, cfg: TrainConfig, data: Dataset, precision: str, on_epoch: EpochCallback | None,
                 shared_features: SharedFeatures | None = None, keep_best: bool = True):
        self.cfg, self.data, self.precision, self.on_epoch = cfg, data, precision, on_epoch
        self.shared_features = shared_features
        self.keep_best = keep_best  # a copy of the best epoch's weights (to end with them); not in a search trial
        runtime.seed_everything(cfg.seed, cfg.deterministic)
        self.clf = build_model(cfg, precision)
        self.history: list[dict[str, Any]] = []
        self.best_value: float | None = None
        self.best_epoch = 0
        self.best_weights: list[np.ndarray] | None = None
        self.target: keras.Model | None = None  # the model the current phase fits (head or whole)
        self.timing: dict[str, float] = {"phase1_time_s": 0.0, "phase2_time_s": 0.0,
                                         "phase1_images": 0, "phase2_images": 0}
        bs = cfg.data.batch_size
        self.images = {"train": _Batches(data.train.images, data.train.labels, bs, cfg.seed),
                       "validation": _Batches(data.validation.images, data.validation.labels, bs, cfg.seed)}
        self.features: dict[str, _Batches] | None = None
        self.upper: keras.Model | None = None  # phase 2: top n convs + head, validated on cached inputs
        self.lower_validation: _Batches | None = None
        self.seed_generators = [layer.seed_generator for layer in self.clf.head.layers
                                if getattr(layer, "seed_generator", None) is not None]
        self.mutable = self.mutable_variables()

    # -- state
    def mutable_variables(self) -> list:
        """The variables training can change: the head's and those of the conv layers phase 2 will
        unfreeze. The others are rebuilt from (weights, seed), so checkpoints leave them out."""
        n = self.cfg.phase2.unfreeze_layers if self.cfg.fine_tunes else 0
        convs = conv_layers(self.clf.base)
        keep = {id(v) for layer in convs[len(convs) - n:] for v in layer.variables}
        keep |= {id(v) for v in self.clf.head.variables}
        return [v for v in self.clf.model.variables if id(v) in keep]

    def phase_variables(self, phase: int) -> list:
        """What a checkpoint of `phase` holds: what that phase trains. Phase 1 trains the head alone
        (the conv layers are still the initial weights, rebuilt from (weights, seed)); phase 2 the head
        and the unfrozen conv layers. At unfreeze_layers 9 a phase-1 checkpoint is then well under 1 MB
        instead of the ~58 MB of the conv layers it never changed."""
        if phase == 2:
            return self.mutable
        head = {id(v) for v in self.clf.head.variables}
        return [v for v in self.mutable if id(v) in head]

    def state(self, epoch: int, phase: int) -> dict[str, Any]:
        return {"epoch": epoch, "phase": phase, "history": self.history, "best_epoch": self.best_epoch,
                "best_value": self.best_value, "timing": self.timing, "config": self.cfg.to_dict(),
                "variables": [np.asarray(v) for v in self.phase_variables(phase)],
                "optimizer": [np.asarray(v) for v in self.target.optimizer.variables],
                "best_weights": self.best_weights}

    def restore(self, state: dict[str, Any], same_phase: bool) -> None:
        shapes = [tuple(a.shape) for a in state["variables"]]
        variables = self.phase_variables(int(state.get("phase", 2)))
        if [tuple(v.shape) for v in variables] != shapes:
            variables = self.mutable  # a checkpoint written before phase-1 checkpoints held the head alone
        if [tuple(v.shape) for v in variables] != shapes:
            raise GicError("resume: the checkpoint was written for another model (architecture or unfreeze_layers differ)")
        for var, value in zip(variables, state["variables"]):
            var.assign(value)
        if same_phase:
            opt = self.target.optimizer
            opt.build(self.target.trainable_variables)
            for var, value in zip(opt.variables, state["optimizer"]):
                var.assign(value)
        self.history = list(state["history"])
        self.best_epoch, self.best_value = state["best_epoch"], state["best_value"]
        self.best_weights = state["best_weights"] if self.keep_best else None
        self.timing = dict(state["timing"])

    # -- phases
    def _jit(self) -> bool:
        """XLA where it helps: `auto` compiles on a GPU, never on a CPU. Measured on a 2-core AVX512-BF16
        CPU (TF 2.21, VGG16 at 128 px): XLA forward 12.5 vs 13.0 img/s in fp32 and 18.5 vs 43 img/s in
        bf16 (XLA's CPU convolutions do not use oneDNN's bf16 kernels)."""
        if self.cfg.jit_compile == "auto":
            return runtime.has_gpu()
        return self.cfg.jit_compile == "on"

    def compile(self, target: keras.Model, optimizer: str, learning_rate: float) -> None:
        target.compile(optimizer=make_optimizer(optimizer, learning_rate, self.precision),
                       loss="binary_crossentropy", metrics=[keras.metrics.BinaryAccuracy(name="accuracy")],
                       jit_compile=self._jit(),
                       steps_per_execution=self.cfg.steps_per_execution)
        self.target = target

    def phase1_on_features(self) -> bool:
        return not (self.cfg.phase1.augment and self.cfg.model.augmentation.enabled)

    def start_phase1(self) -> None:
        p1 = self.cfg.phase1
        if self.phase1_on_features():
            start = time.perf_counter()  # the one-off feature pass counts as phase-1 time
            feats = base_features(self.clf, self.cfg, self.data, self.precision, self.shared_features)
            self.timing["phase1_time_s"] += time.perf_counter() - start
            self.features = {name: _Batches(feats[name], split.labels, self.cfg.data.batch_size, self.cfg.seed)
                             for name, split in (("train", self.data.train), ("validation", self.data.validation))}
            self.compile(self.clf.head, p1.optimizer, p1.learning_rate)
        else:
            start = time.perf_counter()
            feats = validation_features(self.clf, self.cfg, self.data, self.precision)
            self.timing["phase1_time_s"] += time.perf_counter() - start
            self.features = {"validation": _Batches(feats, self.data.validation.labels, self.cfg.data.batch_size,
                                                    self.cfg.seed)}
            # the head shares the model's variables; compiled only to evaluate on the features
            self.clf.head.compile(loss="binary_crossentropy", metrics=[keras.metrics.BinaryAccuracy(name="accuracy")],
                                  jit_compile=self._jit())
            self.compile(self.clf.model, p1.optimizer, p1.learning_rate)

    def start_phase2(self, epochs_left: int) -> None:
        p2 = self.cfg.phase2
        unfreeze(self.clf.base, p2.unfreeze_layers)
        self.compile(self.clf.model, p2.optimizer, p2.learning_rate)
        self.cache_lower_validation(epochs_left)

    def cache_lower_validation(self, epochs_left: int) -> None:
        """Phase 2 validates the same images every epoch through conv layers that stay frozen, so
        their output is computed once here and each epoch runs only the top n convs and the head on
        it: the same numbers as the whole model, for a fraction of the arithmetic (block5 is 3% of
        VGG16's). Skipped where it cannot pay off (one epoch left, n = 13) or would not fit the budget."""
        n, data, bs = self.cfg.phase2.unfreeze_layers, self.data, self.cfg.data.batch_size
        if epochs_left < 2 or not 1 <= n < len(conv_layers(self.clf.base)) or not len(data.validation):
            return
        lower, upper = split_model(self.clf, n)
        itemsize = tf.as_dtype(lower.output.dtype).size
        if len(data.validation) * math.prod(lower.output.shape[1:]) * itemsize > LOWER_CACHE_MAX_BYTES:
            return
        outputs = lower.predict(_image_batches(data.validation, bs), verbose=0)
        upper.compile(loss="binary_crossentropy", metrics=[keras.metrics.BinaryAccuracy(name="accuracy")],
                      jit_compile=self._jit())
        self.upper, self.lower_validation = upper, _Batches(outputs, data.validation.labels, bs, self.cfg.seed)
        self.timing["phase2_validation_cached"] = True

    def run_epoch(self, epoch: int, phase: int) -> dict[str, Any]:
        for gen in self.seed_generators:  # dropout masks: a function of (seed, epoch) alone
            gen.state.assign(np.array([self.cfg.seed, epoch], dtype=gen.state.dtype))
        on_features = phase == 1 and self.features is not None and "train" in self.features
        augment = None if (on_features or (phase == 1 and not self.cfg.phase1.augment)) else self.cfg.model.augmentation
        if augment is not None and not augment.enabled:
            augment = None
        start = time.perf_counter()
        train_source = self.features if on_features else self.images
        fit = self.target.fit(train_source["train"].epoch(epoch, augment), epochs=1, verbose=0, shuffle=False)
        train_time = time.perf_counter() - start
        if phase == 1 and self.features is not None:  # frozen base: validation on its cached features
            val = self.clf.head.evaluate(self.features["validation"].epoch(0), verbose=0, return_dict=True)
        elif phase == 2 and self.upper is not None:  # frozen lower layers: their output is cached
            val = self.upper.evaluate(self.lower_validation.epoch(0), verbose=0, return_dict=True)
        else:
            val = self.target.evaluate(self.images["validation"].epoch(0), verbose=0, return_dict=True)
        self.timing[f"phase{phase}_time_s"] += train_time
        self.timing[f"phase{phase}_images"] += len(self.data.train)
        return {"epoch": epoch, "phase": phase, "loss": float(fit.history["loss"][-1]),
                "accuracy": float(fit.history["accuracy"][-1]), "val_loss": float(val["loss"]),
                "val_accuracy": float(val["accuracy"]), "epoch_time_s": round(time.perf_counter() - start, 4)}

    def after_epoch(self, metrics: dict[str, Any]) -> None:
        value = metrics[self.cfg.monitor]
        better = self.best_value is None or (value > self.best_value if self.cfg.monitor == "val_accuracy"
                                             else value < self.best_value)
        if better:
            self.best_value, self.best_epoch = value, metrics["epoch"]
            if self.keep_best:
                self.best_weights = [np.array(v) for v in self.mutable]
        self.history.append(metrics)
        if self.on_epoch is not None:
            epoch, phase = metrics["epoch"], metrics["phase"]
            self.on_epoch(dict(metrics), lambda path: write_checkpoint(path, self.state(epoch, phase)))


def train_two_phase(cfg: TrainConfig, data: Dataset, on_epoch: EpochCallback | None = None,
                    resume: str | Path | None = None, evaluate_test: bool = True,
                    shared_features: SharedFeatures | None = None, restore_best: bool = True,
                    keep_best: bool = True) -> TrainResult:
    """Train the head with the base frozen, then fine-tune the top conv layers.

    Args:
        cfg: the trainer config.
        data: the decoded dataset (`gic.data.load_dataset`).
        on_epoch: called after every global epoch with `{epoch, phase, loss, accuracy, val_loss,
            val_accuracy, epoch_time_s}` and a `save_checkpoint(path)` function that writes the full
            trainer state (weights, optimizer, epoch, phase, best weights, history) to a folder.
        resume: a folder written by `save_checkpoint`: training continues after its epoch.
        evaluate_test: evaluate the best weights on the test split at the end (a search passes False:
            it never looks at the test split).
        shared_features: where a search keeps the phase-1 features for all its trials (see
            `SharedFeatures`); without it, this process's memory and the disk cache.
        restore_best: end with the best epoch's weights (by `cfg.monitor`); False keeps the last
            epoch's, for training on train+validation where there is no held-out split to choose by.
        keep_best: keep a copy of the best epoch's weights, in memory and in checkpoints (what
            restore_best ends with). A search trial passes False: it reports its scores, and its
            weights are never used again, so neither memory nor checkpoints hold a second copy.

    Returns:
        TrainResult with the history, the best epoch and score, the model holding the best weights,
        the test metrics and per-phase timings.
    """
    precision = runtime.resolve_precision(cfg.precision)
    trainer = _TwoPhase(cfg, data, precision, on_epoch, shared_features, keep_best=keep_best)
    state = read_checkpoint(resume) if resume is not None else None
    done = state["epoch"] if state else 0
    e1, e2 = cfg.phase1.epochs, (cfg.phase2.epochs if cfg.fine_tunes else 0)
    if state is not None and done >= e1 + e2:  # a finished run: its weights, nothing to train
        trainer.restore(state, same_phase=False)

    if done < e1:
        phase_start = time.perf_counter()  # wall time of the phase, validation included (gic bench)
        trainer.start_phase1()
        if state is not None:
            trainer.restore(state, same_phase=True)
        for epoch in range(done + 1, e1 + 1):
            trainer.after_epoch(trainer.run_epoch(epoch, phase=1))
        trainer.timing["phase1_wall_s"] = time.perf_counter() - phase_start
    if e2 > 0 and done < e1 + e2:
        phase_start = time.perf_counter()
        trainer.start_phase2(epochs_left=e1 + e2 - max(done, e1))
        if state is not None and done >= e1:  # resumed in phase 2, or exactly at the phase boundary
            trainer.restore(state, same_phase=state["phase"] == 2)
        for epoch in range(max(done, e1) + 1, e1 + e2 + 1):
            trainer.after_epoch(trainer.run_epoch(epoch, phase=2))
        trainer.timing["phase2_wall_s"] = time.perf_counter() - phase_start

    model = trainer.clf.model
    if restore_best and trainer.best_weights is not None:
        for var, value in zip(trainer.mutable, trainer.best_weights):
            var.assign(value)
    test = evaluate(model, data.test, cfg.data.batch_size) if evaluate_test and len(data.test) else None
    timing = dict(trainer.timing)
    for phase in (1, 2):
        t = timing.get(f"phase{phase}_time_s", 0.0)
        timing[f"phase{phase}_images_per_s"] = round(timing[f"phase{phase}_images"] / t, 2) if t else None
    best_acc = next((h["val_accuracy"] for h in trainer.history if h["epoch"] == trainer.best_epoch), float("nan"))
    return TrainResult(history=trainer.history, best_epoch=trainer.best_epoch, best_val_accuracy=best_acc,
                       model=model, precision=precision, test=test, timing=timing)
