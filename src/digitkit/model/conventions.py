"""How a model made elsewhere expects its input: the input convention.

Every model is run under a contract (digitkit.model.contract.ModelContract; digitkit's own
models honour DIGIT_CONTRACT: raw pixels (N, 28, 28) 0..255 white-on-black in, probabilities
(N, 10) out). A model made elsewhere was trained on the contract's pixels prepared some other
way; `InputConvention` says how, exactly enough to reproduce it (shapes shown for digits):

  layout    "NHW" (N,28,28), "NHWC" (N,28,28,1), "NCHW" (N,1,28,28), "flat" (N,784): the
            contract's pixels laid out as the model wants them (contract.layout_shape)
  scale     "raw" 0..255, "unit" x/255, "standardized" (x/255 - mean)/std,
            "l2" keras.utils.normalize(x, axis) of the (N,28,28) pixels, as the classic
            notebook applies it to the arrays of keras.datasets.mnist
  ink       "white-on-black" (MNIST) or "black-on-white" (255 - x, before the scale)
  outputs   "probabilities" or "logits" (a softmax is added)

`apply` is the numpy reference of a convention (what detection feeds the source model, and what
every adapted copy is validated against); the adapters (digitkit.model.adapters) rebuild it as
graph ops. `ConventionFlags` is what the --input-* flags declare. Numpy only: the base install
(ONNX, no TensorFlow) uses all of this.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from functools import partial
from typing import TYPE_CHECKING

from digitkit.errors import ModelError, UsageError
from digitkit.model.contract import (
    BLACK_ON_WHITE,
    DIGIT_CONTRACT,
    WHITE_ON_BLACK,
    ModelContract,
)
from digitkit.model.contract import LAYOUTS as _LAYOUT_RULES

if TYPE_CHECKING:
    import numpy as np

#: layout -> the model's input shape after the batch dimension, for the digit contract
#: (another contract's: ModelContract.layout_shape); the keys are the layouts' names.
LAYOUTS = {name: DIGIT_CONTRACT.layout_shape(name) for name in _LAYOUT_RULES}
SCALES = ("raw", "unit", "standardized", "l2")
INKS = (WHITE_ON_BLACK, BLACK_ON_WHITE)
PROBABILITIES, LOGITS = "probabilities", "logits"
OUTPUTS = (PROBABILITIES, LOGITS)

#: The MNIST training set's pixel mean and standard deviation on the 0..1 scale: the
#: constants of the PyTorch MNIST example, hence of most "standardized" MNIST models.
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
#: (x/255 - 0.5)/0.5, i.e. pixels in [-1, 1]: the other standardization MNIST tutorials use
#: (transforms.Normalize((0.5,), (0.5,))); detection tries it beside MNIST's own statistics.
SYMMETRIC_MEAN, SYMMETRIC_STD = 0.5, 0.5
#: keras.utils.normalize axes over the (N, H, W) pixels: 1 is the classic notebook's
#: (each image column), -1 Keras's default (each image row). 2 and -2 are the same axes.
L2_AXES = (1, -1)
#: --l2-axis when not given: keras.utils.normalize's own default.
DEFAULT_L2_AXIS = -1
_AXIS_ALIASES = {1: 1, -2: 1, 2: -1, -1: -1}

#: The flag that declares each field (the CLI's names; messages name them).
FLAG_NAMES = {"layout": "--input-layout", "scale": "--input-scale", "mean": "--input-mean",
              "std": "--input-std", "l2_axis": "--l2-axis", "ink": "--ink",
              "outputs": "--outputs"}
DECLARE_HINT = ("declare it with --input-scale {raw,unit,standardized,l2} (with --l2-axis or "
                "--input-mean/--input-std), --ink and --outputs")


def _canonical_layout(layout: str) -> str:
    for name in LAYOUTS:
        if str(layout).lower() == name.lower():
            return name
    raise UsageError(f"{FLAG_NAMES['layout']} {layout!r}: choose from {', '.join(LAYOUTS)}")


def _choice(field_name: str, value, choices) -> str:
    if value not in choices:
        raise UsageError(f"{FLAG_NAMES[field_name]} {value!r}: choose from {', '.join(choices)}")
    return value


def _fmt(v: float) -> str:
    return f"{v:g}"


def l2_normalize(x: np.ndarray, axis: int) -> np.ndarray:
    """keras.utils.normalize(x, axis, order=2) for a numpy array, computed as Keras computes it:
    the order-2 norm along `axis`, a zero norm replaced by 1 (an all-black column stays 0)."""
    import numpy as np

    norm = np.atleast_1d(np.linalg.norm(x, 2, axis))
    norm[norm == 0] = 1
    return x / np.expand_dims(norm, axis)


@dataclass(frozen=True)
class InputConvention:
    """How a model wants its input, relative to the raw pixels of `contract` (not recorded:
    the contract has its own record); `InputConvention()` is the contract itself."""

    layout: str = "NHW"
    scale: str = "raw"
    mean: float | None = None  # standardized only (0..1 scale); MNIST's when not given
    std: float | None = None
    l2_axis: int | None = None  # l2 only; Keras's default -1 when not given
    ink: str = WHITE_ON_BLACK
    outputs: str = PROBABILITIES
    contract: ModelContract = field(default=DIGIT_CONTRACT, repr=False)

    def __post_init__(self):
        set_ = partial(object.__setattr__, self)  # a frozen dataclass normalises its fields
        set_("layout", _canonical_layout(self.layout))
        _choice("scale", self.scale, SCALES)
        _choice("ink", self.ink, INKS)
        _choice("outputs", self.outputs, OUTPUTS)
        if self.scale == "standardized":
            if (self.mean is None) != (self.std is None):
                raise UsageError("give both --input-mean and --input-std (or neither, for "
                                 f"MNIST's {_fmt(MNIST_MEAN)}/{_fmt(MNIST_STD)})")
            mean = MNIST_MEAN if self.mean is None else float(self.mean)
            std = MNIST_STD if self.std is None else float(self.std)
            if not (math.isfinite(mean) and math.isfinite(std) and std > 0):
                raise UsageError(f"--input-mean {mean:g} / --input-std {std:g}: the mean must "
                                 "be finite and the std finite and > 0")
            set_("mean", mean)
            set_("std", std)
        elif self.mean is not None or self.std is not None:
            raise UsageError("--input-mean/--input-std go with --input-scale standardized")
        if self.scale == "l2":
            axis = DEFAULT_L2_AXIS if self.l2_axis is None else self.l2_axis
            if axis not in _AXIS_ALIASES:
                raise UsageError(f"--l2-axis {axis!r}: choose 1 (the classic notebook's) or -1 "
                                 "(keras.utils.normalize's default) of the "
                                 f"{_pixels_text(self.contract)} pixels")
            set_("l2_axis", _AXIS_ALIASES[axis])
        elif self.l2_axis is not None:
            raise UsageError("--l2-axis goes with --input-scale l2")

    # ------------------------------------------------------------------ what it is

    @property
    def input_shape(self) -> tuple:
        """The model's input shape after the batch dimension."""
        return self.contract.layout_shape(self.layout)

    @property
    def is_contract(self) -> bool:
        """The contract's raw pixels in its own layout, probabilities out: nothing to adapt."""
        return self == InputConvention(layout=self.contract.layout, contract=self.contract)

    def with_outputs(self, outputs: str) -> InputConvention:
        return replace(self, outputs=outputs)

    def describe(self, full: bool = False) -> str:
        """For people: the pixel values as people write them, "keras.utils.normalize(axis=1)",
        "/255", "(x/255-0.1307)/0.3081", "raw 0..255", with "255-x, " first for black-on-white.
        Detection compares values only (the model's shape fixes the layout); `full` adds the
        layout and the outputs: "(N,1,28,28) /255, logits (softmax added)"."""
        values = {
            "raw": "raw 0..255",
            "unit": "/255",
            "standardized": f"(x/255-{_fmt(self.mean or 0)})/{_fmt(self.std or 1)}",
            "l2": f"keras.utils.normalize(axis={self.l2_axis})",
        }[self.scale]
        if self.ink == BLACK_ON_WHITE:
            values = f"255-x, {values}"
        if not full:
            return values
        shape = ",".join(str(d) for d in ("N", *self.input_shape))
        outputs = "logits (softmax added)" if self.outputs == LOGITS else "probabilities"
        return f"({shape}) {values}, {outputs}"

    # ------------------------------------------------------------------ the reference

    def apply(self, pixels) -> np.ndarray:
        """The contract's raw pixels, float32 (N, 28, 28) 0..255 white-on-black for digits,
        -> the model's input (numpy)."""
        import numpy as np  # here, not at the top: the CLI reads the flags' choices for --help

        x = np.asarray(pixels, dtype=np.float32)
        want = self.contract.input_shape
        if x.ndim != 1 + len(want) or x.shape[1:] != want:
            raise ValueError(f"expected pixels of shape {_pixels_text(self.contract)}, got "
                             f"{x.shape}")
        if self.ink == BLACK_ON_WHITE:
            x = np.float32(255) - x
        if self.scale == "unit":
            x = x / np.float32(255)
        elif self.scale == "standardized":
            x = (x / np.float32(255) - np.float32(self.mean)) / np.float32(self.std)
        elif self.scale == "l2":
            x = l2_normalize(x, self.l2_axis)
        return np.ascontiguousarray(x.reshape((len(x), *self.input_shape)), dtype=np.float32)

    # ------------------------------------------------------------------ records

    def to_dict(self) -> dict:
        """For export.json and ONNX metadata (json.dumps it): only the fields that apply."""
        d = {"layout": self.layout, "input_shape": ["N", *self.input_shape],
             "scale": self.scale}
        if self.scale == "standardized":
            d.update(mean=self.mean, std=self.std)
        if self.scale == "l2":
            d["l2_axis"] = self.l2_axis
        d.update(ink=self.ink, outputs=self.outputs, description=self.describe(full=True))
        return d

    @classmethod
    def from_dict(cls, d: dict, contract: ModelContract = DIGIT_CONTRACT) -> InputConvention:
        """Read a to_dict record back, for a model under `contract` (unknown or derived keys
        are ignored)."""
        names = {f.name for f in fields(cls)} - {"contract"}
        try:
            return cls(**{k: v for k, v in dict(d).items() if k in names}, contract=contract)
        except (UsageError, TypeError, ValueError) as err:
            raise ModelError(f"invalid input convention record {d!r} ({err})") from err


def _pixels_text(contract: ModelContract) -> str:
    """"(N, 28, 28)": the contract's pixels as messages name them."""
    return "(" + ", ".join(str(d) for d in ("N", *contract.input_shape)) + ")"


def fits_layout(input_shape, layout: str, contract: ModelContract = DIGIT_CONTRACT) -> bool:
    """Whether a model input shape (batch first; None, -1 or a name for an unknown dimension)
    can be the contract's pixels in `layout`."""
    dims, want = tuple(input_shape)[1:], contract.layout_shape(layout)
    return len(dims) == len(want) and all(not isinstance(d, int) or d <= 0 or d == w
                                          for d, w in zip(dims, want, strict=True))


def layout_of(input_shape, contract: ModelContract = DIGIT_CONTRACT) -> str:
    """The layout of a model input shape, or ModelError when it is no layout of the contract's
    image (28x28 for digits) or fits several (a 4-D input with unknown dimensions)."""
    found = [name for name in LAYOUTS if fits_layout(input_shape, name, contract)]
    shown = "(" + ", ".join("N" if i == 0 else str(d) for i, d in
                            enumerate(tuple(input_shape))) + ")"
    if not found:
        shapes = [contract.shape_text(shape=contract.layout_shape(name)) for name in LAYOUTS]
        raise ModelError(f"model input {shown} is not a {contract.image_text}; expected "
                         f"{', '.join(shapes[:-1])} or {shapes[-1]}")
    if len(found) > 1:
        raise ModelError(f"model input {shown} fits layouts {', '.join(found)}; declare it with "
                         "--input-layout")
    return found[0]


#: Value conventions detection tries, in the order ties are listed: (scale, extra fields).
VALUE_CANDIDATES = (
    ("raw", {}),
    ("unit", {}),
    ("standardized", {"mean": MNIST_MEAN, "std": MNIST_STD}),
    ("standardized", {"mean": SYMMETRIC_MEAN, "std": SYMMETRIC_STD}),
    ("l2", {"l2_axis": 1}),
    ("l2", {"l2_axis": -1}),
)


def candidates(input_shape, outputs: str = PROBABILITIES, layout: str | None = None,
               contract: ModelContract = DIGIT_CONTRACT) -> list[InputConvention]:
    """Every convention compatible with a model input shape: each value scale of
    VALUE_CANDIDATES in each ink polarity, the layout fixed by the shape (or given)."""
    layout = layout or layout_of(input_shape, contract)
    return [InputConvention(layout=layout, scale=scale, ink=ink, outputs=outputs,
                            contract=contract, **extra)
            for ink in INKS for scale, extra in VALUE_CANDIDATES]


@dataclass(frozen=True)
class ConventionFlags:
    """What the user declared (the --input-* flags; None = not given).

    --input-scale declares the convention and skips detection: the layout then comes from
    the model's input shape unless given, the ink defaults to white-on-black (MNIST's), and
    the outputs are read off the model unless --outputs is given. Without --input-scale, any
    flags given narrow the candidates detection scores.
    """

    layout: str | None = None
    scale: str | None = None
    mean: float | None = None
    std: float | None = None
    l2_axis: int | None = None
    ink: str | None = None
    outputs: str | None = None

    def __post_init__(self):
        if self.layout is not None:
            object.__setattr__(self, "layout", _canonical_layout(self.layout))
        for name, choices in (("scale", SCALES), ("ink", INKS), ("outputs", OUTPUTS)):
            if getattr(self, name) is not None:
                _choice(name, getattr(self, name), choices)
        if (self.mean is not None or self.std is not None) and self.scale != "standardized":
            raise UsageError("--input-mean/--input-std need --input-scale standardized")
        if self.l2_axis is not None and self.scale != "l2":
            raise UsageError("--l2-axis needs --input-scale l2")
        if self.scale is not None:
            self._declared("NHW")  # every value check of InputConvention, now

    @classmethod
    def from_options(cls, options: dict) -> ConventionFlags:
        """From click options named after the flags (input_layout, input_scale, input_mean,
        input_std, l2_axis, ink, outputs); other keys are ignored."""
        keys = {"layout": "input_layout", "scale": "input_scale", "mean": "input_mean",
                "std": "input_std", "l2_axis": "l2_axis", "ink": "ink", "outputs": "outputs"}
        return cls(**{f: options.get(k) for f, k in keys.items()})

    @property
    def declared(self) -> bool:
        return self.scale is not None

    @property
    def given(self) -> list[str]:
        """The flags given, as the user typed them."""
        return [FLAG_NAMES[f.name] for f in fields(self) if getattr(self, f.name) is not None]

    def _declared(self, layout: str,
                  contract: ModelContract = DIGIT_CONTRACT) -> InputConvention:
        return InputConvention(layout=layout, scale=self.scale, mean=self.mean, std=self.std,
                               l2_axis=self.l2_axis, ink=self.ink or WHITE_ON_BLACK,
                               outputs=self.outputs or PROBABILITIES, contract=contract)

    def layout_for(self, input_shape, contract: ModelContract = DIGIT_CONTRACT) -> str:
        """The declared layout checked against the model's shape, or the shape's layout."""
        if self.layout is None:
            return layout_of(input_shape, contract)
        if not fits_layout(input_shape, self.layout, contract):
            want = ("N", *contract.layout_shape(self.layout))
            raise UsageError(f"--input-layout {self.layout} {want} does not fit the model's "
                             f"input shape {('N', *tuple(input_shape)[1:])}")
        return self.layout

    def allows(self, convention: InputConvention) -> bool:
        """Whether a candidate agrees with every flag given (outputs are not compared)."""
        return all(getattr(self, k) is None or getattr(self, k) == getattr(convention, k)
                   for k in ("layout", "scale", "ink"))


NO_FLAGS = ConventionFlags()


def declared_convention(flags: ConventionFlags, input_shape,
                        contract: ModelContract = DIGIT_CONTRACT) -> InputConvention | None:
    """The convention the flags declare for a model of `input_shape` under `contract`, or
    None when they do not declare one (no --input-scale: detect it). Outputs default to
    probabilities here; callers that can run the model check them
    (digitkit.model.detect.resolve_convention does)."""
    if not flags.declared:
        return None
    return flags._declared(flags.layout_for(input_shape, contract), contract)
