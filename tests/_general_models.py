"""Small general (non-digit) image classifiers made elsewhere, trained in seconds on the
`image_set` fixture's pixels (5 classes, 24x24x3 here), one per input convention, for the
tests of the model layer (conventions, adapters, detection, sources) and of the rooms.

Each is a Keras MLP (Flatten, Dense 32 relu, Dense K) fed the pixels prepared as its
convention says and trained on them until it fits them, so that run under its own convention
it is accurate and confident and under any other it is not: exactly what detection on a
`--calibration` folder has to tell apart. `write_nchw_onnx` writes the NCHW ONNX model
PyTorch users bring (ImageNet mean/std, logits out) with onnx.helper from such weights.

Builders only; the session fixture `general_zoo` (tests/conftest.py) shares them.


Other test modules may add builders here; existing names are not renamed.

`fit_pixel_linear` fits a ridge-regression linear classifier on a labelled folder's tensors
(closed form, no TensorFlow); `write_pixel_onnx` writes it as digitkit's general contract
model: input "pixels" float32 (N, H, W, C) raw 0..255, output "probabilities" (N, K), with the
contract's ONNX metadata_props (class names, input size and pixel policy), as `digitkit
export` records them. Built with onnx.helper: seconds, and no TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

#: The input size every model here takes (small: an MLP on 24x24x3 trains in seconds).
SIZE = (24, 24)
EPOCHS = 60

#: name -> (convention fields beyond the contract, whether the model has its own Rescaling
#: layer in front and takes raw pixels, the file it is saved as). Outputs are probabilities
#: unless the fields say logits.
GENERAL_FIXTURES = {
    "tf": ({"scale": "tf"}, False, "tf.keras"),
    "torch-nchw": ({"scale": "standardized", "layout": "NCHW"}, False, "torch.h5"),
    "caffe": ({"scale": "caffe", "channel_order": "bgr"}, False, "caffe.keras"),
    "rescaling-inside": ({}, True, "rescaling.keras"),
    "unit-logits": ({"scale": "unit", "outputs": "logits"}, False, "logits.keras"),
    "gray-unit": ({"scale": "unit"}, False, "gray.keras"),  # a 1-channel model, NHW input
}


def image_contract_for(labelled, channels: int = 3):
    from digitkit.images.pixels import PixelPolicy
    from digitkit.model.contract import image_contract

    return image_contract(*SIZE, channels, labelled.class_names, PixelPolicy(SIZE, channels))


def load_set(image_set: Path, channels: int = 3):
    """The image set as the contract's raw pixels (n, 24, 24, C), squashed, bilinear."""
    from digitkit.images.labelled import load_labelled
    from digitkit.images.pixels import PixelPolicy, load_pixels_batch

    return load_labelled(image_set, partial(load_pixels_batch,
                                            policy=PixelPolicy(SIZE, channels)))


def convention_of(name: str, contract):
    from digitkit.model.conventions import InputConvention

    fields_, _, _ = GENERAL_FIXTURES[name]
    extra = dict(fields_)
    layout = extra.pop("layout", "NHW" if contract.channels == 1 else "NHWC")
    return InputConvention(layout=layout, contract=contract, **extra)


def train_mlp(x: np.ndarray, y: np.ndarray, k: int, logits: bool = False,
              rescaling: float | None = None, seed: int = 0):
    """A Keras MLP fitted to (x, y): x already in the model's own input convention."""
    import keras

    keras.utils.set_random_seed(seed)
    inp = keras.Input(shape=x.shape[1:], name="image")
    h = inp
    if rescaling is not None:
        h = keras.layers.Rescaling(rescaling, name="rescale")(h)
    h = keras.layers.Flatten()(h)
    h = keras.layers.Dense(32, activation="relu")(h)
    out = keras.layers.Dense(k, activation=None if logits else "softmax", name="scores")(h)
    model = keras.Model(inp, out, name="classifier")
    # One whole epoch per call into TensorFlow (steps_per_execution): the same batches and
    # updates as one call per batch, without a Python round trip for each of the ~420 steps,
    # which on a busy machine is most of what fitting these small networks costs.
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=logits),
                  steps_per_execution=-(-len(x) // 32))
    # A convention that leaves values in the hundreds (raw, caffe) trains too, slower: the
    # same epochs fit it anyway on 200 images.
    model.fit(x, y, epochs=EPOCHS, batch_size=32, verbose=0, shuffle=True)
    return model


def build(name: str, out_dir: Path, labelled, gray_labelled=None) -> tuple[Path, object]:
    """(path, convention) of the fixture `name`, trained on `labelled` (gray_labelled for a
    1-channel fixture) and saved in `out_dir`."""
    fields_, inside, filename = GENERAL_FIXTURES[name]
    data = gray_labelled if name.startswith("gray") else labelled
    contract = image_contract_for(data, data.pixels.shape[-1])
    convention = convention_of(name, contract)
    if inside:
        x = data.pixels
        model = train_mlp(x, data.labels, contract.num_classes, rescaling=1 / 255)
    else:
        x = convention.apply(data.pixels)
        model = train_mlp(x, data.labels, contract.num_classes,
                          logits=fields_.get("outputs") == "logits")
    path = Path(out_dir) / filename
    model.save(path)
    return path, convention


def write_nchw_onnx(path: Path, labelled, opset: int = 13, batch="batch") -> tuple[Path, object]:
    """(path, convention): an NCHW ONNX classifier (input "input" (batch, 3, 24, 24), output
    "logits") trained on ImageNet-standardized pixels (torch), written with onnx.helper from a
    Keras MLP's weights: what a PyTorch user's export looks like."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    contract = image_contract_for(labelled)
    from digitkit.model.conventions import LOGITS, InputConvention

    convention = InputConvention(layout="NCHW", scale="standardized", outputs=LOGITS,
                                 contract=contract)
    model = train_mlp(convention.apply(labelled.pixels), labelled.labels,
                      contract.num_classes, logits=True, seed=1)
    dense = [la for la in model.layers if la.__class__.__name__ == "Dense"]
    (w1, b1), (w2, b2) = (la.get_weights() for la in dense)
    inits = [numpy_helper.from_array(a.astype(np.float32), n) for a, n in
             ((w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"))]
    nodes = [helper.make_node("Flatten", ["input"], ["flat"], axis=1),
             helper.make_node("Gemm", ["flat", "w1", "b1"], ["h"]),
             helper.make_node("Relu", ["h"], ["hr"]),
             helper.make_node("Gemm", ["hr", "w2", "b2"], ["logits"])]
    k = contract.num_classes
    graph = helper.make_graph(
        nodes, "nchw_torch",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, *SIZE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, k])], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    proto.ir_version = 7
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(path))
    return Path(path), convention


@dataclass
class GeneralZoo:
    """The trained fixtures, built on first use: `path(name)`, `convention(name)` (its
    training convention, under its contract), `labelled` / `gray` (the calibration pixels)."""

    root: Path
    image_set: Path
    labelled: object = None
    gray: object = None
    _built: dict = field(default_factory=dict)

    def __post_init__(self):
        self.labelled = load_set(self.image_set, 3)
        self.gray = load_set(self.image_set, 1)

    def _get(self, name: str):
        if name not in self._built:
            if name == "nchw-onnx":
                self._built[name] = write_nchw_onnx(self.root / "nchw.onnx", self.labelled)
            else:
                self._built[name] = build(name, self.root, self.labelled, self.gray)
        return self._built[name]

    def path(self, name: str) -> Path:
        return self._get(name)[0]

    def convention(self, name: str):
        return self._get(name)[1]

    def contract(self, name: str):
        return self.convention(name).contract

    def pixels(self, name: str) -> np.ndarray:
        return (self.gray if name.startswith("gray") else self.labelled).pixels

    def labels(self, name: str) -> np.ndarray:
        return (self.gray if name.startswith("gray") else self.labelled).labels


#: Every fixture name (the Keras ones and the ONNX one).
GENERAL_NAMES = (*GENERAL_FIXTURES, "nchw-onnx")


# -- Keras models presenting the general contract by name (input "pixels" (N,H,W,C) raw
# 0..255 with Rescaling inside, output "probabilities" (N,K)): the export room's tests.


def labelled_pixels(root, size: tuple[int, int], channels: int, class_names=None):
    """The labelled folder `root` as pixels for a (H, W, C) model (a LabelledSet), decoded by
    the default policy (squash, bilinear), as `export --calibration` decodes it."""
    from digitkit.images.labelled import load_labelled
    from digitkit.images.pixels import PixelPolicy, load_pixels_batch

    policy = PixelPolicy(tuple(size), channels)
    return load_labelled(root, partial(load_pixels_batch, policy=policy),
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


#: Logit scale of the fitted outputs (about 0..1): peaked but not saturated probabilities.
TEMPERATURE = 8.0


def fit_pixel_linear(root: Path, contract, per_class: int | None = None,
                     ridge: float = 30.0) -> tuple[np.ndarray, np.ndarray]:
    """(W (H*W*C, K), b (K,)) fitted on the labelled folder `root` decoded by `contract`'s
    pixel policy; classes in the contract's order (folders matched by name)."""
    from digitkit.images.labelled import load_labelled
    from digitkit.images.pixels import load_pixels_batch

    folders = sorted(p.name for p in Path(root).iterdir() if p.is_dir())
    s = load_labelled(root, partial(load_pixels_batch, policy=contract.pixel_policy),
                      folders, per_class)
    x = s.pixels.reshape(len(s), -1).astype(np.float64) / 255.0
    xb = np.hstack([x, np.ones((len(x), 1))])
    k = contract.num_classes
    y = np.zeros((len(x), k))
    y[np.arange(len(x)), s.labels] = 1.0  # folder i -> output i
    a = xb.T @ xb + ridge * np.eye(xb.shape[1])
    wb = np.linalg.solve(a, xb.T @ y) * TEMPERATURE
    return (wb[:-1] / 255.0).astype(np.float32), wb[-1].astype(np.float32)


def write_pixel_onnx(path: Path, contract, w: np.ndarray, b: np.ndarray,
                     metadata: bool = True) -> Path:
    """The linear classifier as an .onnx of `contract` (its metadata_props unless
    `metadata` is False: then only its ends present the contract, by name)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    h, wd, c = contract.pixels_shape
    k = contract.num_classes
    nodes = [helper.make_node("Reshape", ["pixels", "flat_shape"], ["flat"]),
             helper.make_node("MatMul", ["flat", "W"], ["logits_nb"]),
             helper.make_node("Add", ["logits_nb", "b"], ["logits"]),
             helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1)]
    graph = helper.make_graph(
        nodes, "linear_pixels",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["N", h, wd, c])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", k])],
        initializer=[numpy_helper.from_array(np.array([-1, h * wd * c], np.int64), "flat_shape"),
                     numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if metadata:
        helper.set_model_props(model, contract.onnx_metadata())
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return Path(path)


def predict_pixels(w: np.ndarray, b: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The linear classifier's probabilities in numpy (the reference of the ONNX copy)."""
    logits = x.reshape(len(x), -1).astype(np.float32) @ w + b
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def write_general_export(out: Path, contract, calibration: np.ndarray, seed: int = 0,
                         labels: np.ndarray | None = None, epochs: int = 30) -> Path:
    """An export directory of a small Keras classifier of `contract` (Rescaling inside, so
    it takes raw pixels; seeded random weights) with every copy the runtime table loads:
    model.keras (carrying its contract), saved_model/, model.onnx (with the contract's
    metadata_props), model.int8.onnx (calibrated on `calibration`), model.tflite, and
    export.json's "model" record. Made by hand with TensorFlow, tf2onnx and the export
    room's own int8 and LiteRT converters: the predictor contract's fixture for a general
    model, independent of `digitkit export`. With `labels` (of `calibration`) it is trained
    on them for `epochs` (seconds): confident outputs, so top-1 agreement is meaningful."""
    import json

    import keras
    import onnx
    import tensorflow as tf
    import tf2onnx

    from digitkit.export.quantize import quantize_int8
    from digitkit.export.tflite import convert_tflite
    from digitkit.model.embedded import write_contract

    out = Path(out)
    out.mkdir(parents=True)
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(contract.pixels_shape, name=contract.input_name)
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(8, 3, activation="relu")(x)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(contract.num_classes)(x)
    probs = keras.layers.Softmax(name=contract.output_name)(x)
    model = keras.Model(inputs, probs)
    if labels is not None:
        model.compile("adam", "sparse_categorical_crossentropy")
        model.fit(calibration, labels, epochs=epochs, batch_size=32, verbose=0)
    model.save(out / "model.keras")
    write_contract(out / "model.keras", contract)

    spec = tf.TensorSpec((None, *contract.pixels_shape), tf.float32, name=contract.input_name)

    @tf.function(input_signature=[spec])
    def serve(pixels):
        return {contract.output_name: model(pixels, training=False)}

    module = tf.Module()
    module.model = model
    module.serve = serve
    tf.saved_model.save(module, str(out / "saved_model"), signatures={"serving_default": serve})
    proto, _ = tf2onnx.convert.from_function(serve, input_signature=serve.input_signature,
                                             opset=17)
    onnx.helper.set_model_props(proto, contract.onnx_metadata())
    onnx.save(proto, str(out / "model.onnx"))
    quantize_int8(out / "model.onnx", out / "model.int8.onnx", calibration,
                  input_name=contract.input_name)
    convert_tflite(model, out / "model.tflite", contract)
    (out / "export.json").write_text(json.dumps({"model": contract.to_dict()}))
    return out


# -- Colour-photo crops and a converged linear classifier on per-channel constants no preset
# has (issue 23's RGB fit): many small crops made in memory from the colour photos in
# scikit-image, so that a model trained on thousands of them GENERALISES (a fit needs images
# the model has not learned by heart: see digitkit.model.fitting).

#: class name -> the skimage.data colour photo its crops are cut from, in the names' sorted
#: order (a labelled folder's classes are its sorted subfolder names).
COLOUR_PHOTOS = {"astronaut": "astronaut", "cat": "chelsea", "cells": "immunohistochemistry",
                 "coffee": "coffee", "hubble": "hubble_deep_field",
                 "motorcycle": "stereo_motorcycle", "retina": "retina", "rocket": "rocket"}
#: Each photo is first shrunk to this shorter side (crops are cut from the small copy: the
#: same pictures, a fraction of the decoding and resizing).
PHOTO_SIDE = 160


def _small_photo(name: str):
    from PIL import Image
    from skimage import data

    a = getattr(data, name)()
    a = a[0] if isinstance(a, tuple) else a  # stereo_motorcycle: (left, right, disparity)
    im = Image.fromarray(a).convert("RGB")
    f = PHOTO_SIDE / min(im.size)
    return im.resize((round(im.width * f), round(im.height * f)), Image.Resampling.BOX)


def photo_crops(per_class: int, seed: int, size: int, side=(0.5, 1.0)):
    """(pixels uint8 (n, size, size, 3), labels): `per_class` seeded square crops of every
    COLOUR_PHOTOS photo, `side` (a range) of its shorter side, maybe mirrored, brightness
    x0.85..1.15, resized bilinear to size x size; classes in COLOUR_PHOTOS' order."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for k, name in enumerate(COLOUR_PHOTOS.values()):
        src = _small_photo(name)
        w, h = src.size
        for _ in range(per_class):
            s = rng.uniform(*side) * min(w, h)
            left, top = rng.uniform(0, w - s), rng.uniform(0, h - s)
            im = src.resize((size, size), Image.Resampling.BILINEAR,
                            box=(left, top, left + s, top + s))
            if rng.random() < 0.5:
                im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            a = np.asarray(im, np.float32) * rng.uniform(0.85, 1.15)
            xs.append(np.clip(a + 0.5, 0, 255).astype(np.uint8))
            ys.append(k)
    return np.stack(xs), np.array(ys, np.int64)


def write_labelled_pngs(root: Path, pixels: np.ndarray, labels: np.ndarray,
                        class_names) -> Path:
    """A labelled folder root/<class>/<NNNN>.png of RGB pixels (lossless: decoding it at the
    same size gives the pixels back)."""
    from PIL import Image

    root = Path(root)
    for i, (p, k) in enumerate(zip(pixels, labels, strict=True)):
        folder = root / class_names[k]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(p, "RGB").save(folder / f"{i:04d}.png")
    return root


def standardize_nchw(pixels: np.ndarray, mean, std) -> np.ndarray:
    """(x/255 - mean)/std per channel, NHWC -> NCHW flattened (n, 3*H*W): what a PyTorch
    user's Normalize + ToTensor feeds a model, computed here in numpy, independently of
    digitkit's conventions."""
    x = (pixels.astype(np.float32) / 255 - np.float32(mean)) / np.float32(std)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2).reshape(len(x), -1))


def fit_softmax_regression(x: np.ndarray, y: np.ndarray, k: int, l2: float = 1e-4,
                           max_iter: int = 300) -> tuple[np.ndarray, np.ndarray]:
    """(W (d, K), b (K,)): multinomial logistic regression on x (n, d), full batch, L-BFGS
    to convergence, an L2 penalty on W only. Converged and with free biases, the model's
    training loss is stationary in its input's per-channel means (a mean shift is a bias
    shift): a fit's optimum sits at the training constants up to noise, not at wherever an
    unfinished optimiser stopped."""
    from scipy.optimize import minimize  # scikit-image's own dependency

    n, d = x.shape
    x = x.astype(np.float64)
    onehot = np.eye(k)[y]

    def loss(theta):
        w, b = theta[:d * k].reshape(d, k), theta[d * k:]
        z = x @ w + b
        z -= z.max(1, keepdims=True)
        lse = np.log(np.exp(z).sum(1))
        g = (np.exp(z - lse[:, None]) - onehot) / n
        value = np.mean(lse - (z * onehot).sum(1)) + 0.5 * l2 * np.sum(w * w)
        return value, np.concatenate([(x.T @ g + l2 * w).ravel(), g.sum(0)])

    r = minimize(loss, np.zeros(d * k + k), jac=True, method="L-BFGS-B",
                 options={"maxiter": max_iter, "gtol": 1e-7})
    return r.x[:d * k].reshape(d, k).astype(np.float32), r.x[d * k:].astype(np.float32)


def write_linear_nchw_onnx(path: Path, w: np.ndarray, b: np.ndarray, size: int,
                           channels: int = 3) -> Path:
    """The linear classifier as a PyTorch user's export: input "input" (batch, C, H, W),
    Flatten, Gemm, output "logits" (no softmax, no metadata)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("Flatten", ["input"], ["flat"], axis=1),
             helper.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], ["logits"], transB=1)]
    graph = helper.make_graph(
        nodes, "main_graph",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                       ["batch", channels, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", w.shape[1]])],
        initializer=[numpy_helper.from_array(np.ascontiguousarray(w.T), "fc.weight"),
                     numpy_helper.from_array(b, "fc.bias")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                              producer_name="pytorch")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return Path(path)
