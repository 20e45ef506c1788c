"""A model made elsewhere, run as it is: numpy in, numpy out, for detection and validation.

`SourceModel` is what digitkit.model.detect scores and what export validation compares every
adapted copy with (the source run under its own convention, `predict_under`). One builder per
format; each takes the loaded model (the model layer's loaders and the predictor layer's
`open_session` do the loading), so this module imports no runtime itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from digitkit.errors import ModelError
from digitkit.model.contract import DIGIT_CONTRACT, ModelContract
from digitkit.model.conventions import fits_layout

#: Images per call when running a source: bounds memory for large convnets and keeps each
#: call well inside what any runtime handles at once.
SOURCE_BATCH = 500

_ORT_DTYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64,
               "tensor(float16)": np.float16}


@dataclass(frozen=True)
class SourceModel:
    """A model as it stands: `call` maps its own input array to its output array.

    input_shape: as the model states it, batch first (None or a name when dynamic).
    output_shape: likewise, when the model states it (checked against the contract's classes
        early).
    input_name, output_name: the model's own names for them, when it has names.
    contract: what its copies are to honour (its classes, the pixels its conventions start
        from).
    """

    name: str
    input_shape: tuple
    call: Callable[[np.ndarray], np.ndarray]
    output_shape: tuple | None = None
    input_name: str | None = None
    output_name: str | None = None
    contract: ModelContract = DIGIT_CONTRACT

    def __post_init__(self):
        self.contract.check_classes(self.name, self.output_shape)

    @property
    def honours_contract(self) -> bool:
        """Whether the model presents digitkit's contract by name and shape ("pixels"
        (N, 28, 28) in, "probabilities" (N, 10) out): digitkit's own models and every copy
        `digitkit export` writes. The names are the mark; a shape alone is not (the classic
        notebook's model has the same shapes and wants L2-normalised input)."""
        c = self.contract
        return (self.input_name == c.input_name and self.output_name == c.output_name
                and fits_layout(self.input_shape, c.layout, c))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        outs = [np.asarray(self.call(x[i:i + SOURCE_BATCH]), dtype=np.float32)
                for i in range(0, len(x), SOURCE_BATCH)]
        out = (np.concatenate(outs) if outs
               else np.zeros((0, self.contract.num_classes), np.float32))
        self.contract.check_classes(self.name, out.shape)
        return out


def check_classes(name: str, output_shape) -> None:
    """ModelError unless an output shape is (N, 10): the digit contract's rule
    (ModelContract.check_classes)."""
    DIGIT_CONTRACT.check_classes(name, output_shape)


def keras_source(model, name: str | None = None,
                 contract: ModelContract = DIGIT_CONTRACT) -> SourceModel:
    """A loaded Keras model (one input, one output), called eagerly with training=False."""
    name = name or model.name
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ModelError(f"{name}: expected one input and one output, got "
                         f"{len(model.inputs)} and {len(model.outputs)}")

    def call(x):
        return np.asarray(model(x, training=False))

    # Functional models name their outputs; a Sequential model's output is its last layer's.
    out_name = (getattr(model, "output_names", None) or [model.layers[-1].name])[0]
    return SourceModel(name, tuple(model.inputs[0].shape), call, tuple(model.outputs[0].shape),
                       model.inputs[0].name, out_name, contract)


def savedmodel_source(signature, name: str | None = None) -> SourceModel:
    """A digitkit.model.loading.SavedModelSignature (its one input; its first output, or the
    only one)."""
    name = name or str(signature.path)
    if len(signature.output_names) != 1:
        raise ModelError(f"{name}: serving signature has outputs {signature.output_names}, "
                         "expected one")
    out_name = signature.output_names[0]
    out_spec = signature.fn.structured_outputs[out_name]

    def call(x):
        return signature(x)[out_name]

    return SourceModel(name, tuple(signature.input_shape), call, tuple(out_spec.shape.as_list()),
                       signature.input_name, out_name)


def onnx_source(session, name: str, contract: ModelContract = DIGIT_CONTRACT) -> SourceModel:
    """An onnxruntime InferenceSession (open it with digitkit.predictors.ort.open_session).
    A static batch dimension (e.g. 1, as many PyTorch exports have) is run one batch at a time.
    """
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or len(outputs) != 1:
        raise ModelError(f"{name}: expected one input and one output, got {len(inputs)} "
                         f"({', '.join(i.name for i in inputs)}) and {len(outputs)}")
    inp, out = inputs[0], outputs[0]
    dtype = _ORT_DTYPES.get(inp.type)
    if dtype is None:
        raise ModelError(f"{name}: input {inp.name!r} is {inp.type}; expected a float tensor")
    batch = inp.shape[0] if inp.shape else None
    static = batch if isinstance(batch, int) and batch > 0 else None

    def call(x):
        x = np.asarray(x, dtype=dtype)
        if static is None:
            return session.run([out.name], {inp.name: x})[0]
        n = len(x)
        pad = -n % static  # a last partial batch is padded with blank images, then cut
        if pad:
            x = np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)])
        return np.concatenate([session.run([out.name], {inp.name: x[i:i + static]})[0]
                               for i in range(0, len(x), static)])[:n]

    return SourceModel(name, tuple(inp.shape), call, tuple(out.shape), inp.name, out.name,
                       contract)
