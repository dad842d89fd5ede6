"""What the frozen layers of a phase compute once instead of every epoch: three speed caches, one interface.

    caches = SpeedCaches(clf, cfg, data, precision)
    caches.base_features()              # phase 1 without augmentation: {"train", "validation"} (N, 512)
    caches.validation_features()        # phase 1 with augmentation: validation (N_val, 512)
    caches.lower_validation(n, epochs)  # phase 2: (upper model, the frozen lower layers' validation output)

None of them changes a number, only how often it is computed:
- With the base frozen and no augmentation, the base's pooled output of an image never changes, so
  phase 1 trains the head on it (Chollet measured ~70x per epoch). Kept per (dataset fingerprint, image size, weights id,
  precision) in this process's memory, then a search's shared store (`SharedFeatures`), then
  `<cache dir>/features/<key>.npz` on disk, else computed (and written to disk).
- Validation images are never augmented, so with augmentation phase 1 still validates the head on
  the validation split's cached features.
- Phase 2 validates through conv layers that stay frozen: their output is computed once and each
  epoch runs only the top n convs and the head on it.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Callable

import numpy as np

from gic.config import TrainConfig
from gic.data import Dataset
from gic.files import atomic_path
from gic.model import Classifier, conv_layers, split_model
from gic.pipeline import in_order
from gic.weights import weights_id

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

# Phase-2 validation cache budget (host memory). At 180 px with 400 validation images in bf16 a cut in
# block4 or above fits (n <= 6: <= 200 MB); n >= 7 (block3, 45 x 45 x 256) validates the whole model.
LOWER_CACHE_MAX_BYTES = 256 * 2**20

# A search shares features between its trials, on every node: `shared(key, load)` returns the
# features, calling `load()` (disk, else compute) only where no other trial has them (tune.features).
SharedFeatures = Callable[[str, Callable[[], dict[str, np.ndarray]]], dict[str, np.ndarray]]

_FEATURE_CACHE: dict[str, dict[str, np.ndarray]] = {}  # per process: a reused search worker skips the pass


def feature_cache_key(cfg: TrainConfig, data: Dataset, precision: str) -> str:
    """`<dataset fingerprint>-<image size>-<weights id>-<precision>`: what the base's features depend on.

    Raises:
        OSError: `model.weights` names a file that cannot be read (its content is part of the id).
    """
    return f"{data.fingerprint}-{cfg.data.image_size}-{weights_id(cfg.model.weights, cfg.seed)}-{precision}"


def forget_features() -> None:
    """Empty this process's memory of phase-1 features (a search hands every trial its features anew)."""
    _FEATURE_CACHE.clear()


def cache_root(cfg: TrainConfig) -> Path:
    """`data.cache_dir`, else `$GIC_CACHE_DIR`, else `~/.cache/gic`."""
    return Path(cfg.data.cache_dir or os.environ.get("GIC_CACHE_DIR") or Path.home() / ".cache" / "gic")


class SpeedCaches:
    """The three caches of one training run (see the module docstring).

    Args:
        clf: the model being trained (`gic.model.build_model`).
        cfg: its config (data.batch_size, data.image_size, model.weights, seed, data.cache_dir).
        data: the decoded dataset.
        precision: the resolved precision (fp32 | bf16 | fp16): features differ between them.
        shared: a search's store of phase-1 features shared by its trials, or None.
    """

    def __init__(self, clf: Classifier, cfg: TrainConfig, data: Dataset, precision: str,
                 shared: SharedFeatures | None = None):
        self.clf, self.cfg, self.data, self.shared = clf, cfg, data, shared
        self.key = feature_cache_key(cfg, data, precision)

    def base_features(self) -> dict[str, np.ndarray]:
        """Pooled float32 base features of the train and validation images, {"train": (N_train, 512),
        "validation": (N_val, 512)}: this process's memory, the shared store, the disk, else computed.
        A damaged cache file is recomputed; a cache disk that cannot be written costs speed only."""
        if self.key not in _FEATURE_CACHE:
            load = self._disk_or_compute
            _FEATURE_CACHE[self.key] = self.shared(self.key, load) if self.shared is not None else load()
        return _FEATURE_CACHE[self.key]

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
