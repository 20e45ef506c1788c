"""The runtime table: every way digitkit runs a model copy, one `Runtime` row each.

`RUNTIMES` is what `bench --runtimes` selects (a row by its name, or every row of a group)
and times, each row in a fresh process through `open_runtime`; `infer` and export validation
open the same predictor classes. Adding a runtime is one row here and one predictor class
(a `LazyPredictor`, see `predictors.base`); tests/test_predictors_contract.py then holds it to
the contract.

Nothing here imports numpy or a runtime: the CLI reads its --help from this table, and each
row's opener imports its predictor module only when called.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass

from digitkit.errors import UsageError
from digitkit.model.loading import TENSORFLOW_EXTRA
from digitkit.predictors.base import Predictor
from digitkit.predictors.devices import DEFAULT_DEVICE, device_kind

#: The extra that brings the optional runtimes (OpenVINO, LiteRT).
RUNTIMES_EXTRA = "runtimes"



@dataclass(frozen=True)
class Runtime:
    """One way of running one copy of a model: a row of `RUNTIMES`."""

    name: str
    group: str  # the user-facing runtime group (bench --runtimes takes a group or a name)
    copy: str  # which ModelCopies attribute it loads
    description: str
    open: Callable  # (path, threads, spinning, trust_model) -> Predictor; spinning None: per
    # regime; trust_model: run a model the model layer's safety rule (model.safety) refuses
    precision: str = "fp32"  # the arithmetic it runs in: fp32, bf16, int8
    extra: str | None = None  # the optional extra it comes with (None: the base install)
    requires: str | None = None  # a module of that extra it cannot run without
    needs_cpu: str | None = None  # a precision this CPU must run natively
    devices: tuple[str, ...] = ("cpu",)  # the DEVICES kinds it runs on
    #: (device) -> None, or raises DependencyError naming what is missing for that device
    #: (imports the runtime: called once, before any work, for a device other than the CPU)
    device_check: Callable | None = None

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

    def check_device(self, device: str) -> None:
        """Refuse, in one line, a device this runtime does not have (UsageError) or that is
        not there (DependencyError: no such provider or plugin device); the CPU always is."""
        kind = device_kind(device)
        if kind not in self.devices:
            raise UsageError(f"--device {device}: {self.name} runs on "
                             f"{' or '.join(self.devices)}, not {kind}")
        if kind != DEFAULT_DEVICE and self.device_check is not None:
            self.device_check(device)


def _ort(path, threads, spinning, trust_model=False, device=DEFAULT_DEVICE):
    from digitkit.predictors.ort import OnnxPredictor, OrtSettings, RegimeOnnxPredictor

    # spinning None: the settings follow the batch size (regime_settings), as in `infer`;
    # an explicit value pins one configuration for every batch size.
    if spinning is None:
        return RegimeOnnxPredictor(path, cores=threads, device=device)
    return OnnxPredictor(path, OrtSettings(threads, spinning, device))


def _ort_device(device):
    from digitkit.predictors.ort import check_device

    check_device(device)


def _openvino(precision):
    def open_(path, threads, spinning, trust_model=False, device=DEFAULT_DEVICE):
        from digitkit.predictors.openvino import OpenVinoPredictor

        return OpenVinoPredictor(path, threads, precision, device)

    return open_


def _openvino_device(device):
    from digitkit.predictors.openvino import device_name

    device_name(device)


def _litert(path, threads, spinning, trust_model=False, device=DEFAULT_DEVICE):
    from digitkit.predictors.litert import LiteRTPredictor

    return LiteRTPredictor(path, threads)


def _savedmodel(path, threads, spinning, trust_model=False, device=DEFAULT_DEVICE):
    from digitkit.predictors.tf import SavedModelPredictor

    return SavedModelPredictor(path, threads, trust_model)


def _keras(mode):
    def open_(path, threads, spinning, trust_model=False, device=DEFAULT_DEVICE):
        from digitkit.predictors.tf import KerasPredictor

        return KerasPredictor(path, threads, mode=mode, trust_model=trust_model)

    return open_


#: ONNX Runtime's devices: its CUDA and TensorRT providers (onnxruntime-gpu); "gpu" is CUDA.
_ORT_DEVICES = ("cpu", "cuda", "tensorrt", "gpu")

RUNTIMES = {r.name: r for r in (
    Runtime("onnxruntime", "onnxruntime", "onnx",
            "ONNX Runtime InferenceSession.run, float model, threads per regime", _ort,
            devices=_ORT_DEVICES, device_check=_ort_device),
    Runtime("onnxruntime-int8", "onnxruntime", "onnx_int8",
            "ONNX Runtime InferenceSession.run, int8 (QDQ) model", _ort, precision="int8",
            devices=_ORT_DEVICES, device_check=_ort_device),
    Runtime("openvino", "openvino", "onnx",
            "OpenVINO CPU plugin on the ONNX copy, INFERENCE_PRECISION_HINT f32",
            _openvino("fp32"), extra=RUNTIMES_EXTRA, requires="openvino",
            devices=("cpu", "gpu"), device_check=_openvino_device),
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
                 spinning: bool | None = False, trust_model: bool = False,
                 device: str = DEFAULT_DEVICE) -> Predictor:
    """The predictor of one RUNTIMES row on `path`, on `device` (`parse_device`'s form)."""
    if name not in RUNTIMES:
        raise UsageError(f"unknown runtime {name!r}; choose from {', '.join(RUNTIMES)}")
    return RUNTIMES[name].open(path, threads, spinning, trust_model, device)


def runtime_groups() -> dict[str, list[str]]:
    """User-facing runtime group (--runtimes) -> its runtimes, in the table's order."""
    groups: dict[str, list[str]] = {}
    for r in RUNTIMES.values():
        groups.setdefault(r.group, []).append(r.name)
    return groups
