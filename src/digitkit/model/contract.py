"""The model contract as a value: what a model takes in, gives back, and needs done to a file
before it sees it.

`ModelContract` says it for one model: the input tensor (name, height, width, channels, layout,
dtype, value range, ink), the output tensor (name, one probability per class, the class names)
and the preprocessing pipeline that turns an image file into that input. Everything that used
to be a constant of digitkit (28x28, 10 classes, "pixels", "probabilities") is read from the
contract of the model at hand; its JSON form is what export.json ("model") and every ONNX
copy's metadata_props record.

digitkit's own contract is one instance, DIGIT_CONTRACT:

  input  "pixels":        float32, shape (N, 28, 28), values 0..255, white ink on black (MNIST)
  output "probabilities": float32, shape (N, 10), softmax over the digits 0..9
  preprocessing:          the MNIST digit normalisation (digitkit.images.mnist_convention)

Normalisation lives inside the graph, so Keras, the SavedModel and ONNX Runtime all see raw
pixels and nobody has to remember a normalisation constant. Pure Python: the CLI reads it for
--help and the base install (no TensorFlow, no numpy needed here) uses all of it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from digitkit.errors import DataError, ModelError
from digitkit.model.policy import PixelPolicy

#: Input layouts: name -> the input shape after the batch dimension for (height, width,
#: channels). "NHW" has no channel axis (one channel only); "flat" is every value in a row.
LAYOUTS = {
    "NHW": lambda h, w, c: (h, w),
    "NHWC": lambda h, w, c: (h, w, c),
    "NCHW": lambda h, w, c: (c, h, w),
    "flat": lambda h, w, c: (h * w * c,),
}

WHITE_ON_BLACK, BLACK_ON_WHITE = "white-on-black", "black-on-white"
#: How the JSON form spells an ink polarity out for people.
_INK_TEXT = {WHITE_ON_BLACK: "white ink on black background (MNIST convention)",
             BLACK_ON_WHITE: "black ink on white background"}
#: What every contract's input record says about normalisation: it is inside the graph.
_IN_GRAPH = "none: normalisation is inside the graph; feed raw pixel values"
_OUTPUT_MEANING = "softmax probabilities, column i is class_labels[i]"


@dataclass(frozen=True)
class Preprocessing:
    """A named pipeline from an image file to the contract's input (run before the model,
    by the images layer): `name` is how records and tables refer to it. Digits have one
    (MNIST_DIGIT); a general classifier's is a resize policy (images/pixels.py's PixelPolicy,
    issue 18), another value of this place."""

    name: str
    module: str  # the images module that implements it
    summary: str  # for people
    #: For a general image classifier, its digitkit.images.pixels.PixelPolicy (size,
    #: channels, resize, crop, pad, background, interpolation); None for digits.
    policy: object = None

    def to_dict(self) -> dict | None:
        """The policy's JSON form (None for the digit pipeline, whose name says it all)."""
        return None if self.policy is None else self.policy.to_dict()


#: Any digit picture to a 28x28 MNIST-style array: ink polarity, crop to the ink, fit into
#: 20x20, centre of mass on the centre (digitkit.images.mnist_convention.to_mnist).
MNIST_DIGIT = Preprocessing(
    "mnist-digit", "digitkit.images.mnist_convention",
    "MNIST digit normalisation: white ink on black, cropped to the ink, fitted into 20x20, "
    "centre of mass at the centre of 28x28")


IMAGE_PIPELINE = "image"


def image_preprocessing(policy) -> Preprocessing:
    """The pipeline of a general image classifier: decode, gray or RGB, resize by `policy`
    (a digitkit.images.pixels.PixelPolicy)."""
    p = policy
    what = "gray" if p.channels == 1 else "RGB"
    crop = f" {p.crop_fraction:g}" if p.resize == "center-crop" and p.crop_fraction != 1 else ""
    return Preprocessing(IMAGE_PIPELINE, "digitkit.images.pixels",
                         f"decode to {what}, {p.resize}{crop} to {p.size[0]}x{p.size[1]} "
                         f"({p.interpolation})", p)


@dataclass(frozen=True)
class ModelContract:
    """What one model takes in and gives back. Frozen: a contract is compared, recorded and
    shared, never changed."""

    kind: str  # what it classifies, for messages: "digit"
    height: int
    width: int
    channels: int
    layout: str  # of the input tensor, a LAYOUTS name
    class_names: tuple[str, ...]  # in output order
    preprocessing: Preprocessing
    input_name: str = "pixels"
    output_name: str = "probabilities"
    dtype: str = "float32"
    value_range: tuple[int, int] = (0, 255)
    ink: str | None = None  # WHITE_ON_BLACK / BLACK_ON_WHITE where the pictures have ink

    def __post_init__(self):
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout {self.layout!r}: choose from {', '.join(LAYOUTS)}")
        if self.layout == "NHW" and self.channels != 1:
            raise ValueError("layout NHW has no channel axis: one channel only")
        if len(self.class_names) < 2:
            raise ValueError("a classifier has at least two classes")

    # ------------------------------------------------------------------ shapes

    @property
    def is_digit(self) -> bool:
        """Whether files reach this model through the MNIST digit normalisation (digitkit's
        own contract) rather than a general pixel policy."""
        return self.preprocessing.policy is None

    @property
    def pixel_policy(self):
        """The general pipeline's PixelPolicy (None for digits)."""
        return self.preprocessing.policy

    @property
    def pixels_shape(self) -> tuple[int, ...]:
        """The raw pixels every file becomes, after the batch dimension: (28, 28) for
        digits, (H, W, C) for a general classifier (always the contract's own layout)."""
        return self.input_shape

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The input tensor's shape after the batch dimension: (28, 28) for digits."""
        return self.layout_shape(self.layout)

    @property
    def output_shape(self) -> tuple[int]:
        return (self.num_classes,)

    def layout_shape(self, layout: str) -> tuple[int, ...]:
        """This contract's pixels in `layout`, after the batch dimension (a model made
        elsewhere may want them so): NHWC (28, 28, 1), NCHW (1, 28, 28), flat (784,)."""
        return LAYOUTS[layout](self.height, self.width, self.channels)

    def shape_text(self, batch: str = "N", shape: tuple | None = None) -> str:
        """"(N,28,28)": a shape as messages and descriptions write it."""
        return "(" + ",".join(str(d) for d in (batch, *(shape or self.input_shape))) + ")"

    # ------------------------------------------------------------------ for people

    def input_text(self, batch: str = "N") -> str:
        """"pixels float32 (N,28,28) raw 0..255 white-on-black"."""
        low, high = self.value_range
        ink = f" {self.ink}" if self.ink else ""
        return (f"{self.input_name} {self.dtype} {self.shape_text(batch)} raw "
                f"{low}..{high}{ink}")

    def output_text(self, batch: str = "N") -> str:
        """"probabilities (N,10)"."""
        return f"{self.output_name} {self.shape_text(batch, self.output_shape)}"

    @property
    def image_text(self) -> str:
        """"28x28 digit image": what an input must be, for refusals."""
        return f"{self.height}x{self.width} {self.kind} image"

    @property
    def classes_text(self) -> str:
        """"one score per digit 0..9; digitkit serves digit classifiers only"."""
        names = self.class_names
        if not self.is_digit:
            return f"one score per class ({self.num_classes} classes)"
        return (f"one score per {self.kind} {names[0]}..{names[-1]}; digitkit serves "
                f"{self.kind} classifiers only")

    # ------------------------------------------------------------------ checks

    def check_keras(self, path, model) -> None:
        """ModelError unless a loaded Keras model maps (None, *input_shape) to
        (None, num_classes)."""
        if len(model.inputs) != 1 or len(model.outputs) != 1:
            raise ModelError(f"{path}: expected one input and one output, got "
                             f"{len(model.inputs)} and {len(model.outputs)}")
        in_shape = tuple(model.inputs[0].shape)
        out_shape = tuple(model.outputs[0].shape)
        if in_shape[1:] != self.input_shape:
            raise ModelError(f"{path}: input shape {in_shape}, expected "
                             f"{(None, *self.input_shape)} raw pixels")
        if out_shape[1:] != self.output_shape:
            raise ModelError(f"{path}: output shape {out_shape}, expected "
                             f"(None, {self.num_classes})")

    def check_classes(self, name: str, output_shape) -> None:
        """ModelError unless an output shape (batch first; None, -1 or a name where unknown)
        can be (N, num_classes)."""
        if output_shape is None:
            return
        shape = tuple(output_shape)
        last = shape[-1] if shape else None
        if len(shape) != 2 or (isinstance(last, int) and last > 0
                               and last != self.num_classes):
            shown = "(" + ", ".join("N" if i == 0 else str(d)
                                    for i, d in enumerate(shape)) + ")"
            raise ModelError(f"{name}: outputs {shown}, expected (N, {self.num_classes}): "
                             f"{self.classes_text}")

    # ------------------------------------------------------------------ records

    def input_record(self) -> dict:
        """export.json "model"/"input" (and the ONNX metadata's input_* keys)."""
        record = {"name": self.input_name, "shape": ["N", *self.input_shape],
                  "dtype": self.dtype, "value_range": list(self.value_range)}
        if self.ink:
            record["ink_polarity"] = _INK_TEXT[self.ink]
        record["preprocessing"] = _IN_GRAPH
        if not self.is_digit:
            record["layout"] = self.layout
            record["pixel_policy"] = self.preprocessing.to_dict()
        return record

    def output_record(self) -> dict:
        return {"name": self.output_name, "shape": ["N", self.num_classes],
                "dtype": self.dtype, "meaning": _OUTPUT_MEANING}

    def to_dict(self) -> dict:
        """The JSON form: export.json's "model"."""
        return {"input": self.input_record(), "output": self.output_record(),
                "class_labels": list(self.class_names)}

    def onnx_metadata(self) -> dict[str, str]:
        """The contract in ONNX metadata_props (every value a string), in this order."""
        inp, out = self.input_record(), self.output_record()
        props = {"class_labels": json.dumps(list(self.class_names)),
                 "input_name": inp["name"],
                 "input_shape": json.dumps(inp["shape"]),
                 "input_dtype": inp["dtype"],
                 "input_value_range": json.dumps(inp["value_range"])}
        if "ink_polarity" in inp:
            props["input_ink_polarity"] = inp["ink_polarity"]
        if "pixel_policy" in inp:
            props["input_layout"] = inp["layout"]
            props[PIXEL_POLICY_KEY] = json.dumps(inp["pixel_policy"], separators=(",", ":"))
        props.update(input_preprocessing=inp["preprocessing"], output_name=out["name"],
                     output_meaning=out["meaning"])
        return props

    def matches_record(self, record: dict) -> bool:
        """Whether an export.json "model" record is this contract: the same tensors (names,
        shapes) and class names; the prose around them may be an older wording."""
        try:
            inp, out = record["input"], record["output"]
            if (inp.get("pixel_policy") is not None) == self.is_digit:
                return False
            if not self.is_digit and inp["pixel_policy"] != self.preprocessing.to_dict():
                return False
            return (inp["name"] == self.input_name and inp["shape"][1:] == list(self.input_shape)
                    and out["name"] == self.output_name
                    and out["shape"][1:] == [self.num_classes]
                    and list(record["class_labels"]) == list(self.class_names))
        except (KeyError, TypeError, IndexError):
            return False


#: digitkit's own contract: MNIST digits, raw pixels (N, 28, 28) in, probabilities (N, 10) out.
DIGIT_CONTRACT = ModelContract(
    kind="digit", height=28, width=28, channels=1, layout="NHW",
    class_names=tuple(str(d) for d in range(10)), preprocessing=MNIST_DIGIT,
    ink=WHITE_ON_BLACK)

#: Every fixed contract digitkit knows, for reading records back (general image contracts
#: are rebuilt from their record: `image_contract`).
CONTRACTS = (DIGIT_CONTRACT,)

#: The ONNX metadata key of a general contract's pixel policy (JSON).
PIXEL_POLICY_KEY = "input_pixel_policy"
#: The metadata_props keys of an adapted copy (digitkit.model.adapters writes them): the
#: source's input convention (json of InputConvention.to_dict()) and one line for people.
CONVENTION_KEY = "digitkit_source_convention"
ADAPTER_KEY = "digitkit_adapter"


def image_contract(height: int, width: int, channels: int, class_names, policy=None,
                   kind: str = "image") -> ModelContract:
    """A general image classifier's contract: raw pixels float32 (N, H, W, C) 0..255 in,
    C = 1 (gray) or 3 (RGB), probabilities (N, K) out, in the order of `class_names`.
    `policy` (a PixelPolicy) says how a file becomes those pixels; by default the whole
    picture squashed to (H, W), bilinear (Keras' image_dataset_from_directory's way)."""
    if policy is None:
        policy = PixelPolicy((int(height), int(width)), int(channels))
    if tuple(policy.size) != (height, width) or policy.channels != channels:
        raise ValueError(f"pixel policy {policy.size}x{policy.channels} does not match the "
                         f"contract's input {height}x{width}x{channels}")
    return ModelContract(kind=kind, height=int(height), width=int(width),
                         channels=int(channels), layout="NHWC",
                         class_names=tuple(str(n) for n in class_names),
                         preprocessing=image_preprocessing(policy))


def default_class_names(k: int) -> tuple[str, ...]:
    """Names for a model that brings none: "0".."K-1", the output index (what every result
    showed before names existed)."""
    return tuple(str(i) for i in range(k))


def contract_from_record(record: dict | None, where: str = "export.json") -> ModelContract:
    """The contract an export.json "model" record describes (an export without one is a
    digit export: every export digitkit wrote before the record existed was)."""
    if not record:
        return DIGIT_CONTRACT
    for contract in CONTRACTS:
        if contract.matches_record(record):
            return contract
    try:
        inp = record["input"]
        policy_record = inp.get("pixel_policy")
        if policy_record is not None:
            policy = PixelPolicy.from_dict(policy_record, where)
            contract = image_contract(*policy.size, policy.channels,
                                      record["class_labels"], policy)
            if contract.matches_record(record):
                return contract
    except (KeyError, TypeError, ValueError, AttributeError, DataError) as err:
        why = err.reason if isinstance(err, DataError) else err
        raise ModelError(f"{where}: records a model contract digitkit cannot read "
                         f"({why})") from err
    raise ModelError(f"{where}: records a model contract digitkit does not know "
                     f"({json.dumps(record)[:120]})")


def contract_from_metadata(props: dict, where: str) -> ModelContract | None:
    """The contract an ONNX copy's metadata_props record (`onnx_metadata`), or None when they
    record none (a model made elsewhere)."""
    if "class_labels" not in props or "input_shape" not in props:
        return None
    try:
        policy = props.get(PIXEL_POLICY_KEY)
        record = {"input": {"name": props["input_name"],
                            "shape": json.loads(props["input_shape"])},
                  "output": {"name": props.get("output_name", "probabilities"),
                             "shape": ["N", len(json.loads(props["class_labels"]))]},
                  "class_labels": json.loads(props["class_labels"])}
        if policy is not None:
            record["input"]["pixel_policy"] = json.loads(policy)
    except (KeyError, TypeError, ValueError) as err:
        raise ModelError(f"{where}: unreadable contract metadata ({err})") from err
    return contract_from_record(record, where)


# The digit contract's parts under their old names, for the modules that read them and are
# being reshaped elsewhere (predictors/, infer/, bench/); new code reads the value.
INPUT_NAME = DIGIT_CONTRACT.input_name
OUTPUT_NAME = DIGIT_CONTRACT.output_name
INPUT_SHAPE = DIGIT_CONTRACT.input_shape
NUM_CLASSES = DIGIT_CONTRACT.num_classes
