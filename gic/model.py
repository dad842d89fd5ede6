"""The model: VGG16 conv base (frozen, then partly unfrozen), augmentation, and the new head.

    clf = build_model(cfg)          # clf.model: uint8-range RGB images -> P(women)
    unfreeze(clf.base, 3)           # the seed's `conv_base.layers[:-4]` frozen

The model takes raw RGB pixels (0..255) and applies VGG16's preprocessing itself, so a saved model
predicts on plain images. Augmentation is not part of the model: `augment_batch` runs in the input
pipeline with stateless random ops, because Keras' RandomRotation/RandomZoom switch XLA off for the
whole model and their stateful seeds would make a resumed run differ from an uninterrupted one.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

from gic.config import NUM_CONV_LAYERS, AugmentConfig, TrainConfig
from gic.errors import ModelError
from gic.runtime import KERAS_POLICY
from gic.weights import assign_base_weights, base_weights

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

VGG16_BGR_MEAN = (103.939, 116.779, 123.68)
FEATURE_DIM = 512  # channels of block5: the head's input after global average pooling


@keras.saving.register_keras_serializable(package="gic")
class VGGPreprocess(keras.layers.Layer):
    """`keras.applications.vgg16.preprocess_input` as a serialisable layer: RGB->BGR, minus the mean.

    A Lambda layer would do the same but cannot be loaded in Keras' safe mode.
    """

    def call(self, x):
        x = keras.ops.cast(x, self.compute_dtype)
        return x[..., ::-1] - keras.ops.convert_to_tensor(VGG16_BGR_MEAN, dtype=self.compute_dtype)


@dataclass
class Classifier:
    """The model and the parts of it the trainer addresses; all share one set of variables."""

    model: keras.Model  # image -> probability, the whole thing (what is trained in phase 2 and saved)
    base: keras.Model  # VGG16 conv base
    head: keras.Model  # pooled 512-d features -> probability (what phase 1 trains)
    features: keras.Model  # image -> pooled features (frozen base; for the phase-1 feature cache)


def conv_layers(base: keras.Model) -> list[keras.layers.Layer]:
    """VGG16's 13 Conv2D layers in `base`, bottom (block1_conv1) to top (block5_conv3)."""
    return [layer for layer in base.layers if isinstance(layer, keras.layers.Conv2D)]


# -------------------------------------------------------------------------------------- model
def build_model(cfg: TrainConfig, precision: str = "fp32") -> Classifier:
    """VGG16 base (frozen) -> GlobalAveragePooling -> Dense -> Dropout -> Dense(1, sigmoid).

    Args:
        cfg: the trainer config (model section, data.image_size S and seed are used).
        precision: fp32 | bf16 | fp16, already resolved; the output layer stays float32.

    Returns:
        Classifier: `model` (S, S, 3) RGB pixels 0..255 -> (1,) P(women), `base` the VGG16 no-top
        conv base (frozen), `head` (512,) pooled features -> (1,), `features` images -> (512,) float32.

    Raises:
        ModelError: the base weights cannot be resolved (`gic.weights.base_weights`).
    """
    size = cfg.data.image_size
    arrays = base_weights(cfg.model.weights, size)  # loaded in fp32, before the policy changes
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(KERAS_POLICY[precision])
    try:
        base = keras.applications.VGG16(weights=None, include_top=False, input_shape=(size, size, 3))
        assign_base_weights(base, arrays)
        base.trainable = False

        m = cfg.model
        activation = None if m.dense_activation == "linear" else m.dense_activation
        norm = {"none": [], "batch": [keras.layers.BatchNormalization(momentum=0.9, name="feature_norm")],
                "layer": [keras.layers.LayerNormalization(name="feature_norm")]}[m.head_norm]
        head = keras.Sequential([
            keras.Input((FEATURE_DIM,)),
            *norm,
            keras.layers.Dense(m.dense_units, activation=activation, name="dense"),
            keras.layers.Dropout(m.dropout_rate, seed=cfg.seed, name="dropout"),
            keras.layers.Dense(1, activation="sigmoid", dtype="float32", name="output"),
        ], name="head")

        image = keras.Input((size, size, 3), name="image")
        pooled = keras.layers.GlobalAveragePooling2D(name="pool")(base(VGGPreprocess(name="preprocess")(image),
                                                                       training=False))
        model = keras.Model(image, head(pooled), name="gic_vgg16")
        features = keras.Model(image, keras.layers.Activation("linear", dtype="float32")(pooled), name="features")
    finally:
        keras.config.set_dtype_policy(previous)
    return Classifier(model=model, base=base, head=head, features=features)


def unfreeze(base: keras.Model, n: int) -> None:
    """Make exactly the top `n` conv layers of the base trainable (0..13); the rest stay frozen.

    n = 3 is the seed's `conv_base.layers[:-4]` frozen: block5_conv1..3 train. Call before compile.
    """
    convs = conv_layers(base)
    if not 0 <= n <= len(convs):
        raise ModelError(f"phase2.unfreeze_layers = {n}: expected 0..{NUM_CONV_LAYERS}")
    base.trainable = n > 0
    for i, layer in enumerate(convs):
        layer.trainable = i >= len(convs) - n


def split_model(clf: Classifier, n: int) -> tuple[keras.Model, keras.Model]:
    """The model cut below its top `n` conv layers: `lower` (image -> the input of the lowest of
    them; frozen while those n train) and `upper` (that -> probability). Both share the model's
    layers and weights, so `upper(lower(x))` is `model(x)`: phase 2 validates on cached `lower`
    outputs instead of running the frozen layers again every epoch.
    """
    convs = conv_layers(clf.base)
    if not 1 <= n < len(convs):
        raise ModelError(f"split_model: n = {n}: expected 1..{len(convs) - 1}")
    layers = clf.base.layers
    cut = layers.index(convs[len(convs) - n])
    image = keras.Input(clf.model.input.shape[1:], name="image")
    lower_base = keras.Model(clf.base.input, layers[cut - 1].output, name="lower_base")
    lower = keras.Model(image, lower_base(clf.model.get_layer("preprocess")(image)), name="lower")
    x = cut_input = keras.Input(lower.output.shape[1:], name="cut")
    for layer in layers[cut:]:
        x = layer(x)
    upper = keras.Model(cut_input, clf.head(clf.model.get_layer("pool")(x)), name="upper")
    return lower, upper


def mutable_variables(clf: Classifier, unfreeze_layers: int) -> list:
    """The variables training can change, in the model's order: the head's and those of the top
    `unfreeze_layers` conv layers (what phase 2 trains; 0 when there is no phase 2). The others stay
    what `build_model` made them from (weights, seed), so a checkpoint need not hold them."""
    convs = conv_layers(clf.base)
    keep = {id(v) for layer in convs[len(convs) - unfreeze_layers:] for v in layer.variables}
    keep |= {id(v) for v in clf.head.variables}
    return [v for v in clf.model.variables if id(v) in keep]


def trainable_conv_count(base: keras.Model) -> int:
    """How many of the base's 13 conv layers would train now (0 while the base is frozen)."""
    if not base.trainable:
        return 0
    return sum(layer.trainable for layer in conv_layers(base))


# ------------------------------------------------------------------------------- augmentation
def augment_batch(images: tf.Tensor, aug: AugmentConfig, seed: tf.Tensor) -> tf.Tensor:
    """Random flip, rotation and zoom of a float batch (B, H, W, 3) in one projective resample.

    Stateless: the same `seed` (a shape-(2,) int tensor) gives the same result, which makes a
    resumed run reproduce an uninterrupted one. Strengths follow Keras' layers: rotation is a
    fraction of a full turn, zoom a fraction of the size; pixels outside are reflected.
    """
    if not aug.enabled:
        return images
    shape = tf.shape(images)
    batch, height, width = shape[0], tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 4)

    def sign(s):
        return tf.where(tf.random.stateless_uniform([batch], s) < 0.5, -1.0, 1.0)

    ones = tf.ones([batch])
    fx = sign(seeds[0]) if aug.flip in ("horizontal", "horizontal_and_vertical") else ones
    fy = sign(seeds[1]) if aug.flip in ("vertical", "horizontal_and_vertical") else ones
    angle = tf.random.stateless_uniform([batch], seeds[2], -1.0, 1.0) * (aug.rotation * 2 * math.pi)
    scale = 1.0 + tf.random.stateless_uniform([batch], seeds[3], -1.0, 1.0) * aug.zoom
    cos, sin = tf.cos(angle) * scale, tf.sin(angle) * scale
    # output pixel p samples input c + M (p - c), with M = scale * R(angle) * diag(fx, fy)
    m00, m01, m10, m11 = cos * fx, -sin * fy, sin * fx, cos * fy
    cx, cy = (width - 1) / 2, (height - 1) / 2
    zeros = tf.zeros([batch])
    transforms = tf.stack([m00, m01, cx - m00 * cx - m01 * cy,
                           m10, m11, cy - m10 * cx - m11 * cy, zeros, zeros], axis=1)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=transforms, output_shape=shape[1:3], fill_value=0.0,
        interpolation="BILINEAR", fill_mode="REFLECT")


def load_model(path: str | Path) -> keras.Model:
    """Load a saved .keras model in Keras' safe mode (no Lambda layers, no arbitrary code)."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such model file")
    if path.suffix not in (".keras", ".h5"):
        raise ModelError(f"{path}: not a model file; expected a .keras model written by gic train or gic-tune retrain")
    try:
        with warnings.catch_warnings():  # compile=False: the saved optimizer state is not needed, nor loaded
            warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
            return keras.saving.load_model(path, safe_mode=True, compile=False)
    except Exception as err:
        text = str(err).splitlines()[0][:120] if str(err) else type(err).__name__
        if "safe_mode" in text or "lambda" in text.lower():
            raise ModelError(f"{path}: refused: the model holds unsafe content (a Lambda layer or code)") from None
        raise ModelError(f"{path}: not a Keras model file ({text})") from None
