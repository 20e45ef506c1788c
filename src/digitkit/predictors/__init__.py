"""The predictor layer: every runtime that turns pixels into probabilities, built in one place.

Every predictor implements the `Predictor` protocol (`predictors.base`): `.predict(pixels
float32 (N, 28, 28)) -> float32 (N, 10)`, `.load()`, `.runtime` and `.model_path`; it derives
from `LazyPredictor`, so constructors are cheap and the runtime loads once, on first use.

`RUNTIMES` (`predictors.runtimes`) is the one table of runtimes, each a `Runtime` row: what
`bench --runtimes` selects and times; `open_predictor` is the natural predictor for a model
file, what `infer` and export validation run.

The predictor classes are loaded on first use (see __getattr__): the runtime table and the
protocol are importable without numpy or any runtime, for the CLI's --help.
"""

from __future__ import annotations

import os

from digitkit.errors import ModelError, UsageError
from digitkit.model.files import ONNX, SAVEDMODEL, TFLITE, identify
from digitkit.predictors.base import LazyPredictor, Predictor
from digitkit.predictors.runtimes import RUNTIMES, Runtime, open_runtime, runtime_groups

#: What `open_predictor`'s `runtime` may name (`infer --runtime`): the runtime a model file
#: runs on by its kind, which that option may only confirm.
NATURAL_RUNTIMES = ("onnxruntime", "tensorflow")

#: Names loaded from `predictors.ort` on first use.
_ORT_NAMES = ("DEFAULT_SETTINGS", "OnnxPredictor", "OrtSettings", "RegimeOnnxPredictor",
              "regime_settings")


def open_predictor(model_path: str | os.PathLike, runtime: str | None = None,
                   settings=None, trust_model: bool = False) -> Predictor:
    """The natural predictor for a model file: .onnx on ONNX Runtime, a SavedModel directory
    or a Keras file on TensorFlow (`runtime` may only confirm that choice); `settings`, the
    ONNX Runtime session's `OrtSettings` (None: the defaults), sizes the other runtimes'
    threads too."""
    from digitkit.predictors.ort import DEFAULT_SETTINGS, OnnxPredictor

    settings = DEFAULT_SETTINGS if settings is None else settings
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
        return SavedModelPredictor(model.path, settings.threads, trust_model)
    return KerasPredictor(model.path, settings.threads, trust_model=trust_model)


def __getattr__(name: str):
    if name in _ORT_NAMES:
        from digitkit.predictors import ort

        return getattr(ort, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["NATURAL_RUNTIMES", "RUNTIMES", "LazyPredictor", "ModelError", "Predictor", "Runtime",
           "open_predictor", "open_runtime", "runtime_groups", *_ORT_NAMES]
