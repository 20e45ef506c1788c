"""The predictor layer: every runtime that turns pixels into probabilities, built in one place.

A predictor has `.predict(pixels float32 (N, 28, 28)) -> float32 (N, 10)`, `.load()`,
`.runtime` and `.model_path`; constructors are cheap, the runtime loads on first use.

`ENGINES` is the one table of code paths: `bench` times every row of it, `infer` and export
validation open the same predictors. Adding a runtime is one row here and one predictor class.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass

from digitkit.errors import ModelError, UsageError
from digitkit.model.files import ONNX, SAVEDMODEL, TFLITE, identify
from digitkit.predictors.ort import (
    DEFAULT_SETTINGS,
    OnnxPredictor,
    OrtSettings,
    RegimeOnnxPredictor,
    regime_settings,
)

RUNTIMES = ("onnxruntime", "tensorflow")


#: The extra that brings the optional runtimes (OpenVINO, LiteRT).
RUNTIMES_EXTRA = "runtimes"


@dataclass(frozen=True)
class Engine:
    """One way of running one copy of a model."""

    name: str
    runtime: str  # the user-facing runtime group (bench --runtimes)
    copy: str  # which ModelCopies attribute it loads
    description: str
    open: Callable  # (path, threads, spinning, trust_model) -> predictor; spinning None: per
    # regime; trust_model: run a model the model layer's safety rule would refuse
    precision: str = "fp32"  # the arithmetic it runs in: fp32, bf16, int8
    requires: str | None = None  # a module of an optional extra it cannot run without
    needs_cpu: str | None = None  # a precision this CPU must run natively

    def unavailable(self) -> str | None:
        """Why this engine cannot run here (not installed, no such CPU support), or None.

        Cheap: finds the module without importing it, except for a CPU capability, which
        asks the runtime itself."""
        if self.requires is not None:
            try:
                found = importlib.util.find_spec(self.requires) is not None
            except (ImportError, ValueError):
                found = False
            if not found:
                return f"not installed: pip install 'digitkit[{RUNTIMES_EXTRA}]'"
        if self.needs_cpu is not None:
            from digitkit.predictors.openvino import cpu_supports

            if not cpu_supports(self.needs_cpu):
                return f"this CPU has no native {self.needs_cpu}"
        return None


def _ort(path, threads, spinning, trust_model=False):
    # spinning None: the settings follow the batch size (regime_settings), as in `infer`;
    # an explicit value pins one configuration for every batch size.
    if spinning is None:
        return RegimeOnnxPredictor(path, cores=threads)
    return OnnxPredictor(path, OrtSettings(threads, spinning))


def _openvino(precision):
    def open_(path, threads, spinning, trust_model=False):
        from digitkit.predictors.openvino import OpenVinoPredictor

        return OpenVinoPredictor(path, threads, precision)

    return open_


def _litert(path, threads, spinning, trust_model=False):
    from digitkit.predictors.litert import LiteRTPredictor

    return LiteRTPredictor(path, threads)


def _savedmodel(path, threads, spinning, trust_model=False):
    from digitkit.predictors.tf import SavedModelPredictor

    return SavedModelPredictor(path, threads, trust_model)


def _keras(mode):
    def open_(path, threads, spinning, trust_model=False):
        from digitkit.predictors.tf import KerasPredictor

        return KerasPredictor(path, threads, mode=mode, trust_model=trust_model)

    return open_


ENGINES = {e.name: e for e in (
    Engine("onnxruntime", "onnxruntime", "onnx",
           "ONNX Runtime InferenceSession.run, float model, threads per regime", _ort),
    Engine("onnxruntime-int8", "onnxruntime", "onnx_int8",
           "ONNX Runtime InferenceSession.run, int8 (QDQ) model", _ort, precision="int8"),
    Engine("openvino", "openvino", "onnx",
           "OpenVINO CPU plugin on the ONNX copy, INFERENCE_PRECISION_HINT f32",
           _openvino("fp32"), requires="openvino"),
    Engine("openvino-bf16", "openvino", "onnx",
           "OpenVINO CPU plugin on the ONNX copy, bf16 (its default where the CPU has it)",
           _openvino("bf16"), precision="bf16", requires="openvino", needs_cpu="bf16"),
    Engine("litert", "litert", "tflite",
           "LiteRT (ai-edge-litert) interpreter with XNNPACK on the .tflite copy", _litert,
           requires="ai_edge_litert"),
    Engine("tf-savedmodel", "tensorflow", "saved_model",
           "SavedModel signature 'serving_default'", _savedmodel),
    Engine("tf-function", "keras", "keras",
           "tf.function(model(x, training=False)), fixed signature", _keras("function")),
    Engine("keras-predict", "keras", "keras",
           "Keras model.predict(x, batch_size=len(x))", _keras("predict")),
)}


def open_engine(engine: str, path: str | os.PathLike, threads: int | None = None,
                spinning: bool | None = False, trust_model: bool = False):
    """The predictor of one ENGINES row on `path`."""
    if engine not in ENGINES:
        raise UsageError(f"unknown engine {engine!r}; choose from {', '.join(ENGINES)}")
    return ENGINES[engine].open(path, threads, spinning, trust_model)


def open_predictor(model_path: str | os.PathLike, runtime: str | None = None,
                   settings: OrtSettings = DEFAULT_SETTINGS, trust_model: bool = False):
    """The natural predictor for a model file: .onnx on ONNX Runtime, a SavedModel directory
    or a Keras file on TensorFlow (`runtime` may only confirm that choice)."""
    model = identify(model_path)
    if runtime is not None and runtime not in RUNTIMES:
        raise UsageError(f"unknown runtime {runtime!r}; choose from {', '.join(RUNTIMES)}")
    if runtime is not None and runtime != model.runtime:
        kind = ".onnx model" if model.kind == ONNX else "Keras/SavedModel model"
        raise UsageError(f"{model.path}: a {kind} runs on {model.runtime}, not {runtime}")
    if model.kind == ONNX:
        return OnnxPredictor(model.path, settings)
    if model.kind == TFLITE:
        from digitkit.predictors.litert import LiteRTPredictor

        return LiteRTPredictor(model.path, settings.threads)
    from digitkit.predictors.tf import KerasPredictor, SavedModelPredictor

    if model.kind == SAVEDMODEL:
        return SavedModelPredictor(model.path, settings.threads, trust_model)
    return KerasPredictor(model.path, settings.threads, trust_model=trust_model)


__all__ = ["ENGINES", "RUNTIMES", "Engine", "ModelError", "OnnxPredictor", "OrtSettings",
           "RegimeOnnxPredictor", "open_engine", "open_predictor", "regime_settings"]
