"""The architectures digitkit trains, and their training defaults: one table, `TABLE`.

Every one honours a model contract (`digitkit.model.contract`): raw pixels in, probabilities
out, preprocessing inside the graph. The digit networks (`cnn`, `seed-mlp`) take MNIST's
`DIGIT_CONTRACT` ("pixels" (N,28,28)); the image networks take a general contract's
"pixels" (N,H,W,C) float32 0..255 (C = 1 or 3) and give "probabilities" (N,K): the input
size, channels and classes come from the labelled folder they are trained on
(`digitkit.train.folder_config`).

Transfer learning (`mobilenet-v3-small`, `efficientnet-v2-b0`): a keras.applications backbone
(its own ImageNet preprocessing is inside it, so it too takes raw 0..255), global average
pooling, dropout and a softmax head. `--weights imagenet` lets Keras download the backbone's
ImageNet weights (where the network allows), `--weights FILE` loads the backbone's weights
from a file (a Keras weights file of the backbone without its top), `--weights none` starts
from random weights. The backbone is frozen for the first epochs, then fine-tuned
(`fine_tune_epochs`), its batch norms kept in inference mode throughout (the usual Keras
recipe: unfreezing them on small batches destroys what ImageNet taught them).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from digitkit.errors import DataError, DependencyError, UsageError
from digitkit.model.contract import DIGIT_CONTRACT as CONTRACT  # what the digit networks honour

DIGITS, IMAGES = "digits", "images"  # what an architecture trains on: MNIST, or any folder


@dataclass(frozen=True)
class Architecture:
    """One trainable network. `data`: DIGITS (MNIST, `digitkit train`) or IMAGES (a labelled
    folder, `digitkit train DIR`). `defaults`: its training defaults, each with its reason
    below. `backbone`: the keras.applications class name of a transfer network (None: trained
    from scratch). `min_side`: the smallest input side it takes."""

    name: str
    description: str
    data: str
    defaults: dict = field(default_factory=dict)
    backbone: str | None = None
    min_side: int = 1

    def check_size(self, h: int, w: int) -> None:
        if min(h, w) < self.min_side:
            raise UsageError(f"--arch {self.name} needs an input of at least "
                             f"{self.min_side}x{self.min_side}, not {h}x{w}")

    @property
    def transfer(self) -> bool:
        return self.backbone is not None


#: Training defaults; each has a reason:
#: seed-mlp: the reference recipe (3 epochs, batch 32, adam at Keras's default 1e-3) trained,
#:      like the original script, on all 60,000 training images (validation_size 0): holding
#:      out 5,000 costs it ~0.2 points and the reference's 96 %.
#: cnn: 22 epochs of batch 128 fit the 10-minute budget on 2 cores and reach 99.5 %+
#:      (BENCHMARKS.md, "Training"); augmentation (small shifts/rotations/scaling) is what
#:      takes it past 99.4 %. The last 5,000 training images are held out for validation so
#:      the test set stays untouched.
#: small-cnn: a folder of a few hundred to a few thousand pictures; 30 epochs of batch 32 at a
#:      cosine-decayed 2e-3 is where small image sets stop improving, with augmentation on
#:      (shifts, scaling, brightness: what keeps a small set from being memorised).
#: transfer networks: the head learns in a few epochs on a frozen backbone (1e-3), then the
#:      whole network is fine-tuned at a tenth of the rate (FINE_TUNE_RATE) so the ImageNet
#:      features are adjusted, not erased.
TABLE = {
    "cnn": Architecture(
        "cnn", "default for MNIST: 3 conv blocks (16/32/64) with batch norm, >= 99.5% test "
               "accuracy", DIGITS,
        {"epochs": 22, "batch_size": 128, "learning_rate": 3e-3, "augment": True,
         "validation_size": 5000}),
    "seed-mlp": Architecture(
        "seed-mlp", "the classic beginner network: Flatten, Dense 64, Dense 32, Dense 10", DIGITS,
        {"epochs": 3, "batch_size": 32, "learning_rate": 1e-3, "augment": False,
         "validation_size": 0}),
    "small-cnn": Architecture(
        "small-cnn", "default for a folder: 4 conv blocks (32/64/128/256) with batch norm, "
                     "any input size, trained from scratch", IMAGES,
        {"epochs": 30, "batch_size": 32, "learning_rate": 2e-3, "augment": True,
         "fine_tune_epochs": 0}),
    "mobilenet-v3-small": Architecture(
        "mobilenet-v3-small", "transfer learning from keras.applications MobileNetV3Small",
        IMAGES, {"epochs": 5, "batch_size": 32, "learning_rate": 1e-3, "augment": True,
                 "fine_tune_epochs": 5}, backbone="MobileNetV3Small", min_side=32),
    "efficientnet-v2-b0": Architecture(
        "efficientnet-v2-b0", "transfer learning from keras.applications EfficientNetV2B0",
        IMAGES, {"epochs": 5, "batch_size": 32, "learning_rate": 1e-3, "augment": True,
                 "fine_tune_epochs": 5}, backbone="EfficientNetV2B0", min_side=32),
}
DEFAULT_ARCH = "cnn"  # MNIST's (`digitkit train` with no folder)
DEFAULT_FOLDER_ARCH = "small-cnn"  # a folder's (`digitkit train DIR`)
#: Fine-tuning's rate, as a fraction of the head's learning rate.
FINE_TUNE_RATE = 0.1

#: architecture name -> one-line description (shown by `digitkit train --help`)
ARCHITECTURES = {name: a.description for name, a in TABLE.items()}
#: the digit architectures' defaults (`digitkit train` on MNIST)
TRAIN_DEFAULTS = {name: a.defaults for name, a in TABLE.items() if a.data == DIGITS}


def get_arch(name: str, data: str | None = None) -> Architecture:
    """The table's row `name`; with `data`, it must train on that kind of data."""
    if name not in TABLE:
        raise UsageError(f"unknown architecture {name!r}; choose from {', '.join(TABLE)}")
    arch = TABLE[name]
    if data is not None and arch.data != data:
        fits = ", ".join(n for n, a in TABLE.items() if a.data == data)
        what = "MNIST digits" if data == DIGITS else "a labelled folder"
        raise UsageError(f"--arch {name} does not train on {what}; choose from {fits}")
    return arch


def build_model(arch: str = DEFAULT_ARCH, input_shape=None, num_classes: int | None = None,
                weights: str | None = None):
    """An uncompiled Keras model for `arch` (call keras.utils.set_random_seed first). Digit
    architectures take no arguments; image ones take `input_shape` (H, W, C), `num_classes`
    and, for transfer networks, `weights` (None/"none", "imagenet" or a weights file)."""
    row = get_arch(arch)
    if row.data == DIGITS:
        return {"seed-mlp": _seed_mlp, "cnn": _cnn}[arch]()
    if input_shape is None or num_classes is None:
        raise UsageError(f"--arch {arch} needs an input shape and a number of classes")
    if row.transfer:
        return _transfer(row, tuple(input_shape), int(num_classes), weights)
    return _small_cnn(tuple(input_shape), int(num_classes))


def backbone_of(model):
    """The transfer network's backbone layer (None for networks trained from scratch)."""
    try:
        return model.get_layer("backbone")
    except ValueError:
        return None


def compile_model(model, learning_rate: float, steps_per_epoch: int | None = None,
                  epochs: int | None = None):
    import keras

    if steps_per_epoch and epochs and model.name in ("cnn", "small_cnn"):
        # One-cycle-like cosine decay: converges faster than a flat rate in few epochs.
        lr = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=learning_rate, decay_steps=steps_per_epoch * epochs, alpha=0.01
        )
    else:
        lr = learning_rate
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=lr),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def _seed_mlp():
    import keras
    from keras import layers

    inputs = keras.Input(shape=CONTRACT.input_shape, dtype="float32", name=CONTRACT.input_name)
    # keras.utils.normalize(x, axis=1) of the original script: L2 over axis 1 of (N, 28, 28).
    # It is scale-invariant, so raw 0..255 pixels give the same result as 0..1 pixels.
    x = layers.UnitNormalization(axis=1, name="normalize")(inputs)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(64, activation="relu", name="dense_64")(x)
    x = layers.Dense(32, activation="relu", name="dense_32")(x)
    outputs = layers.Dense(CONTRACT.num_classes, activation="softmax", name=CONTRACT.output_name)(x)
    return keras.Model(inputs, outputs, name="seed_mlp")


def _conv_bn(x, filters, kernel, name):
    from keras import layers

    # No conv bias: batch norm's beta makes it redundant.
    x = layers.Conv2D(filters, kernel, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.Activation("relu", name=f"{name}_relu")(x)


def _cnn():
    import keras
    from keras import layers

    inputs = keras.Input(shape=CONTRACT.input_shape, dtype="float32", name=CONTRACT.input_name)
    x = layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    x = layers.Reshape(CONTRACT.layout_shape("NHWC"), name="add_channel")(x)

    # Small on purpose: ~2.1 M multiply-adds per image. Pooling after every conv and
    # 16/32/64 channels keep batch-1 latency low (what production serving pays) and training
    # within its budget; doubling the widths (8.3 M multiply-adds) was no more accurate, so
    # the extra compute bought nothing (BENCHMARKS.md, "Training").
    x = _conv_bn(x, 16, 5, "c1")  # 28x28x16
    x = layers.MaxPooling2D(2, name="pool1")(x)  # 14x14
    x = _conv_bn(x, 32, 3, "c2")
    x = layers.MaxPooling2D(2, name="pool2")(x)  # 7x7
    x = _conv_bn(x, 64, 3, "c3")
    x = layers.MaxPooling2D(2, name="pool3")(x)  # 3x3
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dropout(0.25, name="dropout")(x)
    x = layers.Dense(128, activation="relu", name="dense")(x)
    x = layers.Dropout(0.25, name="dropout2")(x)
    outputs = layers.Dense(CONTRACT.num_classes, activation="softmax", name=CONTRACT.output_name)(x)
    return keras.Model(inputs, outputs, name="cnn")


def _general_input(input_shape):
    """The general contract's input: "pixels" float32 (N, H, W, C) raw 0..255."""
    import keras

    h, w, c = input_shape
    if c not in (1, 3):
        raise UsageError(f"channels must be 1 (gray) or 3 (RGB), not {c}")
    return keras.Input(shape=(h, w, c), dtype="float32", name="pixels")


def _head(x, num_classes):
    from keras import layers

    # float32 softmax whatever the compute policy: probabilities are the contract's output.
    return layers.Dense(num_classes, activation="softmax", dtype="float32",
                        name="probabilities")(x)


def _small_cnn(input_shape, num_classes):
    import keras
    from keras import layers

    inputs = _general_input(input_shape)
    x = layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    # Four conv blocks, each halving the picture; global average pooling makes the head
    # independent of the input size, so one network serves 32x32 and 192x192 alike.
    for i, filters in enumerate((32, 64, 128, 256), 1):
        x = _conv_bn(x, filters, 3, f"c{i}")
        if min(x.shape[1], x.shape[2]) >= 2:
            x = layers.MaxPooling2D(2, name=f"pool{i}")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dropout(0.3, name="dropout")(x)
    return keras.Model(inputs, _head(x, num_classes), name="small_cnn")


def _transfer(row: Architecture, input_shape, num_classes, weights):
    import keras
    from keras import layers

    h, w, c = input_shape
    row.check_size(h, w)
    inputs = _general_input(input_shape)
    # The backbones are RGB networks: a gray model repeats its channel in the graph, as the
    # pixel pipeline repeats a gray file's for an RGB model.
    x = layers.Concatenate(name="gray_to_rgb")([inputs] * 3) if c == 1 else inputs
    backbone = _backbone(row, (h, w, 3), weights)
    x = backbone(x, training=False)  # batch norms stay in inference mode, also when fine-tuned
    x = layers.Dropout(0.2, name="dropout")(x)
    return keras.Model(inputs, _head(x, num_classes), name=row.name.replace("-", "_"))


def _backbone(row: Architecture, shape, weights):
    import keras

    factory = getattr(keras.applications, row.backbone)
    w = None if weights in (None, "none") else weights
    kwargs = {"input_shape": shape, "include_top": False, "pooling": "avg",
              "include_preprocessing": True}  # ImageNet's scaling inside: raw 0..255 in
    try:
        net = factory(weights=w, **kwargs)
    except (OSError, ValueError) as err:
        if w == "imagenet":
            raise DependencyError(
                f"--arch {row.name}: could not fetch Keras' ImageNet weights ({err}); on a "
                f"machine without network pass --weights FILE (the backbone's Keras weights "
                f"file without its top) or --weights none") from err
        raise DataError(w, f"not weights of {row.backbone} without its top for input "
                           f"{shape[0]}x{shape[1]}x3 ({_first_line(err)})") from err
    except Exception as err:  # the download's own errors (URLError, HTTPError, ...)
        if w != "imagenet":
            raise
        raise DependencyError(
            f"--arch {row.name}: could not fetch Keras' ImageNet weights "
            f"({_first_line(err)}); on a machine without network pass --weights FILE or "
            f"--weights none") from err
    net.name = "backbone"
    return net


def _first_line(err) -> str:
    text = str(err).strip().splitlines()
    return text[0][:200] if text else type(err).__name__


__all__ = ["ARCHITECTURES", "Architecture", "DEFAULT_ARCH", "DEFAULT_FOLDER_ARCH", "DIGITS",
           "FINE_TUNE_RATE", "IMAGES", "TABLE", "TRAIN_DEFAULTS", "backbone_of", "build_model",
           "compile_model", "get_arch"]
