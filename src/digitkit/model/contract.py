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

from digitkit.errors import ModelError

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


#: Any digit picture to a 28x28 MNIST-style array: ink polarity, crop to the ink, fit into
#: 20x20, centre of mass on the centre (digitkit.images.mnist_convention.to_mnist).
MNIST_DIGIT = Preprocessing(
    "mnist-digit", "digitkit.images.mnist_convention",
    "MNIST digit normalisation: white ink on black, cropped to the ink, fitted into 20x20, "
    "centre of mass at the centre of 28x28")


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
        props.update(input_preprocessing=inp["preprocessing"], output_name=out["name"],
                     output_meaning=out["meaning"])
        return props

    def matches_record(self, record: dict) -> bool:
        """Whether an export.json "model" record is this contract: the same tensors (names,
        shapes) and class names; the prose around them may be an older wording."""
        try:
            inp, out = record["input"], record["output"]
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

#: Every contract digitkit knows, for reading records back.
CONTRACTS = (DIGIT_CONTRACT,)


def contract_from_record(record: dict | None, where: str = "export.json") -> ModelContract:
    """The contract an export.json "model" record describes (an export without one is a
    digit export: every export digitkit wrote before the record existed was)."""
    if not record:
        return DIGIT_CONTRACT
    for contract in CONTRACTS:
        if contract.matches_record(record):
            return contract
    raise ModelError(f"{where}: records a model contract digitkit does not know "
                     f"({json.dumps(record)[:120]})")


# The digit contract's parts under their old names, for the modules that read them and are
# being reshaped elsewhere (predictors/, infer/, bench/); new code reads the value.
INPUT_NAME = DIGIT_CONTRACT.input_name
OUTPUT_NAME = DIGIT_CONTRACT.output_name
INPUT_SHAPE = DIGIT_CONTRACT.input_shape
NUM_CLASSES = DIGIT_CONTRACT.num_classes
