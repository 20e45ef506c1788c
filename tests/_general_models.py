"""Builders of small general (non-digit) image classifiers for the tests (issue 18).

Other test modules may add builders here; existing names are not renamed.

`fit_pixel_linear` fits a ridge-regression linear classifier on a labelled folder's tensors
(closed form, no TensorFlow); `write_pixel_onnx` writes it as digitkit's general contract
model: input "pixels" float32 (N, H, W, C) raw 0..255, output "probabilities" (N, K), with the
contract's ONNX metadata_props (class names, input size and pixel policy), as `digitkit
export` records them. Built with onnx.helper: seconds, and no TensorFlow.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np

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
