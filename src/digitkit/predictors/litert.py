"""LiteRT (formerly TensorFlow Lite): the interpreter a Keras model meets on phones and boards.

The `ai-edge-litert` interpreter (the `runtimes` extra) with its default XNNPACK delegate:
XNNPACK is what LiteRT runs float models with on every CPU it ships to, so it is what a
deployment gets. Without that package, a process that has TensorFlow (export validation) may
use TensorFlow's own copy of the same interpreter (`tf.lite.Interpreter`, also XNNPACK by
default); `bench` never does, so its LiteRT row is always the standalone runtime.
"""

from __future__ import annotations

import os
import warnings

import numpy as np

from digitkit.environment import usable_cpus
from digitkit.errors import ModelError, missing_extra, one_line
from digitkit.model.contract import OUTPUT_NAME
from digitkit.predictors.base import LazyPredictor, reshapes_to

#: Ops that mean weights were left as resource variables instead of frozen into the
#: flatbuffer. The interpreter reads such variables as zeros (a copy scoring ~10%), or fails.
VARIABLE_OPS = frozenset({"VAR_HANDLE", "READ_VARIABLE", "ASSIGN_VARIABLE"})


def import_litert(allow_tensorflow: bool = False):
    """(Interpreter class, its runtime name): ai-edge-litert, or TensorFlow's copy if allowed."""
    try:
        from ai_edge_litert import interpreter

        return interpreter.Interpreter, "ai-edge-litert"
    except ImportError as err:
        if not allow_tensorflow:
            raise missing_extra("the LiteRT runtime", "runtimes") from err
    from digitkit.model.loading import import_tensorflow

    return import_tensorflow("the LiteRT runtime").lite.Interpreter, "tensorflow-lite"


def runtime_version(allow_tensorflow: bool = False) -> str:
    from importlib import metadata

    _, name = import_litert(allow_tensorflow)
    dist = "ai-edge-litert" if name == "ai-edge-litert" else "tensorflow-cpu"
    try:
        return f"{name} {metadata.version(dist)}"
    except metadata.PackageNotFoundError:
        return name


class LiteRTPredictor(LazyPredictor):
    """`.predict(pixels) -> probabilities` on a .tflite flatbuffer. The batch dimension is
    resized to each call's batch (LiteRT plans its tensors for one shape at a time; a run of
    same-sized batches resizes once)."""

    runtime = "litert"

    def __init__(self, model_path: str | os.PathLike, threads: int | None = None,
                 allow_tensorflow: bool = False):
        super().__init__(model_path)
        # XNNPACK sizes its pool from num_threads; None would leave it single-threaded.
        self.threads = threads or usable_cpus()
        self.allow_tensorflow = allow_tensorflow
        self._interp = None
        self._batch = None

    def options(self) -> dict:
        return {"num_threads": self.threads, "delegate": "XNNPACK (the interpreter's default)"}

    def _load(self):
        interpreter_class, self.runtime_name = import_litert(self.allow_tensorflow)
        try:
            with warnings.catch_warnings():
                # TensorFlow's copy warns that it is deprecated: known, and only a fallback.
                warnings.simplefilter("ignore", UserWarning)
                interp = interpreter_class(model_path=str(self.model_path),
                                           num_threads=self.threads)
            interp.allocate_tensors()
        except Exception as err:  # noqa: BLE001 - the interpreter raises ValueError/RuntimeError
            raise ModelError(f"{self.model_path}: not a usable LiteRT model ({one_line(err)})"
                             ) from err
        inputs, outputs = interp.get_input_details(), interp.get_output_details()
        if len(inputs) != 1:
            raise ModelError(f"{self.model_path}: expected one input, the model has "
                             f"{len(inputs)}")
        self._input = inputs[0]
        self._outputs = self._output_names(interp, outputs)
        self._interp = interp
        self._batch = int(inputs[0]["shape"][0])

    @staticmethod
    def _output_names(interp, outputs) -> dict[str, int]:
        """Output name -> tensor index, names from the serving signature where there is one
        (tensor names in a flatbuffer are the converter's, like "PartitionedCall:0")."""
        signatures = interp.get_signature_list()
        if len(signatures) == 1:
            key = next(iter(signatures))
            runner_outputs = interp.get_signature_runner(key).get_output_details()
            return {name: d["index"] for name, d in runner_outputs.items()}
        return {d["name"]: d["index"] for d in outputs}

    @property
    def input_name(self) -> str:
        return self.load()._input["name"]

    @property
    def output_names(self) -> list[str]:
        return list(self.load()._outputs)

    def ops(self) -> set[str]:
        """The operator names in the graph (after delegation: XNNPACK's part is "DELEGATE")."""
        return {op["op_name"] for op in self.load()._interp._get_ops_details()}

    def outputs(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        self.load()
        x = np.ascontiguousarray(pixels, dtype=np.float32)
        shape = tuple(int(d) for d in self._input["shape_signature"][1:])
        if x.shape[1:] != shape and reshapes_to(x.shape[1:], shape):
            x = x.reshape((len(x), *shape))  # a copy that flattens or adds a channel
        if len(x) != self._batch:
            self._interp.resize_tensor_input(self._input["index"], [len(x), *shape],
                                             strict=True)
            self._interp.allocate_tensors()
            self._batch = len(x)
        self._interp.set_tensor(self._input["index"], x)
        self._interp.invoke()
        return {name: self._interp.get_tensor(i).copy() for name, i in self._outputs.items()}

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        out = self.outputs(pixels)
        name = OUTPUT_NAME if OUTPUT_NAME in out else next(iter(out))
        return out[name].astype(np.float32, copy=False)
