"""Process-level TensorFlow set-up: threads, GPU memory, precision and seeds.

`configure_tensorflow` must run before the first TensorFlow op of a process: TensorFlow maps the
whole GPU on first use, and thread pools cannot change once created. A trial of the search calls it
first thing; `gic train` calls it too.
"""

from __future__ import annotations

import contextlib
import functools
import os
import random

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402


@contextlib.contextmanager
def quiet_stderr():
    """Silence file descriptor 2 (C++ writes too): TensorFlow's start-up banners (oneDNN, CUDA
    stubs, cuInit on GPU-less machines) are printed before its logging honours
    TF_CPP_MIN_LOG_LEVEL. Python exceptions still propagate. GIC_TF_VERBOSE=1 keeps them."""
    if os.environ.get("GIC_TF_VERBOSE"):
        yield
        return
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _import_tensorflow_quietly() -> None:
    import sys

    if "tensorflow" not in sys.modules:
        with quiet_stderr():
            import tensorflow  # noqa: F401
            tensorflow.config.list_physical_devices("GPU")  # the cuInit probe, once per process


_import_tensorflow_quietly()


def release_models_after_training() -> None:
    """Make a model trained by Keras' fit() free its memory once it is gone (idempotent).

    Keras 3's TensorFlow optimizer applies each update through tf.distribute's merge_call. Traced in
    a tf.function (every fit), that path keeps the traced train step alive after the model is
    deleted, and with it the model's variables: every model trained in a process stays in its
    memory, keras.backend.clear_session() or not. Measured (TF 2.21, Keras 3.15, VGG16 at 32 px):
    five fits in one process grew its private memory 554 -> 765 MB; with the update applied
    directly, 554 -> 560 MB. Without a tf.distribute strategy (gic never uses one) the direct
    update is the same arithmetic; under a strategy Keras' own path is kept.
    """
    try:
        import tensorflow as tf
        from keras.src import backend as keras_backend
        from keras.src.backend.tensorflow.optimizer import TFOptimizer
    except ImportError:  # another Keras backend or layout: nothing to do
        return
    original = TFOptimizer.__dict__.get("_backend_update_step")
    if original is None or getattr(original, "_gic_direct", False):
        return

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        if tf.distribute.has_strategy():
            return original(self, grads, trainable_variables, learning_rate)
        for grad, var in zip(grads, trainable_variables):
            self.update_step(grad, var.value if isinstance(var, keras_backend.Variable) else var, learning_rate)

    _backend_update_step._gic_direct = True
    TFOptimizer._backend_update_step = _backend_update_step


def configure_tensorflow(threads: int | None = None, gpu_memory_mb: int | None = None) -> None:
    """Set CPU threads, GPU memory growth and an optional per-process GPU memory cap; make trained
    models free their memory when they are gone (release_models_after_training).

    Args:
        threads: intra-op threads (inter-op gets 2); None leaves TensorFlow's default (all cores).
        gpu_memory_mb: cap on the memory of the first visible GPU, so that trials packed on one GPU
            (fractional GPUs) do not take each other's memory. None: memory growth only.
    """
    import tensorflow as tf

    release_models_after_training()
    if threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(int(threads))
            tf.config.threading.set_inter_op_parallelism_threads(min(2, int(threads)))
        except RuntimeError:
            pass  # already initialised in this process (a reused worker): keep what it has
    for i, gpu in enumerate(tf.config.list_physical_devices("GPU")):
        try:
            if gpu_memory_mb and i == 0:
                tf.config.set_logical_device_configuration(
                    gpu, [tf.config.LogicalDeviceConfiguration(memory_limit=int(gpu_memory_mb))])
            else:
                tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:
            pass  # GPUs already initialised in this process: the first set-up stands


@functools.lru_cache(maxsize=1)
def has_gpu() -> bool:
    """True when TensorFlow sees a GPU (asked once per process)."""
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


@functools.lru_cache(maxsize=1)
def auto_precision() -> str:
    """bf16 where the hardware has fast bf16 (AMX / AVX512-BF16 CPUs, Ampere+ GPUs), fp16 on older
    GPUs (with loss scaling), fp32 otherwise."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        cc = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability", (0, 0))
        return "bf16" if tuple(cc) >= (8, 0) else "fp16" if tuple(cc) >= (7, 0) else "fp32"
    flags = _cpu_flags()
    return "bf16" if {"amx_bf16", "avx512_bf16"} & flags else "fp32"


def resolve_precision(precision: str) -> str:
    """`auto` -> what this hardware does fast (`auto_precision`); fp32 | bf16 | fp16 unchanged."""
    return auto_precision() if precision == "auto" else precision


KERAS_POLICY = {"fp32": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and TensorFlow; optionally force deterministic TF kernels."""
    import keras
    import tensorflow as tf

    random.seed(seed)
    np.random.seed(seed % 2**32)
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()
