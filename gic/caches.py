"""What the frozen layers of a phase compute once instead of every epoch: four speed caches, one interface.

    caches = SpeedCaches(clf, cfg, data, precision)
    caches.base_features()              # phase 1 without augmentation: {"train", "validation"} (N, 512)
    caches.augmented_features(epoch)    # phase 1 with augmentation: epoch's train features (N, 512), labels (N,)
    caches.validation_features()        # phase 1 with augmentation: validation (N_val, 512)
    caches.lower_validation(n, epochs)  # phase 2: (upper model, the frozen lower layers' validation output)

None of them changes a number, only how often it is computed:
- With the base frozen and no augmentation, the base's pooled output of an image never changes, so
  phase 1 trains the head on it (Chollet measured ~70x per epoch). Kept per (dataset fingerprint, image size, weights id,
  precision) in this process's memory, then a search's shared store (`SharedFeatures`), then
  `<cache dir>/features/<key>.npz` on disk, else computed (and written to disk).
- With augmentation, an epoch's augmented images are a function of (seed, epoch, batch) alone
  (`gic.pipeline`), and the frozen base has no dropout or batch statistics, so the model's output on
  an augmented batch is the head's output on that batch's pooled base features. Those features are
  computed once per (the key above, augmentation settings, seed, batch size, epoch), in the epoch's
  batch order, and phase 1 trains the head on them: every run with the same settings, a search's
  trials and later searches alike, shares them. This process keeps only the epoch in use; then the
  search's shared store, then `<cache dir>/features/<key>.npy` on disk, else computed.
- Validation images are never augmented, so with augmentation phase 1 still validates the head on
  the validation split's cached features.
- Phase 2 validates through conv layers that stay frozen: their output is computed once and each
  epoch runs only the top n convs and the head on it.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from gic.config import TrainConfig
from gic.data import Dataset
from gic.files import atomic_path
from gic.model import FEATURE_DIM, Classifier, conv_layers, split_model
from gic.pipeline import Batches, in_order
from gic.weights import weights_id

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

# Phase-2 validation cache budget (host memory). At 180 px with 400 validation images in bf16 a cut in
# block4 or above fits (n <= 6: <= 200 MB); n >= 7 (block3, 45 x 45 x 256) validates the whole model.
LOWER_CACHE_MAX_BYTES = 256 * 2**20

# Bump when gic.model.augment_batch or gic.pipeline's batch seeding changes what an epoch's augmented
# images are: cached augmented features of the old version are then never read.
AUGMENT_VERSION = 1


class SharedFeatures(Protocol):
    """A search's store of phase-1 features shared by its trials, on every node (tune.features):
    `shared(key, load, kind)` returns the features stored under `key`, calling `load()` (this
    process: disk, else compute) only where the store does not have them, and then offers them to
    it. `kind` says which features: `base` ({"train", "validation"}: phase 1 without augmentation)
    or `augmented` ({"train"}: one epoch of phase 1 with augmentation)."""

    def __call__(self, key: str, load: Callable[[], dict[str, np.ndarray]],
                 kind: str = "base") -> dict[str, np.ndarray]: ...


_FEATURE_CACHE: dict[str, dict[str, np.ndarray]] = {}  # per process: a reused search worker skips the pass
# The augmented features of the epoch in use, and no other: all epochs of all settings would grow
# without bound (3.3 MB per epoch on the seed split); the shared store and the disk hold the rest.
_AUGMENTED_LAST: dict[str, np.ndarray] = {}
AUGMENTED_SOURCES = ("memory", "shared", "disk", "computed")  # where an epoch's augmented features came from


def feature_cache_key(cfg: TrainConfig, data: Dataset, precision: str) -> str:
    """`<dataset fingerprint>-<image size>-<weights id>-<precision>`: what the base's features depend on.

    Raises:
        OSError: `model.weights` names a file that cannot be read (its content is part of the id).
    """
    return f"{data.fingerprint}-{cfg.data.image_size}-{weights_id(cfg.model.weights, cfg.seed)}-{precision}"


def augmented_cache_key(cfg: TrainConfig, data: Dataset, precision: str, epoch: int) -> str:
    """`feature_cache_key` + the augmentation (flip, rotation, zoom, as applied: after any strength
    scaling) + seed + batch size + the global epoch (1-based): what one phase-1 epoch's augmented
    features depend on. Settings that differ in any of them never share.

    Raises:
        OSError: as `feature_cache_key`.
    """
    aug = cfg.model.augmentation
    return (f"{feature_cache_key(cfg, data, precision)}-aug{AUGMENT_VERSION}-{aug.flip}-r{aug.rotation!r}"
            f"-z{aug.zoom!r}-s{cfg.seed}-b{cfg.data.batch_size}-e{epoch}")


def forget_features() -> None:
    """Empty this process's memory of phase-1 features (a search hands every trial its features anew)."""
    _FEATURE_CACHE.clear()
    _AUGMENTED_LAST.clear()


def cache_root(cfg: TrainConfig) -> Path:
    """`data.cache_dir`, else `$GIC_CACHE_DIR`, else `~/.cache/gic`."""
    return Path(cfg.data.cache_dir or os.environ.get("GIC_CACHE_DIR") or Path.home() / ".cache" / "gic")


class SpeedCaches:
    """The four caches of one training run (see the module docstring).

    Args:
        clf: the model being trained (`gic.model.build_model`).
        cfg: its config (data.batch_size, data.image_size, model.weights, seed, data.cache_dir).
        data: the decoded dataset.
        precision: the resolved precision (fp32 | bf16 | fp16): features differ between them.
        shared: a search's store of phase-1 features shared by its trials, or None.
    """

    def __init__(self, clf: Classifier, cfg: TrainConfig, data: Dataset, precision: str,
                 shared: SharedFeatures | None = None):
        self.clf, self.cfg, self.data, self.shared, self.precision = clf, cfg, data, shared, precision
        self.key = feature_cache_key(cfg, data, precision)

    def base_features(self) -> dict[str, np.ndarray]:
        """Pooled float32 base features of the train and validation images, {"train": (N_train, 512),
        "validation": (N_val, 512)}: this process's memory, the shared store, the disk, else computed.
        A damaged cache file is recomputed; a cache disk that cannot be written costs speed only."""
        if self.key not in _FEATURE_CACHE:
            load = self._disk_or_compute
            _FEATURE_CACHE[self.key] = self.shared(self.key, load, kind="base") if self.shared is not None else load()
        return _FEATURE_CACHE[self.key]

    def augmented_features(self, epoch: int) -> tuple[np.ndarray, np.ndarray, str]:
        """The pooled float32 base features of global epoch `epoch`'s augmented train batches, what
        the model's base computes on them in phase 1: (features (N_train, 512), labels (N_train,)
        int, source), both in the order the epoch visits the images (`Batches.order`), so batches of
        `data.batch_size` over them in order are the epoch's batches. `source` is where the features
        came from: memory (this process, the epoch in use), shared (the search's store), disk, or
        computed (one forward pass of the frozen base over the augmented images, then written to disk).

        A damaged cache file is recomputed; a cache disk that cannot be written costs speed only.

        Raises:
            ValueError: `model.augmentation` changes nothing (no features to augment).
        """
        if not self.cfg.model.augmentation.enabled:
            raise ValueError("augmented_features: model.augmentation is disabled")
        train = self.data.train
        batches = Batches(train.images, train.labels, self.cfg.data.batch_size, self.cfg.seed)
        labels = np.asarray(train.labels)[batches.order(epoch)]
        key = augmented_cache_key(self.cfg, self.data, self.precision, epoch)
        if key in _AUGMENTED_LAST:
            return _AUGMENTED_LAST[key], labels, "memory"
        sources: list[str] = []

        def load() -> dict[str, np.ndarray]:
            features, source = self._augmented_disk_or_compute(key, batches, epoch)
            sources.append(source)
            return {"train": features}

        feats = self.shared(key, load, kind="augmented") if self.shared is not None else load()
        _AUGMENTED_LAST.clear()
        _AUGMENTED_LAST[key] = feats["train"]
        return feats["train"], labels, sources[0] if sources else "shared"

    def _augmented_disk_or_compute(self, key: str, batches: Batches, epoch: int) -> tuple[np.ndarray, str]:
        path = cache_root(self.cfg) / "features" / f"{key}.npy"
        shape = (len(self.data.train), FEATURE_DIM)
        if path.is_file():
            try:
                features = np.load(path, allow_pickle=False)
                if features.shape == shape and features.dtype == np.float32:
                    return features, "disk"
            except (OSError, ValueError, EOFError):
                pass  # a damaged cache file is recomputed, never trusted
        if len(self.data.train):
            features = np.asarray(self.clf.features.predict(batches.epoch(epoch, self.cfg.model.augmentation),
                                                            verbose=0), dtype=np.float32)
        else:
            features = np.zeros(shape, dtype=np.float32)
        try:
            with atomic_path(path) as tmp:
                np.save(tmp, features)
        except OSError:
            pass  # a read-only or full cache disk costs speed, not the run
        return features, "computed"

    def validation_features(self) -> np.ndarray:
        """Pooled float32 base features of the validation images alone, (N_val, 512), for phase 1
        with augmentation: evaluating the head on them skips a full base forward of the validation
        split per epoch (20% of the seed split's per-epoch arithmetic). The full cache is used when there."""
        if self.key in _FEATURE_CACHE:
            return _FEATURE_CACHE[self.key]["validation"]
        vkey = f"{self.key}-validation"
        if vkey not in _FEATURE_CACHE:
            _FEATURE_CACHE[vkey] = {"validation": self._forward(self.data.validation.images)}
        return _FEATURE_CACHE[vkey]["validation"]

    def lower_validation(self, unfreeze_layers: int, epochs_left: int) -> tuple[keras.Model, np.ndarray] | None:
        """(upper, outputs) for phase 2: `outputs` is the validation images' output of the conv layers
        below the top `unfreeze_layers` (frozen while those train), `upper` the rest of the model (not
        compiled; it shares the model's weights), so `upper(outputs)` is the model's validation output.

        None where it cannot pay off (under 2 epochs left, no frozen conv layer, no validation images)
        or would take more than `LOWER_CACHE_MAX_BYTES` of memory: phase 2 then validates the whole model.
        """
        n, validation = unfreeze_layers, self.data.validation
        if epochs_left < 2 or not 1 <= n < len(conv_layers(self.clf.base)) or not len(validation):
            return None
        lower, upper = split_model(self.clf, n)
        itemsize = tf.as_dtype(lower.output.dtype).size
        if len(validation) * math.prod(lower.output.shape[1:]) * itemsize > LOWER_CACHE_MAX_BYTES:
            return None
        return upper, lower.predict(in_order(validation.images, self.cfg.data.batch_size), verbose=0)

    def _forward(self, images: np.ndarray) -> np.ndarray:
        return self.clf.features.predict(in_order(images, self.cfg.data.batch_size), verbose=0)

    def _disk_or_compute(self) -> dict[str, np.ndarray]:
        path = cache_root(self.cfg) / "features" / f"{self.key}.npz"
        train, validation = self.data.train, self.data.validation
        if path.is_file():
            try:
                with np.load(path, allow_pickle=False) as z:
                    feats = {k: z[k] for k in ("train", "validation")}
                if len(feats["train"]) == len(train) and len(feats["validation"]) == len(validation):
                    return feats
            except (OSError, ValueError, KeyError):
                pass  # a damaged cache file is recomputed, never trusted
        feats = {"train": self._forward(train.images), "validation": self._forward(validation.images)}
        try:
            with atomic_path(path) as tmp:
                np.savez(tmp, **feats)
        except OSError:
            pass  # a read-only or full cache disk costs speed, not the run
        return feats
