"""Phase-1 features shared by every trial of a search, on every node, through Ray's object store.

With phase 1 on cached features, the frozen base's output for (dataset, image size, weights,
precision) is the same for every trial. The first trial that needs it loads it (its node's disk
cache, else one pass of the base) while the others wait; the store then holds it in the object
store and every later trial, on any node, reads that copy instead of running the base again.

    store = FeatureStore.remote()                       # the driver, once per search
    shared = shared_features(store, record)             # a trial: gic's SharedFeatures hook
    train_two_phase(cfg, data, shared_features=shared)
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np
import ray

LEASE_S = 900.0  # a trial loading features that has not delivered them by then is presumed dead
POLL_S = 0.5


@ray.remote(num_cpus=0)
class FeatureStore:
    """Keys -> features in the object store, plus who is loading which key right now."""

    def __init__(self) -> None:
        self.refs: dict[str, ray.ObjectRef] = {}
        self.leases: dict[str, float] = {}

    def claim(self, key: str) -> tuple[str, list | None]:
        """("ready", [ref]) | ("load", None): the caller loads and puts | ("wait", None)."""
        if key in self.refs:
            return "ready", [self.refs[key]]  # in a list: the caller gets the reference, not a copy
        started = self.leases.get(key)
        if started is None or time.time() - started > LEASE_S:
            self.leases[key] = time.time()
            return "load", None
        return "wait", None

    def put(self, key: str, feats: dict[str, np.ndarray]) -> None:
        self.refs[key] = ray.put(feats)  # owned by the store: it outlives the trial that loaded it
        self.leases.pop(key, None)

    def release(self, key: str) -> None:
        self.leases.pop(key, None)


def shared_features(store: Any, record: dict[str, str] | None = None) -> Callable:
    """gic's `SharedFeatures` hook over a FeatureStore; `record["source"]` says what happened:
    `loaded` (this trial loaded them for everyone) or `shared` (another trial had)."""
    record = record if record is not None else {}

    def get(key: str, load: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        while True:
            status, ref = ray.get(store.claim.remote(key))
            if status == "ready":
                record["source"] = "shared"
                return ray.get(ref[0])
            if status == "load":
                try:
                    feats = load()
                except BaseException:
                    store.release.remote(key)
                    raise
                ray.get(store.put.remote(key, feats))
                record["source"] = "loaded"
                return feats
            time.sleep(POLL_S)

    return get
