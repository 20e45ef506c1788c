"""OpenVINO: the usual pick for CPU inference, reading the same ONNX copy ONNX Runtime runs.

Precision is always stated, never left to the plugin: OpenVINO's CPU plugin silently runs
float models in bf16 on CPUs that have it (AVX512-BF16, AMX), which is faster and is not
fp32. `PRECISIONS` maps digitkit's names to OpenVINO's INFERENCE_PRECISION_HINT; the fp32
engine asks for f32 explicitly and the reduced-precision one is a separate, labelled engine.

Threads and streams follow the bench thread count: one stream (calls come one at a time, so
more streams would only split the threads) using `threads` threads, like ONNX Runtime's
intra-op pool and TensorFlow's.

Never pinned (ENABLE_CPU_PINNING off): on Linux the CPU plugin pins the thread that runs a
request to the first cores of the machine for the length of each call, the calling thread
itself at one thread. Every `infer` worker is a process with one thread, so every worker's
OpenVINO pinned itself to core 0 and they took turns there while the other cores only decoded;
one process alone (`auto`'s calibration, `bench`) never sees it. Unpinned, the OS places
OpenVINO's threads like ONNX Runtime's and LiteRT's, which pin nothing
(BENCHMARKS.md, "OpenVINO in infer's workers").

`--device gpu[:N]` compiles for OpenVINO's GPU plugin ("GPU", "GPU.N"), refused in one line
when OpenVINO lists no such device (`device_name`); the thread count is the CPU's business
and is not passed there.
"""

from __future__ import annotations

import os

import numpy as np

from digitkit.environment import usable_cpus
from digitkit.errors import DependencyError, ModelError, missing_extra, one_line
from digitkit.model.contract import OUTPUT_NAME
from digitkit.predictors.base import LazyPredictor, reshapes_to
from digitkit.predictors.devices import DEFAULT_DEVICE, device_index, device_kind

#: digitkit precision name -> OpenVINO inference precision and the CPU capability it needs.
PRECISIONS = {"fp32": ("f32", "FP32"), "bf16": ("bf16", "BF16")}


def import_openvino():
    try:
        import openvino
    except ImportError as err:
        raise missing_extra("the OpenVINO runtime", "runtimes") from err
    return openvino


def runtime_version() -> str:
    return f"openvino {import_openvino().__version__.split('-')[0]}"


def cpu_supports(precision: str) -> bool:
    """Whether this CPU runs `precision` natively (OpenVINO's own capability list)."""
    ov = import_openvino()
    caps = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    return PRECISIONS[precision][1] in caps


def device_name(device: str, core=None) -> str:
    """OpenVINO's name for `--device` ("CPU", "GPU", "GPU.1"), or DependencyError when
    OpenVINO lists no such device here (its `available_devices`)."""
    if device_kind(device) == "cpu":
        return "CPU"
    core = core or import_openvino().Core()
    found = list(core.available_devices)
    gpus = sorted(d for d in found if d.split(".")[0] == "GPU")
    if ":" not in device:
        name = "GPU" if "GPU" in gpus or not gpus else gpus[0]
    else:
        name = f"GPU.{device_index(device)}"
        if name not in gpus and device_index(device) == 0 and "GPU" in gpus:
            name = "GPU"  # one GPU is listed without its index
    if name not in gpus:
        raise DependencyError(f"--device {device}: OpenVINO has no {name} device here (it "
                              f"lists {', '.join(found) or 'none'}); its GPU plugin needs an "
                              "Intel GPU and its compute runtime")
    return name


class OpenVinoPredictor(LazyPredictor):
    """`.predict(pixels) -> probabilities` on OpenVINO's CPU plugin, from an ONNX file."""

    runtime = "openvino"

    def __init__(self, model_path: str | os.PathLike, threads: int | None = None,
                 precision: str = "fp32", device: str = DEFAULT_DEVICE):
        super().__init__(model_path)
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}")
        self.threads = threads or usable_cpus()
        self.precision = precision
        self.device = device
        self._request = None

    def config(self) -> dict:
        """The compile-time properties, all stated (see the module docstring)."""
        if device_kind(self.device) != "cpu":
            return {"INFERENCE_PRECISION_HINT": PRECISIONS[self.precision][0],
                    "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY"}
        return {"INFERENCE_PRECISION_HINT": PRECISIONS[self.precision][0],
                "INFERENCE_NUM_THREADS": int(self.threads), "NUM_STREAMS": 1,
                "PERFORMANCE_HINT": "LATENCY", "ENABLE_CPU_PINNING": False}

    def options(self) -> dict:
        return {"device": self.device, **self.config()}

    def properties(self) -> dict:
        """What the compiled model reports for each key of `config()`: the settings it runs
        with, as OpenVINO took them (loads the model)."""
        compiled = self.load()._request.get_compiled_model()
        return {key: compiled.get_property(key) for key in self.config()}

    def _load(self):
        ov = import_openvino()
        core = ov.Core()
        target = device_name(self.device, core)
        if self.precision != "fp32" and not cpu_supports(self.precision):
            raise ModelError(f"this CPU has no native {self.precision} (OpenVINO reports "
                             f"{', '.join(core.get_property('CPU', 'OPTIMIZATION_CAPABILITIES'))})")
        try:
            model = core.read_model(str(self.model_path))
            compiled = core.compile_model(model, target, self.config())
        except Exception as err:  # noqa: BLE001 - OpenVINO raises RuntimeError for most things
            raise ModelError(f"{self.model_path}: not a model OpenVINO can run "
                             f"({one_line(err)})") from err
        if len(compiled.inputs) != 1:
            raise ModelError(f"{self.model_path}: expected one input, the model has "
                             f"{len(compiled.inputs)}")
        self._shape = _feature_shape(compiled.inputs[0].get_partial_shape())
        self._names = [next(iter(o.get_names()), f"output_{i}")
                       for i, o in enumerate(compiled.outputs)]
        self._request = compiled.create_infer_request()

    @property
    def output_names(self) -> list[str]:
        return list(self.load()._names)

    def outputs(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        self.load()
        x = np.ascontiguousarray(pixels, dtype=np.float32)
        if self._shape is not None and x.shape[1:] != self._shape \
                and reshapes_to(x.shape[1:], self._shape):
            x = x.reshape((len(x), *self._shape))
        result = self._request.infer({0: x})
        # Copies: the request owns its output buffers and reuses them on the next call.
        return {name: np.array(result[i], dtype=np.float32)
                for i, name in enumerate(self._names)}

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        out = self.outputs(pixels)
        return out[OUTPUT_NAME] if OUTPUT_NAME in out else next(iter(out.values()))


def _feature_shape(partial_shape) -> tuple | None:
    dims = [d.get_length() if d.is_static else None for d in list(partial_shape)[1:]]
    if dims and all(dims):
        return tuple(dims)
    return None
