"""Predictors: one `.predict(pixels) -> probabilities` over each runtime.

`pixels` is float32 (N, 28, 28), raw 0..255, white ink on black; the result is float32 (N, 10).
Constructors are cheap and check only that the file is there; the runtime is loaded on the
first `predict` (or `load()`), so a process pool can start before any runtime threads exist.

TensorFlow is imported only inside TensorflowPredictor: the ONNX path must never pay its
seconds of import time.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from digitkit.errors import DependencyError, ModelError, UsageError

RUNTIMES = ("onnxruntime", "tensorflow")
_TF_SUFFIXES = (".h5", ".keras")


class OnnxPredictor:
    runtime = "onnxruntime"

    def __init__(self, model_path: str | os.PathLike, threads: int | None = None,
                 spin: bool = True):
        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise ModelError(f"{self.model_path}: no such model file")
        #: intra-op threads; None lets ONNX Runtime use every core.
        self.threads = threads
        #: spin-waiting threads answer faster but burn cores other processes (decoders) need
        self.spin = spin
        self._session = None
        self._input = None
        self._output = None
        self._input_shape = None

    def load(self):
        if self._session is not None:
            return self
        try:
            import onnxruntime as ort
        except ImportError:
            raise DependencyError("onnxruntime is not installed: pip install onnxruntime") from None
        opts = ort.SessionOptions()
        if self.threads:
            opts.intra_op_num_threads = self.threads
            # One graph, run node after node: inter-op threads would only add contention.
            opts.inter_op_num_threads = 1
            opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        if not self.spin:
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
            opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
        try:
            session = ort.InferenceSession(str(self.model_path), sess_options=opts,
                                           providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types for bad files
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ModelError(f"{self.model_path}: not a usable ONNX model ({reason})") from None
        inputs, outputs = session.get_inputs(), session.get_outputs()
        if len(inputs) != 1:
            raise ModelError(f"{self.model_path}: expected one input, the model has "
                             f"{len(inputs)}: {', '.join(i.name for i in inputs)}")
        names = [o.name for o in outputs]
        self._output = "probabilities" if "probabilities" in names else names[0]
        self._input = inputs[0].name
        self._input_shape = _static_feature_shape(inputs[0].shape)
        self._session = session
        return self

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        self.load()
        x = np.asarray(pixels, dtype=np.float32)
        if self._input_shape is not None and self._input_shape != x.shape[1:]:
            # Accept exports that flatten (N, 784) or add a channel (N, 28, 28, 1).
            x = x.reshape((len(x),) + self._input_shape)
        return self._session.run([self._output], {self._input: x})[0].astype(np.float32,
                                                                             copy=False)


def _static_feature_shape(shape) -> tuple | None:
    dims = tuple(shape[1:])
    if all(isinstance(d, int) and d > 0 for d in dims) and int(np.prod(dims)) == 784:
        return dims
    return None


class TensorflowPredictor:
    """A SavedModel directory (serving_default: "pixels" -> "probabilities") or a Keras file."""

    runtime = "tensorflow"

    def __init__(self, model_path: str | os.PathLike):
        self.model_path = Path(model_path)
        if not self.model_path.exists():
            raise ModelError(f"{self.model_path}: no such model file or directory")
        self._fn = None

    def load(self):
        if self._fn is not None:
            return self
        try:
            import tensorflow as tf
        except ImportError:
            raise DependencyError("tensorflow is not installed: pip install tensorflow-cpu") \
                from None
        p = self.model_path
        try:
            if p.is_dir():
                loaded = tf.saved_model.load(str(p))
                sig = loaded.signatures.get("serving_default")
                if sig is None:
                    raise ModelError(f"{p}: SavedModel has no serving_default signature")
                in_name = next(iter(sig.structured_input_signature[1]))
                out_names = list(sig.structured_outputs)
                out_name = "probabilities" if "probabilities" in out_names else out_names[0]
                self._keep = loaded  # the signature needs its object alive
                self._fn = lambda x: sig(**{in_name: tf.constant(x)})[out_name].numpy()
            else:
                import keras

                model = keras.models.load_model(str(p), compile=False)
                self._fn = lambda x: np.asarray(model(x, training=False))
        except ModelError:
            raise
        except Exception as e:
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ModelError(f"{p}: cannot load model ({reason})") from None
        return self

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        self.load()
        return np.asarray(self._fn(np.asarray(pixels, dtype=np.float32)), dtype=np.float32)


def runtime_for(model_path: str | os.PathLike) -> str:
    p = Path(model_path)
    if p.suffix.lower() == ".onnx":
        return "onnxruntime"
    if p.is_dir() or p.suffix.lower() in _TF_SUFFIXES:
        return "tensorflow"
    raise UsageError(f"{p}: unknown model type; expected a .onnx file, a SavedModel "
                     "directory, or a .h5/.keras file")


def open_predictor(model_path: str | os.PathLike, runtime: str | None = None,
                   threads: int | None = None, spin: bool = True):
    """A predictor for `model_path`: .onnx on ONNX Runtime, a SavedModel dir or .h5 on TF."""
    p = Path(model_path)
    if not p.exists():
        raise ModelError(f"{p}: no such model file or directory")
    natural = runtime_for(p)
    runtime = runtime or natural
    if runtime not in RUNTIMES:
        raise UsageError(f"unknown runtime {runtime!r}; choose from {', '.join(RUNTIMES)}")
    if runtime != natural:
        kind = ".onnx model" if natural == "onnxruntime" else "Keras/SavedModel model"
        raise UsageError(f"{p}: a {kind} runs on {natural}, not {runtime}")
    if runtime == "onnxruntime":
        return OnnxPredictor(p, threads=threads, spin=spin)
    return TensorflowPredictor(p)
