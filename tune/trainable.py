"""One trial: the trainer config from the trial's params, gic's two-phase trainer, a report per epoch.

The dataset (train and validation splits), the base weights and the phase-1 features arrive
through Ray's object store (`tune.with_parameters`), resolved once by the driver (tune.features):
trials on any node get the same arrays without a shared filesystem or a download, and trials on one
node share one read-only copy. Each epoch reports `val_accuracy` (ASHA's metric, with
`training_iteration` = the global epoch) and, every `checkpoint_every` epochs and at the end, a
checkpoint of the full trainer state, from which a crashed or resumed trial continues.

A worker process is reused across trials (`reuse_actors`): TensorFlow is imported and configured
once per process, and the base weights and phase-1 features stay in its memory; Keras' state (models,
traced steps) is cleared at the start of every trial, so a worker's memory does not grow trial
over trial. A trial with a GPU share checks that it sees a GPU and that its memory cap took effect.
"""

from __future__ import annotations

import functools
import json
import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from gic.config import TrainConfig

from tune.config import cpu_threads, gpu_memory_cap_mb
from tune.space import apply_params

BEST_EPOCH_KEY = "best_epoch"  # the epoch of the trial's best val_accuracy so far (its objective's epoch)
COMPUTE_KEY = "compute"  # cumulative compute after this epoch (gic.cost): ASHA's time with search.budget compute
PLANNED_KEY = "epochs_planned"  # the trial's own E1+E2 (E1 when it does not fine-tune)
STATE_FILE = "tune_state.json"  # beside the trainer's files in each checkpoint

_configured = False  # TensorFlow can be configured once per process; reused workers keep it


class GpuError(RuntimeError):
    """A trial holds a GPU share but cannot use it as promised (no GPU visible, no memory figure, no
    memory cap): it fails loudly instead of training on the CPU or uncapped while holding the slot."""


def _nvml():
    """NVML's Python binding: nvidia-ml-py's `pynvml`, else the copy Ray bundles."""
    try:
        import pynvml
    except ImportError:
        from ray._private.thirdparty import pynvml
    return pynvml


def gpu_total_memory_mb(gpu_id: str | int) -> int:
    """Total memory of GPU `gpu_id` (an index or a UUID, as `ray.get_gpu_ids()` gives it), from NVML.

    Raises:
        GpuError: NVML cannot be loaded or cannot read the GPU.
    """
    nvml = _nvml()
    try:
        nvml.nvmlInit()
        try:
            text = str(gpu_id)
            handle = (nvml.nvmlDeviceGetHandleByIndex(int(text)) if text.isdigit()
                      else nvml.nvmlDeviceGetHandleByUUID(text))
            return int(nvml.nvmlDeviceGetMemoryInfo(handle).total // 2**20)
        finally:
            nvml.nvmlShutdown()
    except Exception as err:  # noqa: BLE001 - NVMLError, a missing libnvidia-ml: the same to the user
        raise GpuError(f"NVML cannot read the memory of GPU {gpu_id} ({type(err).__name__}: {err}); without it "
                       "the trials that share this GPU would run with no memory cap") from None


def check_gpu(gpu_share: float, cap_mb: int | None) -> None:
    """A trial holding `gpu_share` sees a GPU, and its memory cap (when it has one) took effect.

    Raises:
        GpuError: naming what is wrong.
    """
    if gpu_share <= 0:
        return
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        raise GpuError(f"this trial holds {gpu_share:g} GPU but TensorFlow sees none (CUDA_VISIBLE_DEVICES="
                       f"{os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')!r}; a TensorFlow without CUDA, or a driver "
                       "problem): it would train on the CPU while holding the GPU share")
    if cap_mb:
        limits = [c.memory_limit for c in (tf.config.get_logical_device_configuration(gpus[0]) or [])]
        if limits != [cap_mb]:
            raise GpuError(f"this trial's GPU memory cap of {cap_mb} MB did not take effect (TensorFlow has "
                           f"{limits or 'no cap'}): the GPU was initialised before the cap was set")


def configure_worker(settings: dict[str, Any]) -> dict[str, Any]:
    """Threads and GPU memory cap of this worker process, before its first TensorFlow op; then the
    GPU checks (check_gpu). A reused worker keeps its first configuration and is checked again."""
    global _configured
    threads = cpu_threads(settings["cpu"])
    total = None
    if settings["gpu"] > 0:
        import ray

        gpu_ids = ray.get_gpu_ids()
        if not gpu_ids:
            raise GpuError(f"this trial holds {settings['gpu']:g} GPU but Ray assigned it none")
        total = gpu_total_memory_mb(gpu_ids[0])
    cap = gpu_memory_cap_mb(settings["gpu"], total, settings["gpu_memory_margin_mb"])
    if not _configured:
        from gic.runtime import configure_tensorflow

        configure_tensorflow(threads=threads, gpu_memory_mb=cap)
        if not os.environ.get("GIC_TF_VERBOSE"):  # retracing notes of each new trial's model: not for users
            import tensorflow as tf

            tf.get_logger().setLevel("ERROR")
        _configured = True
    check_gpu(settings["gpu"], cap)
    return {"threads": threads, "gpu_memory_cap_mb": cap, "gpu_total_mb": total}


def reset_keras() -> None:
    """Drop what an earlier trial left in this (reused) worker: Keras' global state, TensorFlow's
    graph and kernel caches, and the trial's models (garbage-collected). The base weights and the
    phase-1 features are plain arrays in gic's caches and stay. The first call in a process then
    freezes what is alive (TensorFlow and Keras: ~400k objects) out of the collector's scans
    (gc.freeze), so each later reset scans the last trial's objects only: 0.07 s instead of 0.5 s
    on the loaded 2-core machine (gic-tune bench's "TensorFlow set-up, Keras reset")."""
    import gc

    import keras

    keras.backend.clear_session(free_memory=True)
    if not gc.get_freeze_count():
        gc.freeze()


def _node_id() -> str:
    import ray

    try:
        return ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001
        return ""


def run_trial(config: dict[str, Any], data: Any = None, base: dict[str, Any] | None = None,
              settings: dict[str, Any] | None = None, weights: dict[str, Any] | None = None,
              features: dict[str, Any] | None = None) -> None:
    """The Ray Tune function trainable.

    Args:
        config: the trial's params, `{dotted trainer key: value}`, from the searcher.
        data: the gic Dataset without its test split (from the object store).
        base: the search's base trainer config as a dict.
        settings: cpu, gpu, gpu_memory_margin_mb, checkpoint_every, dry_run, dry_run_epoch_s
            (tune.search.trial_settings).
        weights: the base weights the driver resolved (tune.features.resolve_weights), or None.
        features: the phase-1 features the driver computed once (tune.features), or None.
    """
    from ray import tune

    entered = time.time()  # tune.bench: when this trial's function began, on the worker's clock
    settings = settings or {}
    shipped_features, features = features, {}  # features: tune.features records where this trial's came from
    if settings.get("dry_run"):  # NOT A REAL SEARCH: synthetic metrics, no TensorFlow (tune.dryrun)
        from tune.dryrun import dry_run_train

        worker = {"threads": 0, "gpu_memory_cap_mb": None, "gpu_total_mb": None}
        train_two_phase = functools.partial(dry_run_train, epoch_s=float(settings.get("dry_run_epoch_s", 0.0)))
    else:
        worker = configure_worker(settings)  # threads, GPU memory cap, and the GPU checks
        reset_keras()  # a reused worker: nothing of the previous trial's models stays
        from gic.caches import forget_features
        from gic.train import train_two_phase
        from gic.weights import provide_base_weights

        from tune.features import search_features

        if shipped_features is not None:
            forget_features()  # a view of the shipped copy, asked for anew: each trial reports features_from
        if weights is not None:  # resolved by the driver: this trial downloads and reads nothing
            provide_base_weights(weights["weights"], weights["arrays"], weights["id"])
        # phase-1 features computed once for the search; no best-weights copy (a trial's weights are
        # never used again: its scores are what it reports)
        train_two_phase = functools.partial(train_two_phase, keep_best=False,
                                            shared_features=search_features(shipped_features, features))

    prepared = time.time()  # tune.bench: TensorFlow configured and Keras reset
    cfg = apply_params(TrainConfig.model_validate(base or {}), config)
    planned = cfg.total_epochs
    from gic.cost import trial_costs

    costs = trial_costs(cfg)
    every = int(settings.get("checkpoint_every", 1))
    node_id = _node_id()
    started = time.time()

    checkpoint = tune.get_checkpoint()
    resume_dir: str | None = None
    history: list[float] = []
    resumed_from = 0
    if checkpoint is not None:
        # A private copy: Ray may delete the checkpoint it came from (num_to_keep) while we train.
        resume_dir = tempfile.mkdtemp(prefix="gic-resume-")
        checkpoint.to_directory(resume_dir)
        state_path = Path(resume_dir, STATE_FILE)
        if state_path.is_file():
            state = json.loads(state_path.read_text())
            history = list(state.get("history", []))
            resumed_from = int(state.get("epoch", len(history)))

    last_report: dict[str, float] = {}  # the previous epoch's checkpoint write and report, in seconds

    def on_epoch(metrics: dict[str, Any], save_checkpoint) -> None:
        ended = time.time()
        epoch = int(metrics["epoch"])
        del history[epoch - 1:]
        value = metrics.get("val_accuracy")
        history.append(None if value is None or not math.isfinite(float(value)) else float(value))
        seen = [h for h in history if h is not None]
        best = max(seen) if seen else None
        result = {k: (float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v)
                  for k, v in metrics.items() if isinstance(v, (int, float, str, bool))}
        result.update({
            "epoch": epoch,
            PLANNED_KEY: planned,
            "best_val_accuracy": best if best is not None else float("nan"),  # the objective (tune.config.METRIC)
            BEST_EPOCH_KEY: history.index(best) + 1 if best is not None else 0,
            COMPUTE_KEY: costs[epoch - 1],
            "node_id": node_id,
            "worker_pid": os.getpid(),  # a reused worker keeps its pid: cold vs warm trials (tune.bench)
            "data_fingerprint": str(getattr(data, "fingerprint", ""))[:16],  # the object-store copy it trained on
            "resumed_from_epoch": resumed_from,
            "worker_threads": worker["threads"],
            "gpu_memory_cap_mb": worker["gpu_memory_cap_mb"] or 0,
            "trial_wall_s": time.time() - started,
            **worker_memory(data),
            "features_from": features.get("source", ""),  # search (shipped), computed, "" (worker memory / unused)
            "aug_features_from": features.get("augmented", ""),  # this epoch's augmented ones: search (store), computed
            # worker clock (time.time()) and the previous epoch's checkpoint_s and report_s, for tune.bench
            "epoch_end_at": ended, "trial_entered_at": entered, "trial_prepared_at": prepared, **last_report,
        })
        began = written = time.time()
        if epoch % every == 0 or epoch == planned:
            with tempfile.TemporaryDirectory(prefix="gic-ckpt-") as tmp:
                save_checkpoint(tmp)
                Path(tmp, STATE_FILE).write_text(json.dumps({"epoch": epoch, "history": history}))
                written = time.time()
                # report() persists the checkpoint to storage before it returns.
                tune.report(result, checkpoint=tune.Checkpoint.from_directory(tmp))
        else:
            tune.report(result)
        last_report.update(checkpoint_s=written - began, report_s=time.time() - written)

    try:
        train_two_phase(cfg, data, on_epoch=on_epoch, resume=resume_dir, evaluate_test=False)
    finally:
        if resume_dir:
            shutil.rmtree(resume_dir, ignore_errors=True)


def worker_memory(data: Any) -> dict[str, Any]:
    """This worker's memory: USS (private to it: what one more concurrent trial costs) and RSS, in MB,
    and whether the dataset is the object store's shared, read-only copy (not one per trial)."""
    import psutil

    info = psutil.Process().memory_full_info()
    images = getattr(getattr(data, "train", None), "images", None)
    shared = images is not None and not images.flags.writeable and not images.flags.owndata
    nbytes = sum(getattr(data, s).images.nbytes for s in ("train", "validation", "test")) if images is not None else 0
    return {"worker_uss_mb": round(info.uss / 2**20, 1), "worker_rss_mb": round(info.rss / 2**20, 1),
            "data_shared": bool(shared), "data_mb": round(nbytes / 2**20, 1)}


def trial_dirname(trial) -> str:
    """Short trial folder names (Ray's default puts every param in the name)."""
    return f"trial_{trial.trial_id}"


os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
