"""Input pipelines over arrays: batches gathered from the caller's array, ordered and augmented per epoch.

    train = Batches(images, labels, batch_size=32, seed=0)
    model.fit(train.epoch(3, augment=cfg.model.augmentation))   # epoch 3's order and augmentation
    model.predict(in_order(images, batch_size=32))               # every image once, in order

Each epoch's order is a function of (seed, epoch) and each batch's augmentation of (seed, epoch,
batch), so a run resumed at any epoch sees the same batches as the uninterrupted run.
"""

from __future__ import annotations

import numpy as np

from gic import runtime  # noqa: F401  (sets TF env defaults before TF loads)
from gic.config import AugmentConfig
from gic.model import augment_batch

import tensorflow as tf  # noqa: E402


class Batches:
    """Epoch datasets over `x` (N, ...) any dtype and `y` (N,) 0/1 labels.

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

    def order(self, epoch: int) -> np.ndarray:
        """The indices (N,) int64 in the order global epoch `epoch` visits them: a permutation seeded
        by (seed, epoch) for epoch >= 1, every index in order for epoch 0."""
        return np.random.default_rng([self.seed, epoch]).permutation(self.n) if epoch else np.arange(self.n)

    def epoch(self, epoch: int, augment: AugmentConfig | None = None) -> tf.data.Dataset:
        """Batches of (float32 x (B, ...), float32 y (B, 1)) for global epoch `epoch` (1-based).

        Epoch 0 is every example in order (evaluation and forward passes); epoch e >= 1 is a
        permutation seeded by (seed, e). `augment` (images only) is applied per batch with the
        stateless seed (seed, e * 100003 + batch index); None or a disabled preset: no augmentation.
        """
        order = self.order(epoch)
        y, seed = self.y, self.seed
        if augment is not None and not augment.enabled:
            augment = None

        def gather(i, idx):
            images = tf.cast(self._take(idx), tf.float32)
            if augment is not None:
                images = augment_batch(images, augment, tf.stack([tf.constant(seed, tf.int64), epoch * 100_003 + i]))
            return images, tf.gather(y, idx)

        ds = tf.data.Dataset.from_tensor_slices(order).batch(self.batch_size).enumerate()
        return ds.map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(tf.data.AUTOTUNE)


def in_order(x: np.ndarray, batch_size: int) -> tf.data.Dataset:
    """`x` (N, ...) in order, as float32 batches of `batch_size` (for a forward pass), without a copy."""
    return Batches(x, np.zeros(len(x), dtype=np.float32), batch_size, seed=0).epoch(0)
