"""A small, TensorFlow-free ONNX digit classifier for fast inference tests.

A linear softmax classifier over the 784 pixels, fitted in closed form (ridge least squares
on one-hot targets) on MNIST training images, written with `onnx.helper`. It honours the
model contract of `digitkit.architectures` (input "pixels" float32 (N, 28, 28) raw 0..255, output
"probabilities" float32 (N, 10)) and scores about 85% on the test set: good enough to check
that a preprocessed image is classified like its original, cheap enough to build per session.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: Logit scale: least-squares outputs live in about [0, 1]; x10 gives peaked but not saturated
#: probabilities, so top-k ordering and confidences are meaningful.
TEMPERATURE = 10.0


def fit_linear(x_train: np.ndarray, y_train: np.ndarray, n: int = 20000, ridge: float = 10.0):
    """Return (W (784, 10), b (10,)) for pixels in 0..255."""
    x = x_train[:n].reshape(n, -1).astype(np.float64) / 255.0
    xb = np.hstack([x, np.ones((n, 1))])
    y = np.eye(10)[y_train[:n]]
    a = xb.T @ xb + ridge * np.eye(xb.shape[1])
    wb = np.linalg.solve(a, xb.T @ y) * TEMPERATURE
    return (wb[:-1] / 255.0).astype(np.float32), wb[-1].astype(np.float32)


def write_linear_onnx(path: Path, w: np.ndarray, b: np.ndarray) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [
        helper.make_node("Reshape", ["pixels", "flat_shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "W"], ["logits_nb"]),
        helper.make_node("Add", ["logits_nb", "b"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "linear_digits",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["N", 28, 28])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 10])],
        initializer=[
            numpy_helper.from_array(np.array([-1, 784], np.int64), "flat_shape"),
            numpy_helper.from_array(w, "W"),
            numpy_helper.from_array(b, "b"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by every onnxruntime >= 1.14
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def predict_numpy(w: np.ndarray, b: np.ndarray, x: np.ndarray) -> np.ndarray:
    logits = x.reshape(len(x), -1).astype(np.float32) @ w + b
    return logits.argmax(axis=1)


def build_linear_model(mnist_dir: Path, out_dir: Path):
    """Fit on the first 20,000 training images and write `linear.onnx`; returns (path, w, b)."""
    from digitkit.data import read_idx

    x, _ = read_idx(mnist_dir / "train-images-idx3-ubyte.gz")
    y, _ = read_idx(mnist_dir / "train-labels-idx1-ubyte.gz")
    w, b = fit_linear(x, y)
    return write_linear_onnx(out_dir / "linear.onnx", w, b), w, b
