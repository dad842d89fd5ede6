"""The two-phase trainer every trial runs: a frozen VGG16 base with a new head, then fine-tuning.

    result = train_two_phase(cfg, data, on_epoch=report)   # -> TrainResult

keras-io's transfer-learning recipe, as two named steps:
- `phase1`: the base frozen, compile, fit the new head;
- `phase2`: unfreeze the top `unfreeze_layers` conv layers, recompile at a low learning rate, fit.
One global epoch counter runs 1..E1+E2 over both phases, which is what the search's scheduler sees.

What the frozen layers compute is computed once, not every epoch (`gic.caches`); batches come from the
caller's arrays without a copy (`gic.pipeline`). Each epoch's order, augmentation and dropout masks
are functions of (seed, epoch) alone, so a run resumed from a checkpoint (`gic.checkpoint`) repeats the
uninterrupted run's history.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from gic import runtime
from gic.caches import AUGMENTED_SOURCES, SharedFeatures, SpeedCaches
from gic.checkpoint import read_checkpoint, write_checkpoint
from gic.config import AugmentConfig, TrainConfig
from gic.data import Dataset
from gic.errors import GicError
from gic.evaluate import evaluate
from gic.model import build_model, mutable_variables, unfreeze
from gic.pipeline import Batches
from gic.weights import base_weights

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

EpochCallback = Callable[[dict[str, Any], Callable[[str | Path], Path]], Any]


@dataclass
class TrainResult:
    """What a run delivers. `history`: one dict per global epoch (see `train_two_phase`); `model`:
    the best weights (or the last, see restore_best); `test`: `gic.evaluate.evaluate`'s metrics or
    None; `timing`: seconds and images per phase."""

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


def make_optimizer(name: str, learning_rate: float, precision: str) -> keras.optimizers.Optimizer:
    """rmsprop | adam | adamw | sgd at `learning_rate`; wrapped in loss scaling for fp16 (bf16 has
    fp32's exponent range and needs none)."""
    cls = {"rmsprop": keras.optimizers.RMSprop, "adam": keras.optimizers.Adam,
           "adamw": keras.optimizers.AdamW, "sgd": keras.optimizers.SGD}[name]
    opt = cls(learning_rate=learning_rate)
    return keras.optimizers.LossScaleOptimizer(opt) if precision == "fp16" else opt


def use_xla(cfg: TrainConfig) -> bool:
    """XLA where it helps: `auto` compiles on a GPU, never on a CPU. Measured on a 2-core AVX512-BF16
    CPU (TF 2.21, VGG16 at 128 px): XLA forward 12.5 vs 13.0 img/s in fp32 and 18.5 vs 43 img/s in
    bf16 (XLA's CPU convolutions do not use oneDNN's bf16 kernels)."""
    return runtime.has_gpu() if cfg.jit_compile == "auto" else cfg.jit_compile == "on"


class Trainer:
    """One run's model and bookkeeping, shared by both phases: compile, one epoch, the best epoch,
    and the state a checkpoint holds."""

    def __init__(self, cfg: TrainConfig, data: Dataset, precision: str, on_epoch: EpochCallback | None,
                 keep_best: bool = True):
        self.cfg, self.data, self.precision, self.on_epoch = cfg, data, precision, on_epoch
        self.keep_best = keep_best  # a copy of the best epoch's weights (to end with them); not in a search trial
        # The base weights first: loading them the first time in a process (hed, imagenet, a file)
        # draws random numbers, so the head built after the seed would differ between a process's first
        # run and its later ones (a reused search worker, or `gic train` of a trial's config).
        base_weights(cfg.model.weights, cfg.data.image_size)
        runtime.seed_everything(cfg.seed, cfg.deterministic)
        self.clf = build_model(cfg, precision)
        self.history: list[dict[str, Any]] = []
        self.best_value: float | None = None
        self.best_epoch = 0
        self.best_weights: list[np.ndarray] | None = None
        self.target: keras.Model | None = None  # the model the current phase fits (head or whole)
        self.timing: dict[str, Any] = {"phase1_time_s": 0.0, "phase2_time_s": 0.0, "phase1_images": 0,
                                       "phase2_images": 0}
        self.images = {name: self.batches(split.images, split.labels)
                       for name, split in (("train", data.train), ("validation", data.validation))}
        self.seed_generators = [layer.seed_generator for layer in self.clf.head.layers
                                if getattr(layer, "seed_generator", None) is not None]
        self.mutable = mutable_variables(self.clf, cfg.phase2.unfreeze_layers if cfg.fine_tunes else 0)

    def batches(self, x: np.ndarray, labels: np.ndarray) -> Batches:
        """Batches over `x` at this run's batch size and seed."""
        return Batches(x, labels, self.cfg.data.batch_size, self.cfg.seed)

    # -- compile and fit
    def compile(self, target: keras.Model, optimizer: str, learning_rate: float) -> None:
        """Compile `target` to train (binary cross-entropy, accuracy); it becomes what epochs fit."""
        target.compile(optimizer=make_optimizer(optimizer, learning_rate, self.precision),
                       loss="binary_crossentropy", metrics=[keras.metrics.BinaryAccuracy(name="accuracy")],
                       jit_compile=use_xla(self.cfg), steps_per_execution=self.cfg.steps_per_execution)
        self.target = target

    def compile_to_evaluate(self, model: keras.Model) -> None:
        """Compile a model that shares the trained variables, only to evaluate it."""
        model.compile(loss="binary_crossentropy", metrics=[keras.metrics.BinaryAccuracy(name="accuracy")],
                      jit_compile=use_xla(self.cfg))

    def run_epoch(self, epoch: int, phase: int, train: Batches | Callable[[int], tf.data.Dataset],
                  augment: AugmentConfig | None, validate: tuple[keras.Model, Batches]) -> None:
        """Fit the target one epoch on `train` (augmented with `augment` or not; or a function of the
        epoch that returns its batches, its time counted as the epoch's), evaluate `validate`'s model
        on its batches, keep the best, record and report the metrics."""
        start = time.perf_counter()
        batches = train(epoch) if callable(train) else train.epoch(epoch, augment)
        for gen in self.seed_generators:  # dropout masks: a function of (seed, epoch) alone
            gen.state.assign(np.array([self.cfg.seed, epoch], dtype=gen.state.dtype))
        fit = self.target.fit(batches, epochs=1, verbose=0, shuffle=False)
        train_time = time.perf_counter() - start
        model, batches = validate
        val = model.evaluate(batches.epoch(0), verbose=0, return_dict=True)
        self.timing[f"phase{phase}_time_s"] += train_time
        self.timing[f"phase{phase}_images"] += len(self.data.train)
        self.after_epoch({"epoch": epoch, "phase": phase, "loss": float(fit.history["loss"][-1]),
                          "accuracy": float(fit.history["accuracy"][-1]), "val_loss": float(val["loss"]),
                          "val_accuracy": float(val["accuracy"]),
                          "epoch_time_s": round(time.perf_counter() - start, 4)})

    def after_epoch(self, metrics: dict[str, Any]) -> None:
        """Keep the best epoch by `monitor` (and its weights when keep_best), append to the history,
        call on_epoch with a checkpoint writer."""
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

    # -- checkpoint state
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
        """The trainer state after `epoch` of `phase`, as `gic.checkpoint.write_checkpoint` takes it."""
        return {"epoch": epoch, "phase": phase, "history": self.history, "best_epoch": self.best_epoch,
                "best_value": self.best_value, "timing": self.timing, "config": self.cfg.to_dict(),
                "variables": [np.asarray(v) for v in self.phase_variables(phase)],
                "optimizer": [np.asarray(v) for v in self.target.optimizer.variables],
                "best_weights": self.best_weights}

    def restore(self, state: dict[str, Any], same_phase: bool) -> None:
        """Load a checkpoint's state; the optimizer's too when it was written in the phase now compiled.

        Raises:
            GicError: the checkpoint's variables do not fit this model (another architecture or
                unfreeze_layers).
        """
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


# Phase 1 with augmentation trains the head on each epoch's cached augmented features (the same
# numbers, SpeedCaches.augmented_features). False fits the whole model on the augmented images
# instead: the path the cache replaced, kept to test the cache against.
AUGMENTED_FEATURES = True


def phase1(t: Trainer, caches: SpeedCaches, state: dict[str, Any] | None, done: int) -> None:
    """Phase 1, epochs done+1..E1: the base frozen (as built), compile, fit the new head.

    Without augmentation the head trains on the base's cached features (far cheaper, the same
    numbers). With it, on each epoch's augmented features, computed once per (settings, seed, epoch)
    and shared by every run with the same ones (`SpeedCaches.augmented_features`: the same numbers as
    fitting the whole model on the augmented images); the epoch's feature pass counts as its time,
    and `timing["phase1_aug_features_<source>"]` counts the epochs by where their features came from.
    Either way the head validates on the validation split's cached features.
    """
    cfg, clf, p1 = t.cfg, t.clf, t.cfg.phase1
    phase_start = time.perf_counter()  # wall time of the phase, validation included (gic bench)
    on_features = not (p1.augment and cfg.model.augmentation.enabled)
    augment = None
    if on_features:
        start = time.perf_counter()  # the one-off feature pass counts as phase-1 time
        features = caches.base_features()
        t.timing["phase1_time_s"] += time.perf_counter() - start
        train, target = t.batches(features["train"], t.data.train.labels), clf.head
        validation = features["validation"]
    else:
        start = time.perf_counter()
        validation = caches.validation_features()
        t.timing["phase1_time_s"] += time.perf_counter() - start
        if AUGMENTED_FEATURES:
            train, target = functools.partial(augmented_epoch, t, caches), clf.head
        else:
            train, augment, target = t.images["train"], cfg.model.augmentation, clf.model
            t.compile_to_evaluate(clf.head)  # the head shares the model's variables
    validate = (clf.head, t.batches(validation, t.data.validation.labels))
    t.compile(target, p1.optimizer, p1.learning_rate)
    if state is not None:
        t.restore(state, same_phase=True)
    for epoch in range(done + 1, p1.epochs + 1):
        t.run_epoch(epoch, 1, train, augment, validate)
    t.timing["phase1_wall_s"] = time.perf_counter() - phase_start


def augmented_epoch(t: Trainer, caches: SpeedCaches, epoch: int) -> tf.data.Dataset:
    """Epoch `epoch` of phase 1 with augmentation, for the head: its augmented train features in
    the epoch's order, as the epoch's batches (float32 (B, 512), float32 labels (B, 1)), and the
    count of where they came from in `t.timing`."""
    features, labels, source = caches.augmented_features(epoch)
    for name in AUGMENTED_SOURCES:
        t.timing.setdefault(f"phase1_aug_features_{name}", 0)
    t.timing[f"phase1_aug_features_{source}"] += 1
    return t.batches(features, labels).epoch(0)


def phase2(t: Trainer, caches: SpeedCaches, state: dict[str, Any] | None, done: int) -> None:
    """Phase 2, epochs max(done, E1)+1..E1+E2: unfreeze the top `unfreeze_layers` conv layers,
    recompile at phase 2's (low) learning rate, fit the whole model.

    Validation runs the top layers and the head on the cached output of the frozen lower layers
    where that pays (`SpeedCaches.lower_validation`), else the whole model.
    """
    cfg, clf, p2 = t.cfg, t.clf, t.cfg.phase2
    e1, e2 = cfg.phase1.epochs, p2.epochs
    phase_start = time.perf_counter()
    unfreeze(clf.base, p2.unfreeze_layers)
    t.compile(clf.model, p2.optimizer, p2.learning_rate)
    validate = (clf.model, t.images["validation"])
    lower = caches.lower_validation(p2.unfreeze_layers, epochs_left=e1 + e2 - max(done, e1))
    if lower is not None:
        upper, outputs = lower
        t.compile_to_evaluate(upper)
        validate = (upper, t.batches(outputs, t.data.validation.labels))
        t.timing["phase2_validation_cached"] = True
    if state is not None and done >= e1:  # resumed in phase 2, or exactly at the phase boundary
        t.restore(state, same_phase=state["phase"] == 2)
    for epoch in range(max(done, e1) + 1, e1 + e2 + 1):
        t.run_epoch(epoch, 2, t.images["train"], cfg.model.augmentation, validate)
    t.timing["phase2_wall_s"] = time.perf_counter() - phase_start


def train_two_phase(cfg: TrainConfig, data: Dataset, on_epoch: EpochCallback | None = None,
                    resume: str | Path | None = None, evaluate_test: bool = True,
                    shared_features: SharedFeatures | None = None, restore_best: bool = True,
                    keep_best: bool = True) -> TrainResult:
    """Train the head with the base frozen, then fine-tune the top conv layers.

    Args:
        cfg: the trainer config.
        data: the decoded dataset (`gic.data.load_dataset`).
        on_epoch: called after every global epoch with `{epoch, phase, loss, accuracy, val_loss,
            val_accuracy, epoch_time_s}` (seconds) and a `save_checkpoint(path)` function that writes
            the trainer state (weights, optimizer, epoch, phase, best weights, history) to a folder.
        resume: a folder written by `save_checkpoint`: training continues after its epoch.
        evaluate_test: evaluate the best weights on the test split at the end (a search passes False:
            it never looks at the test split).
        shared_features: where a search keeps the phase-1 features for all its trials (see
            `gic.caches.SharedFeatures`); without it, this process's memory and the disk cache.
        restore_best: end with the best epoch's weights (by `cfg.monitor`); False keeps the last
            epoch's, for training on train+validation where there is no held-out split to choose by.
        keep_best: keep a copy of the best epoch's weights, in memory and in checkpoints (what
            restore_best ends with). A search trial passes False: it reports its scores, and its
            weights are never used again, so neither memory nor checkpoints hold a second copy.

    Returns:
        TrainResult with the history, the best epoch and score, the model holding the best weights,
        the test metrics and per-phase timings (`phaseN_time_s` of fitting, `phaseN_wall_s` of the
        whole phase, `phaseN_images_per_s`).

    Raises:
        GicError: `resume` is not a usable checkpoint, or one of another model; ModelError: the base
            weights cannot be resolved.
    """
    precision = runtime.resolve_precision(cfg.precision)
    t = Trainer(cfg, data, precision, on_epoch, keep_best=keep_best)
    caches = SpeedCaches(t.clf, cfg, data, precision, shared_features)
    state = read_checkpoint(resume) if resume is not None else None
    done = state["epoch"] if state else 0
    e1, e2 = cfg.phase1.epochs, (cfg.phase2.epochs if cfg.fine_tunes else 0)
    if state is not None and done >= e1 + e2:  # a finished run: its weights, nothing to train
        t.restore(state, same_phase=False)
    if done < e1:
        phase1(t, caches, state, done)
    if e2 > 0 and done < e1 + e2:
        phase2(t, caches, state, done)

    if restore_best and t.best_weights is not None:
        for var, value in zip(t.mutable, t.best_weights):
            var.assign(value)
    test = evaluate(t.clf.model, data.test, cfg.data.batch_size) if evaluate_test and len(data.test) else None
    timing = dict(t.timing)
    for phase in (1, 2):
        seconds = timing.get(f"phase{phase}_time_s", 0.0)
        timing[f"phase{phase}_images_per_s"] = round(timing[f"phase{phase}_images"] / seconds, 2) if seconds else None
    best_acc = next((h["val_accuracy"] for h in t.history if h["epoch"] == t.best_epoch), float("nan"))
    return TrainResult(history=t.history, best_epoch=t.best_epoch, best_val_accuracy=best_acc,
                       model=t.clf.model, precision=precision, test=test, timing=timing)
