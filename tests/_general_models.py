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
