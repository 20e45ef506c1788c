"""TensorFlow predictors: a SavedModel's serving signature and a Keras model three ways.

TensorFlow is imported inside methods only (through the model layer's loaders), never at
module level: the ONNX path must not pay its seconds of import time.
"""

from __future__ import annotations

import os

import numpy as np

from digitkit.model.contract import OUTPUT_NAME
from digitkit.model.loading import import_tensorflow, load_keras_model, load_savedmodel
from digitkit.predictors.base import LazyPredictor

#: How a Keras model is called: "call" model(x) eagerly (infer), "function" a compiled
#: tf.function with a fixed signature (the fair fast path), "predict" Keras's predict().
KERAS_MODES = ("call", "function", "predict")


def configure_threads(threads: int | None):
    """Size TensorFlow's pools before any op runs (it fixes them once). Inter-op 1 like ORT's
    sequential executor: the models are a chain of ops, nothing runs side by side."""
    tf = import_tensorflow("the TensorFlow runtime")
    if threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:
            pass  # already initialised in this process: its pools stay as they are
    return tf


def runtime_version() -> str:
    return f"tensorflow {import_tensorflow().__version__}"


class SavedModelPredictor(LazyPredictor):
    """A SavedModel directory through its "serving_default" signature."""

    runtime = "tensorflow"
    accepts_directory = True

    def __init__(self, model_path: str | os.PathLike, threads: int | None = None,
                 trust_model: bool = False):
        super().__init__(model_path)
        self.threads = threads
        self.trust_model = trust_model
        self._sig = None

    @property
    def signature(self):
        return self.load()._sig

    def options(self) -> dict:
        return {"threads": self.threads, "signature": "serving_default"}

    def _load(self):
        configure_threads(self.threads)
        self._sig = load_savedmodel(self.model_path, self.trust_model)

    def outputs(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        return self.signature(np.asarray(pixels, dtype=np.float32))

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        out = self.outputs(pixels)
        name = OUTPUT_NAME if OUTPUT_NAME in out else next(iter(out))
        return np.asarray(out[name], dtype=np.float32)


class KerasPredictor(LazyPredictor):
    """A Keras .h5/.keras model, loaded through the safe loader."""

    runtime = "tensorflow"
    # A directory is refused by the loader with its reason (not a Keras file), as before.
    accepts_directory = True

    def __init__(self, model_path: str | os.PathLike, threads: int | None = None,
                 mode: str = "call", trust_model: bool = False):
        super().__init__(model_path)
        if mode not in KERAS_MODES:
            raise ValueError(f"unknown Keras mode {mode!r}")
        self.threads = threads
        self.mode = mode
        self.trust_model = trust_model
        self._fn = None

    def options(self) -> dict:
        return {"threads": self.threads, "mode": self.mode}

    def _load(self):
        from digitkit.predictors.runnable import model_contract

        tf = configure_threads(self.threads)
        # Held to the contract it carries (a general classifier's embedded record or its
        # export directory's), else to the digit contract, as every Keras file was before.
        contract = model_contract(self.model_path)
        model = load_keras_model(self.model_path, self.trust_model, check_contract=False)
        contract.check_keras(self.model_path, model)
        if self.mode == "predict":
            self._fn = lambda x: model.predict(x, batch_size=len(x), verbose=0)
        elif self.mode == "function":
            @tf.function(input_signature=[tf.TensorSpec((None, *contract.input_shape),
                                                        tf.float32)],
                         reduce_retracing=True)
            def call(x):
                return model(x, training=False)

            self._fn = lambda x: call(tf.constant(x)).numpy()
        else:
            self._fn = lambda x: np.asarray(model(x, training=False))
        self.model = model

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        self.load()
        return np.asarray(self._fn(np.asarray(pixels, dtype=np.float32)), dtype=np.float32)
