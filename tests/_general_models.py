"""Small general image classifiers for the tests (issue 18): Keras models presenting the
general contract by name (input "pixels" (N,H,W,C) raw 0..255 with Rescaling inside, output
"probabilities" (N,K)), trained in seconds on the `image_set` fixture's pixels or left with
seeded random weights. Other test modules add builders here (add, do not rename)."""

from __future__ import annotations

import functools
from pathlib import Path


def labelled_pixels(root, size: tuple[int, int], channels: int, class_names=None):
    """The labelled folder `root` as pixels for a (H, W, C) model (a LabelledSet), decoded by
    the default policy (squash, bilinear), as `export --calibration` decodes it."""
    from digitkit.images.labelled import load_labelled
    from digitkit.images.pixels import PixelPolicy, load_pixels_batch

    policy = PixelPolicy(tuple(size), channels)
    return load_labelled(root, functools.partial(load_pixels_batch, policy=policy),
                         class_names=class_names)


def pixels_model(size: tuple[int, int], channels: int, k: int, seed: int = 0):
    """A small convolutional classifier honouring the general contract by name: pixels
    (N,H,W,C) 0..255 -> Rescaling(1/255) -> conv, pool, conv, global pool -> softmax (N,K)."""
    import keras

    keras.utils.set_random_seed(seed)
    inp = keras.Input((*size, channels), name="pixels")
    x = keras.layers.Rescaling(1 / 255)(inp)
    x = keras.layers.Conv2D(8, 3, activation="relu")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(16, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(k, activation="softmax", name="probabilities")(x)
    return keras.Model(inp, out)


def train_pixels_model(path: Path, labelled, size: tuple[int, int], channels: int,
                       epochs: int = 8, seed: int = 0, embed: bool = True):
    """`pixels_model` trained on a LabelledSet for a few epochs (seconds), saved at `path`
    (.keras or .h5); with `embed`, carrying its contract (class names, size, default policy)
    as digitkit's own trained models do. Returns the Keras model."""
    from digitkit.model.contract import image_contract
    from digitkit.model.embedded import write_contract

    model = pixels_model(size, channels, len(labelled.class_names), seed)
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(labelled.pixels, labelled.labels, epochs=epochs, batch_size=32, verbose=0,
              shuffle=True)
    model.save(path)
    if embed:
        write_contract(path, image_contract(*size, channels, labelled.class_names))
    return model


def untrained_pixels_model(path: Path, size: tuple[int, int], channels: int, k: int,
                           seed: int = 0):
    """`pixels_model` with seeded random weights, saved at `path`, carrying no record."""
    model = pixels_model(size, channels, k, seed)
    model.save(path)
    return model


def dynamic_size_model(path: Path, channels: int, k: int, seed: int = 0):
    """A classifier with a dynamic input height and width (pixels (N,None,None,C), global
    pooling), seeded random weights, saved at `path`."""
    import keras

    keras.utils.set_random_seed(seed)
    inp = keras.Input((None, None, channels), name="pixels")
    x = keras.layers.Rescaling(1 / 255)(inp)
    x = keras.layers.Conv2D(8, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(k, activation="softmax", name="probabilities")(x)
    model = keras.Model(inp, out)
    model.save(path)
    return model
