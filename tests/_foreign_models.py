"""Digit classifiers made the ways people make them, for the bring-your-own-model tests.

Each is trained for seconds on the first 6,000 MNIST training images, in one input convention,
with that convention applied OUTSIDE the model (as the classic notebook does), and saved the way
its kind of author saves it. `ForeignZoo` builds each on first use and keeps it for the session
(the test files share one zoo through `zoo_for`).

  name                      file            input            trained on                outputs
  notebook-axis1            Keras 3 .h5     (N,28,28)        normalize(x, axis=1)      softmax
  notebook-axis-1           Keras 3 .h5     (N,28,28)        normalize(x, axis=-1)     softmax
  convnet-unit              .keras          (N,28,28,1)      x/255 (ReLU convnet)      softmax
  flat-logits-standardized  Keras 3 .h5     (N,784)          (x/255-0.1307)/0.3081     logits
  black-on-white            Keras 3 .h5     (N,28,28)        (255-x)/255               softmax
  nchw-onnx-unit            .onnx, opset 13 (N,1,28,28)      x/255, numpy Adam MLP     logits
                                            "input.1"
  legacy-notebook-axis1     tf.keras 2 .h5  (N,28,28)        normalize(x, axis=1)      softmax
                            (committed under tests/fixtures; scripts/make_legacy_h5.py trained
                            it on 12,000 images: tf-keras is not needed to run the tests)
  five-classes              Keras 3 .h5     (N,28,28)        (not a digit classifier: 5 outputs)
  untrained                 Keras 3 .h5     (N,28,28)        nothing (random weights)  softmax

`minmax_source` is a TensorFlow-free SourceModel that rescales each image to its own min..max
first: raw, /255 and both standardizations then give it the same outputs (one convention for
it); with a `tilt` that depends slightly on the input scale they give nearly the same outputs,
the case detection must refuse as too close to call.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from digitkit.model.conventions import (
    BLACK_ON_WHITE,
    LOGITS,
    MNIST_MEAN,
    MNIST_STD,
    InputConvention,
)

REPO = Path(__file__).resolve().parents[1]
LEGACY_H5 = REPO / "tests" / "fixtures" / "legacy_tfkeras_notebook.h5"

#: 6,000 images, 3 epochs of batch 64 at Adam 3e-3: about a second per MLP on 2 cores and
#: 86-95% test accuracy, well above detection's 80% floor. (Batch 32 at 1e-3, Keras's
#: default, costs twice the steps and leaves the black-on-white MLP at 82%.)
TRAIN_IMAGES = 6000
EPOCHS = 3
BATCH = 64
LEARNING_RATE = 3e-3

#: name -> (file name, the convention it was trained on; None: refused by detection)
FIXTURES = {
    "notebook-axis1": ("notebook_axis1.h5", InputConvention(scale="l2", l2_axis=1)),
    "notebook-axis-1": ("notebook_axis-1.h5", InputConvention(scale="l2", l2_axis=-1)),
    "convnet-unit": ("convnet_unit.keras", InputConvention(layout="NHWC", scale="unit")),
    "flat-logits-standardized": ("flat_logits.h5", InputConvention(
        layout="flat", scale="standardized", mean=MNIST_MEAN, std=MNIST_STD, outputs=LOGITS)),
    "black-on-white": ("black_on_white.h5", InputConvention(scale="unit", ink=BLACK_ON_WHITE)),
    "nchw-onnx-unit": ("nchw_unit.onnx", InputConvention(layout="NCHW", scale="unit",
                                                         outputs=LOGITS)),
    "legacy-notebook-axis1": (LEGACY_H5.name, InputConvention(scale="l2", l2_axis=1)),
    "five-classes": ("five_classes.h5", None),
    "untrained": ("untrained.h5", None),
}
DETECTABLE = [name for name, (_, conv) in FIXTURES.items() if conv is not None]
KERAS_DETECTABLE = [n for n in DETECTABLE if not FIXTURES[n][0].endswith(".onnx")]
ONNX_INPUT_NAME = "input.1"  # what torch.onnx.export names an unnamed input


def _mlp(input_shape, outputs=10, activation="softmax"):
    import keras
    from keras import layers

    # The classic notebook's network (Flatten, Dense 64, Dense 32, Dense 10).
    return keras.Sequential([keras.Input(shape=input_shape), layers.Flatten(),
                             layers.Dense(64, activation="relu"),
                             layers.Dense(32, activation="relu"),
                             layers.Dense(outputs, activation=activation)])


def _convnet():
    import keras
    from keras import layers

    # The Keras mnist_convnet example, narrowed (8/16 filters) to train in seconds.
    return keras.Sequential([keras.Input(shape=(28, 28, 1)),
                             layers.Conv2D(8, 3, activation="relu"), layers.MaxPooling2D(2),
                             layers.Conv2D(16, 3, activation="relu"), layers.MaxPooling2D(2),
                             layers.Flatten(), layers.Dense(10, activation="softmax")])


def _fit(model, x, y, from_logits=False):
    import keras

    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits)
    model.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE), loss=loss)
    model.fit(x, y, epochs=EPOCHS, batch_size=BATCH, verbose=0)
    return model


def _keras_model(name, x, y):
    import keras

    keras.utils.set_random_seed(0)
    xf = x.astype(np.float32)
    if name in ("notebook-axis1", "notebook-axis-1"):
        axis = 1 if name == "notebook-axis1" else -1
        return _fit(_mlp((28, 28)), keras.utils.normalize(x, axis=axis), y)
    if name == "convnet-unit":
        return _fit(_convnet(), (xf / 255)[..., None], y)
    if name == "flat-logits-standardized":
        xs = ((xf / 255 - MNIST_MEAN) / MNIST_STD).reshape(len(x), 784)
        return _fit(_mlp((784,), activation=None), xs, y, from_logits=True)
    if name == "black-on-white":
        return _fit(_mlp((28, 28)), (255 - xf) / 255, y)
    if name == "five-classes":
        return _mlp((28, 28), outputs=5)  # refused for its shape: no need to train it
    if name == "untrained":
        return _mlp((28, 28))
    raise KeyError(name)


# ---------------------------------------------------------------- a TensorFlow-free ONNX MLP


def train_numpy_mlp(x: np.ndarray, y: np.ndarray, hidden=64, steps=150, batch=600, lr=0.01,
                    seed=0):
    """A ReLU MLP 784-hidden-10 trained with Adam on cross-entropy (what a PyTorch tutorial
    does), on x already in its convention. Returns its weights (w1, b1, w2, b2).

    150 steps of 600 images (15 epochs of the 6,000) reach ~93%; few large steps rather than
    many small ones because each step is a few BLAS calls, and on a busy machine BLAS's
    thread hand-offs, not the arithmetic, are what a step costs."""
    rng = np.random.default_rng(seed)
    x = x.reshape(len(x), -1).astype(np.float32)
    params = [(rng.standard_normal((784, hidden)) * np.sqrt(2 / 784)).astype(np.float32),
              np.zeros(hidden, np.float32),
              (rng.standard_normal((hidden, 10)) * np.sqrt(2 / hidden)).astype(np.float32),
              np.zeros(10, np.float32)]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    onehot = np.eye(10, dtype=np.float32)[y]
    for t in range(1, steps + 1):
        idx = rng.choice(len(x), batch, replace=False)
        xb, (w1, b1, w2, b2) = x[idx], params
        h = np.maximum(xb @ w1 + b1, 0)
        z = h @ w2 + b2
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        g = (p - onehot[idx]) / batch
        gh = (g @ w2.T) * (h > 0)
        for i, grad in enumerate((xb.T @ gh, gh.sum(0), h.T @ g, g.sum(0))):
            m[i] = 0.9 * m[i] + 0.1 * grad
            v[i] = 0.999 * v[i] + 0.001 * grad * grad
            params[i] -= lr * (m[i] / (1 - 0.9**t)) / (np.sqrt(v[i] / (1 - 0.999**t)) + 1e-8)
    return tuple(params)


def write_nchw_onnx(path: Path, weights, opset: int = 13, batch="batch_size",
                    input_name: str = ONNX_INPUT_NAME) -> Path:
    """The MLP as torch.onnx.export writes one: input `input.1` (batch, 1, 28, 28), Flatten,
    Gemm, Relu, Gemm, logits out (no softmax), numbered tensor names."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w1, b1, w2, b2 = weights
    nodes = [
        helper.make_node("Flatten", [input_name], ["/Flatten_output_0"], axis=1),
        helper.make_node("Gemm", ["/Flatten_output_0", "fc1.weight", "fc1.bias"],
                         ["/fc1/Gemm_output_0"], transB=1),
        helper.make_node("Relu", ["/fc1/Gemm_output_0"], ["/Relu_output_0"]),
        helper.make_node("Gemm", ["/Relu_output_0", "fc2.weight", "fc2.bias"], ["19"],
                         transB=1),
    ]
    graph = helper.make_graph(
        nodes, "main_graph",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [batch, 1, 28, 28])],
        [helper.make_tensor_value_info("19", TensorProto.FLOAT, [batch, 10])],
        initializer=[numpy_helper.from_array(w1.T.copy(), "fc1.weight"),
                     numpy_helper.from_array(b1, "fc1.bias"),
                     numpy_helper.from_array(w2.T.copy(), "fc2.weight"),
                     numpy_helper.from_array(b2, "fc2.bias")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="pytorch", producer_version="2.5.0")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def minmax_source(weights, tilt: float = 0.0, name: str = "minmax"):
    """The numpy MLP behind a per-image min-max rescaling, on (N, 28, 28) inputs; `tilt`
    adds tilt * (the image's mean input value) * (-1..1 over the classes) to its logits."""
    from digitkit.model.foreign import SourceModel

    w1, b1, w2, b2 = weights
    classes = np.linspace(-1, 1, 10, dtype=np.float32)

    def call(v):
        f = v.reshape(len(v), -1).astype(np.float32)
        lo, hi = f.min(1, keepdims=True), f.max(1, keepdims=True)
        u = (f - lo) / np.maximum(hi - lo, np.float32(1e-12))
        z = np.maximum(u @ w1 + b1, 0) @ w2 + b2
        return z + np.float32(tilt) * f.mean(1, keepdims=True) * classes

    return SourceModel(name, (None, 28, 28), call, (None, 10))


# ---------------------------------------------------------------- the zoo


class ForeignZoo:
    """Builds each fixture on first use under `root` and keeps it; tests treat the files as
    read-only (copy one before writing beside it)."""

    def __init__(self, root: Path, mnist_dir: Path):
        self.root = Path(root)
        self.mnist_dir = Path(mnist_dir)
        self._paths: dict[str, Path] = {}
        self._train = None
        self._mlp_weights = None

    def train_data(self):
        if self._train is None:
            from digitkit.data import read_idx

            x, _ = read_idx(self.mnist_dir / "train-images-idx3-ubyte.gz")
            y, _ = read_idx(self.mnist_dir / "train-labels-idx1-ubyte.gz")
            self._train = x[:TRAIN_IMAGES], y[:TRAIN_IMAGES]
        return self._train

    def nchw_weights(self):
        if self._mlp_weights is None:
            x, y = self.train_data()
            self._mlp_weights = train_numpy_mlp(x.astype(np.float32) / 255, y)
        return self._mlp_weights

    def path(self, name: str) -> Path:
        if name not in self._paths:
            file = FIXTURES[name][0]
            if name == "legacy-notebook-axis1":
                self._paths[name] = LEGACY_H5
            elif name == "nchw-onnx-unit":
                self._paths[name] = write_nchw_onnx(self.root / file, self.nchw_weights())
            else:
                model = _keras_model(name, *self.train_data())
                model.save(self.root / file)
                self._paths[name] = self.root / file
        return self._paths[name]

    def source(self, name: str):
        """The fixture as a digitkit.model.foreign.SourceModel (loaded the way export will)."""
        from digitkit.model.foreign import keras_source, onnx_source

        path = self.path(name)
        if path.suffix == ".onnx":
            from digitkit.predictors.ort import open_session

            return onnx_source(open_session(path), path.name)
        from digitkit.model.loading import load_keras_model

        return keras_source(load_keras_model(path, check_contract=False), path.name)


_ZOOS: dict[Path, ForeignZoo] = {}


def zoo_for(tmp_path_factory, mnist_dir) -> ForeignZoo:
    """One zoo per test session, shared by every test file that asks."""
    key = Path(mnist_dir)
    if key not in _ZOOS:
        _ZOOS[key] = ForeignZoo(tmp_path_factory.mktemp("foreign_models"), mnist_dir)
    return _ZOOS[key]
