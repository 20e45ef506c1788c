"""The predictor layer: every runtime that turns pixels into probabilities, built in one place.

Every predictor implements the `Predictor` protocol (`predictors.base`): `.predict(pixels
float32 (N, 28, 28)) -> float32 (N, 10)`, `.load()`, `.runtime` and `.model_path`; it derives
from `LazyPredictor`, so constructors are cheap and the runtime loads once, on first use.

`RUNTIMES` is the one table of runtimes, each a `Runtime` row: what `bench --runtimes`
selects (a row by name, or every row of a `group`) and times, and what `infer` and export
validation open through the same predictors. Adding a runtime is one row here and one
predictor class.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass

from digitkit.errors import ModelError, UsageError
from digitkit.model.files import ONNX, SAVEDMODEL, TFLITE, identify
from digitkit.model.loading import TENSORFLOW_EXTRA
from digitkit.predictors.base import LazyPredictor, Predictor
from digitkit.predictors.ort import (
    DEFAULT_SETTINGS,
    OnnxPredictor,
    OrtSettings,
    RegimeOnnxPredictor,
    regime_settings,
)

#: What `open_predictor`'s `runtime` may name (`infer --runtime`): the runtime a model file
#: runs on by its kind, which that option may only confirm.
NATURAL_RUNTIMES = ("onnxruntime", "tensorflow")


#: The extra that brings the optional runtimes (OpenVINO, LiteRT).
RUNTIMES_EXTRA = "runtimes"


@dataclass(frozen=True)
class Runtime:
    """One way of running one copy of a model: a row of `RUNTIMES`."""

    name: str
    group: str  # the user-facing runtime group (bench --runtimes takes a group or a name)
    copy: str  # which ModelCopies attribute it loads
    description: str
    open: Callable  # (path, threads, spinning) -> Predictor; spinning None: per regime
    precision: str = "fp32"  # the arithmetic it runs in: fp32, bf16, int8
    extra: str | None = None  # the optional extra it comes with (None: the base install)
    requires: str | None = None  # a module of that extra it cannot run without
    needs_cpu: str | None = None  # a precision this CPU must run natively

    def unavailable(self) -> str | None:
        """Why this runtime cannot run here (not installed, no such CPU support), or None.

        Cheap: finds the module without importing it, except for a CPU capability, which
        asks the runtime itself. The TensorFlow rows name no module: without TensorFlow they
        fail when run, with the one line naming the extra (model.loading)."""
        if self.requires is not None:
            try:
                found = importlib.util.find_spec(self.requires) is not None
            except (ImportError, ValueError):
                found = False
            if not found:
                return f"not installed: pip install 'digitkit[{self.extra}]'"
        if self.needs_cpu is not None:
            from digitkit.predictors.openvino import cpu_supports

            if not cpu_supports(self.needs_cpu):
                return f"this CPU has no native {self.needs_cpu}"
        return None


def _ort(path, threads, spinning):
    # spinning None: the settings follow the batch size (regime_settings), as in `infer`;
    # an explicit value pins one configuration for every batch size.
    if spinning is None:
        return RegimeOnnxPredictor(path, cores=threads)
    return OnnxPredictor(path, OrtSettings(threads, spinning))


def _openvino(precision):
    def open_(path, threads, spinning):
        from digitkit.predictors.openvino import OpenVinoPredictor

        return OpenVinoPredictor(path, threads, precision)

    return open_


def _litert(path, threads, spinning):
    from digitkit.predictors.litert import LiteRTPredictor

    return LiteRTPredictor(path, threads)


def _savedmodel(path, threads, spinning):
    from digitkit.predictors.tf import SavedModelPredictor

    return SavedModelPredictor(path, threads)


def _keras(mode):
    def open_(path, threads, spinning):
        from digitkit.predictors.tf import KerasPredictor

        return KerasPredictor(path, threads, mode=mode)

    return open_


RUNTIMES = {r.name: r for r in (
    Runtime("onnxruntime", "onnxruntime", "onnx",
            "ONNX Runtime InferenceSession.run, float model, threads per regime", _ort),
    Runtime("onnxruntime-int8", "onnxruntime", "onnx_int8",
            "ONNX Runtime InferenceSession.run, int8 (QDQ) model", _ort, precision="int8"),
    Runtime("openvino", "openvino", "onnx",
            "OpenVINO CPU plugin on the ONNX copy, INFERENCE_PRECISION_HINT f32",
            _openvino("fp32"), extra=RUNTIMES_EXTRA, requires="openvino"),
    Runtime("openvino-bf16", "openvino", "onnx",
            "OpenVINO CPU plugin on the ONNX copy, bf16 (its default where the CPU has it)",
            _openvino("bf16"), precision="bf16", extra=RUNTIMES_EXTRA, requires="openvino",
            needs_cpu="bf16"),
    Runtime("litert", "litert", "tflite",
            "LiteRT (ai-edge-litert) interpreter with XNNPACK on the .tflite copy", _litert,
            extra=RUNTIMES_EXTRA, requires="ai_edge_litert"),
    Runtime("tf-savedmodel", "tensorflow", "saved_model",
            "SavedModel signature 'serving_default'", _savedmodel, extra=TENSORFLOW_EXTRA),
    Runtime("tf-function", "keras", "keras",
            "tf.function(model(x, training=False)), fixed signature", _keras("function"),
            extra=TENSORFLOW_EXTRA),
    Runtime("keras-predict", "keras", "keras",
            "Keras model.predict(x, batch_size=len(x))", _keras("predict"),
            extra=TENSORFLOW_EXTRA),
)}


def open_runtime(name: str, path: str | os.PathLike, threads: int | None = None,
                 spinning: bool | None = False) -> Predictor:
    """The predictor of one RUNTIMES row on `path`."""
    if name not in RUNTIMES:
        raise UsageError(f"unknown runtime {name!r}; choose from {', '.join(RUNTIMES)}")
    return RUNTIMES[name].open(path, threads, spinning)


def open_predictor(model_path: str | os.PathLike, runtime: str | None = None,
                   settings: OrtSettings = DEFAULT_SETTINGS,
                   trust_model: bool = False) -> Predictor:
    """The natural predictor for a model file: .onnx on ONNX Runtime, a SavedModel directory
    or a Keras file on TensorFlow (`runtime` may only confirm that choice)."""
    model = identify(model_path)
    if runtime is not None and runtime not in NATURAL_RUNTIMES:
        raise UsageError(f"unknown runtime {runtime!r}; choose from "
                         f"{', '.join(NATURAL_RUNTIMES)}")
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
        return SavedModelPredictor(model.path, settings.threads)
    return KerasPredictor(model.path, settings.threads, trust_model=trust_model)


__all__ = ["NATURAL_RUNTIMES", "RUNTIMES", "LazyPredictor", "ModelError", "OnnxPredictor",
           "OrtSettings", "Predictor", "RegimeOnnxPredictor", "Runtime", "open_predictor",
           "open_runtime", "regime_settings"]
