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
    stated: the input convention the model states about itself, when it does (None: it does
        not): the convention its embedded record carries, or raw pixels for a Keras model
        whose graph begins with its own Rescaling/Normalization layer (`keras_preprocessing`);
        `stated_by` says which, for people ("its embedded record", "its own layers: ...").
    """

    name: str
    input_shape: tuple
    call: Callable[[np.ndarray], np.ndarray]
    output_shape: tuple | None = None
    input_name: str | None = None
    output_name: str | None = None
    contract: ModelContract = DIGIT_CONTRACT
    stated: object = None  # an InputConvention
    stated_by: str | None = None

    def __post_init__(self):
        self.contract.check_classes(self.name, self.output_shape)

    @property
    def honours_contract(self) -> bool:
        """Whether the model presents its contract by name and shape ("pixels" (N, 28, 28) in,
        "probabilities" (N, 10) out for digits; "pixels" (N, H, W, C) -> "probabilities"
        (N, K) for a general contract): digitkit's own models and every copy `digitkit
        export` writes. The names are the mark; a shape alone is not (the classic notebook's
        model has the same shapes and wants L2-normalised input)."""
        c = self.contract
        return (self.input_name == c.input_name and self.output_name == c.output_name
                and fits_layout(self.input_shape, c.layout, c))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        from digitkit.model.calls import in_calls

        outs = [np.asarray(self.call(part), dtype=np.float32)
                for part in in_calls(x, SOURCE_BATCH)]
        out = (np.concatenate(outs) if outs
               else np.zeros((0, self.contract.num_classes), np.float32))
        self.contract.check_classes(self.name, out.shape)
        return out


#: Keras preprocessing layers that are the identity at inference (augmentation): a model
#: whose graph begins with them and then a Rescaling or Normalization layer still takes raw
#: pixels.
INERT_AT_INFERENCE = ("RandomFlip", "RandomRotation", "RandomZoom", "RandomTranslation",
                      "RandomContrast", "RandomBrightness")
#: Keras layers that mean a model prepares its own pixel values: a model whose graph begins
#: with one takes raw pixels 0..255 (keras.applications' include_preprocessing models,
#: Keras' own tutorials, digitkit's trained models).
OWN_PREPROCESSING = ("Rescaling", "Normalization")
RAW_FROM_LAYERS = "its own layers"
RAW_FROM_RECORD = "its embedded record"


def _known(d) -> bool:
    return isinstance(d, int) and d > 0


def _shown(shape) -> str:
    return "(" + ", ".join("N" if i == 0 else str(d if _known(d) else "?")
                           for i, d in enumerate(tuple(shape))) + ")"


def is_digit_shape(input_shape, output_shape) -> bool:
    """(N,28,28), (N,784), (N,28,28,1) or (N,1,28,28) in (unknown dimensions allowed, as
    today), 10 outputs (or an unknown count) out: a digit model's shapes."""
    from digitkit.model.conventions import fits_layout, layouts_for

    if not any(fits_layout(input_shape, name, DIGIT_CONTRACT)
               for name in layouts_for(DIGIT_CONTRACT)):
        return False
    last = tuple(output_shape)[-1] if output_shape else None
    return output_shape is None or len(tuple(output_shape)) == 2 and (
        not _known(last) or last == DIGIT_CONTRACT.num_classes)


def image_geometry(name: str, input_shape, layout: str | None = None
                   ) -> tuple[str, object, object, int | None]:
    """(layout, height, width, channels) of a general image model's input shape (height and
    width None where dynamic; channels None for a flat input, whose size says them only with
    --input-size). One-line ModelError for anything that is no picture of 1 or 3 channels."""
    dims = tuple(input_shape)[1:]
    if layout is None:
        if len(dims) == 3:
            nhwc = _known(dims[2]) and dims[2] in (1, 3)
            nchw = _known(dims[0]) and dims[0] in (1, 3)
            if nhwc and nchw:
                raise ModelError(f"{name}: model input {_shown(input_shape)} fits NHWC and NCHW; "
                                 "declare it with --input-layout")
            if not (nhwc or nchw):
                c = dims[2] if _known(dims[2]) else dims[0]
                what = f"{c} channels" if _known(c) else "no stated channel count"
                raise ModelError(f"{name}: model input {_shown(input_shape)} has {what}; "
                                 "digitkit serves gray (1 channel) or RGB (3 channels) images")
            layout = "NHWC" if nhwc else "NCHW"
        else:
            layout = {2: "NHW", 1: "flat"}.get(len(dims))
            if layout is None:
                raise ModelError(f"{name}: model input {_shown(input_shape)} is not an image "
                                 "(expected (N,H,W,C), (N,C,H,W), (N,H,W) or (N,H*W*C))")
    want = {"NHWC": 3, "NCHW": 3, "NHW": 2, "flat": 1}[layout]
    if len(dims) != want:
        raise ModelError(f"{name}: model input {_shown(input_shape)} is not {layout}")
    if layout == "NHWC":
        h, w, c = dims
    elif layout == "NCHW":
        c, h, w = dims
    elif layout == "NHW":
        (h, w), c = dims, 1
    else:
        return layout, None, None, None
    if not (_known(c) and c in (1, 3)):
        what = f"{c} channels" if _known(c) else "no stated channel count"
        raise ModelError(f"{name}: model input {_shown(input_shape)} has {what}; digitkit "
                         "serves gray (1 channel) or RGB (3 channels) images")
    return layout, (h if _known(h) else None), (w if _known(w) else None), c


def output_classes(name: str, output_shape) -> int:
    """K of an (N, K) output, K >= 2 and stated; one-line ModelError otherwise."""
    shape = tuple(output_shape) if output_shape is not None else ()
    if len(shape) != 2 or not _known(shape[-1]) or shape[-1] < 2:
        raise ModelError(f"{name}: outputs {_shown(shape) if shape else 'of unknown shape'}, "
                         "expected (N, K): one score per class, K >= 2 stated")
    return int(shape[-1])


def derive_contract(name: str, input_shape, output_shape, *, names=None, record=None,
                    policy=None, layout: str | None = None,
                    general: bool = False) -> ModelContract:
    """The contract of a model made elsewhere, from what it carries and its own shapes:

    - a contract it records (`record`: embedded record or ONNX metadata, a ModelContract):
      that one, `names` (from --labels) replacing its class names, the policy flags given
      replacing their fields of its pixel policy;
    - digit shapes ((N,28,28), (N,784), (N,28,28,1), (N,1,28,28) -> 10 outputs) with nothing
      saying otherwise (`general`: --labels, --calibration or a policy flag was given):
      DIGIT_CONTRACT, exactly as before;
    - else a general image contract, `image_contract(H, W, C, names, policy)`: H and W the
      model's static ones (--input-size where dynamic), C = 1 or 3, K >= 2 outputs, names
      given or "0".."K-1", the pixel policy from the flags (`PolicyFlags.policy`).

    `policy` is a digitkit.model.conventions.PolicyFlags (None: none given)."""
    from digitkit.model.contract import default_class_names, image_contract
    from digitkit.model.conventions import NO_POLICY

    policy = policy or NO_POLICY
    if record is not None:
        contract = record
        if not contract.is_digit and (names is not None or policy.given):
            contract = image_contract(contract.height, contract.width, contract.channels,
                                      names or contract.class_names,
                                      policy.over(contract.pixel_policy, name))
        elif names is not None and tuple(names) != contract.class_names:
            raise ModelError(f"{name}: records digitkit's digit contract; --labels does not "
                             "apply")
        contract.check_classes(name, output_shape)
        return contract
    if not general and names is None and is_digit_shape(input_shape, output_shape):
        return DIGIT_CONTRACT
    k = output_classes(name, output_shape)
    layout, h, w, c = image_geometry(name, input_shape, layout)
    if layout == "flat":
        flat = tuple(input_shape)[1]
        if policy.input_size is None or not _known(flat):
            raise ModelError(f"{name}: a flat input {_shown(input_shape)} does not say the "
                             "picture's height and width; give --input-size HxW")
        h, w = policy.input_size
        c = flat // (h * w) if flat % (h * w) == 0 else 0
        if c not in (1, 3):
            raise ModelError(f"{name}: a flat input of {flat} values is not {h}x{w} with 1 or 3 "
                             "channels (--input-size)")
    pixel_policy = policy.policy(h, w, c, name)
    names = tuple(names) if names is not None else default_class_names(k)
    if len(names) != k:
        raise ModelError(f"{name}: {len(names)} class names for a model with {k} outputs")
    return image_contract(*pixel_policy.size, c, names, pixel_policy)


def shape_contract(name: str, input_shape, output_shape) -> ModelContract:
    """The contract a model's shapes imply when nothing else is known (no record, no flags):
    `derive_contract` with nothing given."""
    return derive_contract(name, input_shape, output_shape)


def named_contract_shape(input_name, output_name, input_shape) -> bool:
    """Whether a model presents a contract by name (the one rule): input "pixels" and output
    "probabilities", the input (N, 28, 28) (digits) or a static (N, H, W, C) with C = 1 or 3
    (a general contract)."""
    from digitkit.model.conventions import fits_layout

    c = DIGIT_CONTRACT
    if input_name != c.input_name or output_name != c.output_name or input_shape is None:
        return False
    dims = tuple(input_shape)[1:]
    return fits_layout(input_shape, "NHW", c) or (
        len(dims) == 3 and all(_known(d) for d in dims) and dims[2] in (1, 3))


def keras_preprocessing(model) -> str | None:
    """Where a Keras model prepares its own pixel values, or None: its graph begins (after
    its input, skipping the augmentation layers of INERT_AT_INFERENCE, looking into a nested
    model that comes first) with a Rescaling or Normalization layer. Such a model takes raw
    pixels 0..255 (the layer says how they are scaled; it cannot say RGB from BGR, so RGB is
    assumed, as every Keras loader gives)."""
    layers = [la for la in getattr(model, "layers", [])
              if la.__class__.__name__ != "InputLayer"]
    for layer in layers:
        kind = layer.__class__.__name__
        if kind in INERT_AT_INFERENCE:
            continue
        if kind in OWN_PREPROCESSING:
            return f"{kind} layer '{layer.name}' first"
        if hasattr(layer, "layers") and layer.layers:  # a nested model: look at its start
            inner = keras_preprocessing(layer)
            return f"{inner} in '{layer.name}'" if inner else None
        return None
    return None


def check_classes(name: str, output_shape) -> None:
    """ModelError unless an output shape is (N, 10): the digit contract's rule
    (ModelContract.check_classes)."""
    DIGIT_CONTRACT.check_classes(name, output_shape)


def keras_source(model, name: str | None = None,
                 contract: ModelContract | None = None) -> SourceModel:
    """A loaded Keras model (one input, one output), called with training=False in a traced
    `tf.function`, under `contract` (None: the one its shapes imply, `shape_contract`).

    Traced, not eager: the fit of a model's normalisation runs it a few hundred times over the
    calibration images, and eager Keras spends much of a small model's call in Python; the
    outputs are the same (BENCHMARKS.md, "Fitted normalisation: what the fit costs"). A model
    the tracer cannot take runs eagerly, where its own error shows."""
    name = name or model.name
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ModelError(f"{name}: expected one input and one output, got "
                         f"{len(model.inputs)} and {len(model.outputs)}")
    import tensorflow as tf

    traced = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    eager = []  # set once tracing has failed: the model then always runs eagerly

    def call(x):
        if not eager:
            try:
                return np.asarray(traced(x))
            except Exception:  # noqa: BLE001 - eager Keras raises the model's own error
                eager.append(True)
        return np.asarray(model(x, training=False))

    # Functional models name their outputs; a Sequential model's output is its last layer's.
    out_name = (getattr(model, "output_names", None) or [model.layers[-1].name])[0]
    in_shape, out_shape = tuple(model.inputs[0].shape), tuple(model.outputs[0].shape)
    contract = contract or shape_contract(name, in_shape, out_shape)
    return SourceModel(name, in_shape, call, out_shape, model.inputs[0].name, out_name,
                       contract)


def savedmodel_source(signature, name: str | None = None,
                      contract: ModelContract | None = None) -> SourceModel:
    """A digitkit.model.loading.SavedModelSignature (its one input; its first output, or the
    only one), under `contract` (None: the one its shapes imply)."""
    name = name or str(signature.path)
    if len(signature.output_names) != 1:
        raise ModelError(f"{name}: serving signature has outputs {signature.output_names}, "
                         "expected one")
    out_name = signature.output_names[0]
    out_spec = signature.fn.structured_outputs[out_name]

    def call(x):
        return signature(x)[out_name]

    in_shape, out_shape = tuple(signature.input_shape), tuple(out_spec.shape.as_list())
    contract = contract or shape_contract(name, in_shape, out_shape)
    return SourceModel(name, in_shape, call, out_shape, signature.input_name, out_name,
                       contract)


def onnx_source(session, name: str, contract: ModelContract | None = None) -> SourceModel:
    """An onnxruntime InferenceSession (open it with digitkit.predictors.ort.open_session),
    under `contract` (None: the one its shapes imply). A static batch dimension (e.g. 1, as
    many PyTorch exports have) is run one batch at a time."""
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

    contract = contract or shape_contract(name, tuple(inp.shape), tuple(out.shape))
    return SourceModel(name, tuple(inp.shape), call, tuple(out.shape), inp.name, out.name,
                       contract)
