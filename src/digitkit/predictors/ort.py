"""ONNX Runtime: the one place a session is configured and opened.

Export validation, quantization checks, `infer` (main process and every worker), the Ray
actors and `bench` all open their sessions through `open_session`, so a figure `bench`
reports is a configuration `infer` runs. How many threads a session gets, and whether they
spin, is decided per regime (batch size and cores) by `regime_settings`, the one rule both
`bench` and `infer` follow. Which execution providers a session asks for, for which
`--device`, is decided here too (`providers`), and a session that did not get the device
it asked for is refused, never run on the CPU in its place (`check_placed`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

import numpy as np

from digitkit.errors import DependencyError, ModelError, one_line
from digitkit.model.contract import OUTPUT_NAME
from digitkit.predictors.base import LazyPredictor, reshapes_to
from digitkit.predictors.devices import DEFAULT_DEVICE, device_index, device_kind

#: --device kind -> the execution provider that must run the session. "gpu" is CUDA: the
#: NVIDIA GPU onnxruntime-gpu drives. Both providers come with onnxruntime-gpu (installed
#: instead of onnxruntime).
DEVICE_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
                    "gpu": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}
#: What brings the GPU providers.
GPU_PACKAGE = "onnxruntime-gpu"


@dataclass(frozen=True)
class OrtSettings:
    """How a session runs.

    threads: intra-op threads; None lets ONNX Runtime use every core.
    spinning: idle pool threads busy-wait for the next op. ORT's own default; it saves
        wake-up latency on small batches but burns CPU that other threads or processes (the
        decoders of `infer`) need, and on a busy machine it made multi-threaded ops stall.
    """

    threads: int | None = None
    spinning: bool = False
    device: str = DEFAULT_DEVICE  # --device, as `devices.parse_device` gives it


DEFAULT_SETTINGS = OrtSettings()

#: Largest batch whose sessions spin on a multi-core machine (see regime_settings).
SPIN_MAX_BATCH = 8


def regime_settings(batch: int, cores: int) -> OrtSettings:
    """The session settings for running batches of `batch` images on `cores` cores.

    The one rule for both `bench` (its ONNX Runtime engines, `cores` = --threads) and `infer`
    (each worker runs batch-sized chunks on one core: `cores` = 1; an in-process run gets
    every usable core). Measured with benchmarks/bench_ort_regimes.py, default CNN and seed
    MLP, batch 1, 8, 32 and 512, both in quiet windows and under other processes' load (the
    figures, machine and load: BENCHMARKS.md, "ONNX Runtime per regime"):
    - one core: one thread. Spinning changes nothing: a one-thread session has no pool.
    - several cores: all of them. Batches up to SPIN_MAX_BATCH spin: a spinning pool thread
      takes the next small op without a futex wake-up, and with small batches the wake-up
      is a large share of each op. Larger batches do not: their ops are long enough that
      the wake-up is a small share, while on a machine whose cores other processes use,
      spinning threads steal the core the next op needs. Batches 9-31 were not measured
      and take the safe side.
    More than two cores were not measured: all of them are used, as ORT would by itself.
    """
    cores = max(1, int(cores))
    if cores == 1:
        return OrtSettings(threads=1, spinning=False)
    return OrtSettings(threads=cores, spinning=batch <= SPIN_MAX_BATCH)


#: The settings every session gets whatever its regime (see `session_options` for why), by
#: SessionOptions attribute and ORT enum member name.
FIXED_SESSION = {"graph_optimization_level": "ORT_ENABLE_ALL",
                 "execution_mode": "ORT_SEQUENTIAL", "inter_op_num_threads": 1,
                 "log_severity_level": 3}


def session_options(settings: OrtSettings = DEFAULT_SETTINGS):
    """The SessionOptions every digitkit session uses.

    - graph optimisation ALL: constant folding plus layout and fusion passes (Conv+BN+ReLU,
      MatMul+Add); ORT's default is ALL already, stated here so records cannot drift.
    - sequential execution, one inter-op thread: these graphs are a chain, so a parallel
      executor adds scheduling cost and nothing to overlap.
    - log severity "error": warnings about unused initializers in converted graphs are noise.
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel,
                                          FIXED_SESSION["graph_optimization_level"])
    so.execution_mode = getattr(ort.ExecutionMode, FIXED_SESSION["execution_mode"])
    so.inter_op_num_threads = FIXED_SESSION["inter_op_num_threads"]
    so.log_severity_level = FIXED_SESSION["log_severity_level"]
    if settings.threads:
        so.intra_op_num_threads = settings.threads
    if not settings.spinning:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return so


def providers(device: str = DEFAULT_DEVICE) -> list:
    """The execution providers a session on `device` asks for, in ORT's order of preference.

    The CPU provider comes last on a GPU too: ORT places the nodes a GPU provider cannot run
    there (that is placement, not a fallback; `check_placed` refuses a session whose GPU
    provider did not start at all). TensorRT is followed by CUDA for the subgraphs TensorRT
    does not take."""
    kind = device_kind(device)
    if kind == "cpu":
        return ["CPUExecutionProvider"]
    gpu = {"device_id": device_index(device)}
    chain = [(DEVICE_PROVIDERS[kind], gpu)]
    if kind == "tensorrt":
        chain.append((DEVICE_PROVIDERS["cuda"], gpu))
    return [*chain, "CPUExecutionProvider"]


def check_device(device: str) -> None:
    """Refuse a device whose provider this ONNX Runtime does not have, before any session:
    ORT would otherwise warn and run on the CPU (onnxruntime#23372)."""
    provider = DEVICE_PROVIDERS[device_kind(device)]
    available = import_onnxruntime().get_available_providers()
    if provider not in available:
        raise DependencyError(f"--device {device}: this ONNX Runtime has no {provider} (it has "
                              f"{', '.join(available)}); install {GPU_PACKAGE} in place of "
                              "onnxruntime, with the CUDA libraries it needs")


def check_placed(session, device: str, path) -> None:
    """Refuse a session that does not run on `device`'s provider: ORT drops a provider that
    fails to start (missing CUDA or TensorRT libraries, no such GPU) and carries on on the
    CPU, saying so only in a log line."""
    provider = DEVICE_PROVIDERS[device_kind(device)]
    got = session.get_providers()
    if provider not in got:
        raise DependencyError(f"{path}: ONNX Runtime did not start {provider} for --device "
                              f"{device} (the session has {', '.join(got)}); refusing to run "
                              "it on the CPU instead")


def import_onnxruntime():
    try:
        import onnxruntime as ort
    except ImportError as err:
        raise DependencyError("onnxruntime is not installed: pip install onnxruntime") from err
    return ort


def open_session(path: str | os.PathLike, settings: OrtSettings = DEFAULT_SETTINGS):
    """An InferenceSession on `settings.device` (the CPU by default), or ModelError naming
    the file and ORT's reason; DependencyError when the device's provider is missing or did
    not start (`check_device`, `check_placed`)."""
    ort = import_onnxruntime()
    on_cpu = device_kind(settings.device) == "cpu"
    if not on_cpu:
        check_device(settings.device)
    try:
        session = ort.InferenceSession(str(path), sess_options=session_options(settings),
                                       providers=providers(settings.device))
    except Exception as err:  # noqa: BLE001 - onnxruntime raises its own types for bad files
        on = "" if on_cpu else f" on --device {settings.device}"
        raise ModelError(f"{path}: not a usable ONNX model{on} ({one_line(err)})") from err
    if not on_cpu:
        check_placed(session, settings.device, path)
    return session


def runtime_version() -> str:
    return f"onnxruntime {import_onnxruntime().__version__}"


class OnnxPredictor(LazyPredictor):
    """`.predict(pixels) -> probabilities` on ONNX Runtime with one session's settings."""

    runtime = "onnxruntime"

    def __init__(self, model_path: str | os.PathLike, settings: OrtSettings = DEFAULT_SETTINGS):
        super().__init__(model_path)
        self.settings = settings
        self._session = None
        self._input = None
        self._output = None
        self._input_shape = None

    @property
    def session(self):
        return self.load()._session

    def options(self) -> dict:
        return {**FIXED_SESSION, "threads": self.settings.threads,
                "spinning": self.settings.spinning, "providers": providers(self.settings.device)}

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self.session.get_inputs()]

    @property
    def output_names(self) -> list[str]:
        return [o.name for o in self.session.get_outputs()]

    def _load(self):
        session = open_session(self.model_path, self.settings)
        inputs, outputs = session.get_inputs(), session.get_outputs()
        if len(inputs) != 1:
            raise ModelError(f"{self.model_path}: expected one input, the model has "
                             f"{len(inputs)}: {', '.join(i.name for i in inputs)}")
        names = [o.name for o in outputs]
        self._output = OUTPUT_NAME if OUTPUT_NAME in names else names[0]
        self._output_list = [self._output]
        self._input = inputs[0].name
        self._input_shape = _static_feature_shape(inputs[0].shape)
        self._session = session

    def outputs(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        """Every output by name (what export validation compares)."""
        self.load()
        values = self._session.run(None, {self._input: self._fit(pixels)})
        return dict(zip(self.output_names, values, strict=True))

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        # The hot path of bench and infer: at batch 1 a small model's run is so short that
        # every conversion skipped when the input is already right is measurable.
        if not self._loaded:
            self.load()
        out = self._session.run(self._output_list, {self._input: self._fit(pixels)})[0]
        return out if out.dtype == np.float32 else out.astype(np.float32)

    def _fit(self, pixels) -> np.ndarray:
        x = pixels if (type(pixels) is np.ndarray and pixels.dtype == np.float32) \
            else np.asarray(pixels, dtype=np.float32)
        if self._input_shape is not None and self._input_shape != x.shape[1:] \
                and reshapes_to(x.shape[1:], self._input_shape):
            # Accept exports that flatten (N, 784) or add a channel (N, 28, 28, 1).
            x = x.reshape((len(x),) + self._input_shape)
        return x


def _static_feature_shape(shape) -> tuple | None:
    """The input's shape after the batch dimension when all of it is static."""
    dims = tuple(shape[1:])
    if dims and all(isinstance(d, int) and d > 0 for d in dims):
        return dims
    return None


class RegimeOnnxPredictor(LazyPredictor):
    """An ONNX model whose session settings follow the batch size: `regime_settings(len(x),
    cores)` for every call, one session per distinct settings (opened on first use, kept).
    What `bench` times for ONNX Runtime and what `infer` runs in-process."""

    runtime = "onnxruntime"

    def __init__(self, model_path: str | os.PathLike, cores: int | None = None,
                 device: str = DEFAULT_DEVICE):
        from digitkit.environment import usable_cpus

        super().__init__(model_path)
        self.cores = cores or usable_cpus()
        self.device = device
        self._predictors: dict[OrtSettings, OnnxPredictor] = {}

    def for_batch(self, batch: int) -> OnnxPredictor:
        settings = replace(regime_settings(batch, self.cores), device=self.device)
        predictor = self._predictors.get(settings)
        if predictor is None:
            predictor = self._predictors[settings] = OnnxPredictor(self.model_path, settings)
        return predictor.load()

    def _load(self):
        self.for_batch(1)

    def options(self) -> dict:
        # Threads and spinning follow each call's batch (`regime_settings`) on these cores.
        return {**FIXED_SESSION, "cores": self.cores, "providers": providers(self.device)}

    @property
    def session(self):
        return self.for_batch(1).session

    @property
    def input_names(self) -> list[str]:
        return self.for_batch(1).input_names

    @property
    def output_names(self) -> list[str]:
        return self.for_batch(1).output_names

    def outputs(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        return self.for_batch(len(pixels)).outputs(pixels)

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        return self.for_batch(len(pixels)).predict(pixels)
