"""How a model made elsewhere expects its input: the input convention.

Every model is run under a contract (digitkit.model.contract.ModelContract; digitkit's own
models honour DIGIT_CONTRACT: raw pixels (N, 28, 28) 0..255 white-on-black in, probabilities
(N, 10) out). A model made elsewhere was trained on the contract's pixels prepared some other
way; `InputConvention` says how, exactly enough to reproduce it (shapes shown for digits):

  layout    "NHW" (N,28,28), "NHWC" (N,28,28,1), "NCHW" (N,1,28,28), "flat" (N,784): the
            contract's pixels laid out as the model wants them (contract.layout_shape); for a
            general (H,W,C) contract NHWC, NCHW (a transpose), flat, and NHW where C = 1
  scale     "raw" 0..255, "unit" x/255, "standardized" (x/255 - mean)/std (per channel for a
            general contract: a tuple of C values, or one for all; ImageNet's by default,
            Keras' "torch" mode), "tf" x/127.5 - 1 (Keras' "tf" mode, [-1, 1]), "caffe"
            x - the ImageNet mean on 0..255 (Keras' "caffe" mode, with channel order bgr),
            "l2" keras.utils.normalize(x, axis) of the (N,28,28) pixels, as the classic
            notebook applies it to the arrays of keras.datasets.mnist (digits only)
  ink       "white-on-black" (MNIST) or "black-on-white" (255 - x, before the scale); digits
            only
  channel_order  "rgb" or "bgr" (the channels reversed after the values: OpenCV-trained
            models and Keras' caffe mode); 3-channel contracts only
  outputs   "probabilities" or "logits" (a softmax is added)

Per-channel constants (mean, std, caffe's mean) are always given in RGB order, the order of
the contract's pixels; the channel order is applied after them, as Keras' preprocess_input
flips to BGR and then subtracts its BGR-ordered mean.

`apply` is the numpy reference of a convention (what detection feeds the source model, and what
every adapted copy is validated against); the adapters (digitkit.model.adapters) rebuild it as
graph ops. `ConventionFlags` is what the --input-* flags declare. Numpy only: the base install
(ONNX, no TensorFlow) uses all of this.

`PolicyFlags` is what --input-size, --resize, --crop-fraction, --pad and --interpolation
declare: how a file becomes a general model's pixels (digitkit.images.pixels.PixelPolicy).
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
SCALES = ("raw", "unit", "standardized", "l2", "tf", "caffe")
#: Scales that only mean something for digit contracts (the classic MNIST notebook's).
DIGIT_ONLY_SCALES = ("l2",)
INKS = (WHITE_ON_BLACK, BLACK_ON_WHITE)
PROBABILITIES, LOGITS = "probabilities", "logits"
OUTPUTS = (PROBABILITIES, LOGITS)
RGB, BGR = "rgb", "bgr"
CHANNEL_ORDERS = (RGB, BGR)

#: The MNIST training set's pixel mean and standard deviation on the 0..1 scale: the
#: constants of the PyTorch MNIST example, hence of most "standardized" MNIST models.
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
#: (x/255 - 0.5)/0.5, i.e. pixels in [-1, 1]: the other standardization MNIST tutorials use
#: (transforms.Normalize((0.5,), (0.5,))); detection tries it beside MNIST's own statistics.
SYMMETRIC_MEAN, SYMMETRIC_STD = 0.5, 0.5
#: ImageNet's per-channel mean and std on the 0..1 scale, RGB: torchvision's, timm's and
#: Keras' "torch" mode's; a general contract's standardization when none is given. A gray
#: (1-channel) model gets their averages, as timm gives a 1-channel model.
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
#: Keras' "caffe" mode subtracts ImageNet's mean on 0..255, written there in BGR order
#: (103.939, 116.779, 123.68); here in RGB order like every per-channel constant.
CAFFE_MEAN = (123.68, 116.779, 103.939)
#: keras.utils.normalize axes over the (N, H, W) pixels: 1 is the classic notebook's
#: (each image column), -1 Keras's default (each image row). 2 and -2 are the same axes.
L2_AXES = (1, -1)
#: --l2-axis when not given: keras.utils.normalize's own default.
DEFAULT_L2_AXIS = -1
_AXIS_ALIASES = {1: 1, -2: 1, 2: -1, -1: -1}

#: The Keras preprocess_input modes --preprocess names, as convention fields (torch's mean and
#: std may be replaced by --input-mean/--input-std; caffe's channel order by --channel-order).
PRESETS = {
    "tf": {"scale": "tf"},
    "torch": {"scale": "standardized", "mean": IMAGENET_MEAN, "std": IMAGENET_STD},
    "caffe": {"scale": "caffe", "channel_order": BGR},
}

#: The flag that declares each field (the CLI's names; messages name them).
FLAG_NAMES = {"layout": "--input-layout", "scale": "--input-scale", "mean": "--input-mean",
              "std": "--input-std", "l2_axis": "--l2-axis", "ink": "--ink",
              "outputs": "--outputs", "channel_order": "--channel-order",
              "preset": "--preprocess"}
DECLARE_HINT = ("declare it with --input-scale {raw,unit,standardized,l2} (with --l2-axis or "
                "--input-mean/--input-std), --ink and --outputs")
#: The same for a general image classifier (what its refusals name).
GENERAL_DECLARE_HINT = ("give --calibration DIR (a labelled folder, one subfolder per class) "
                        "to detect it, or declare it with --preprocess {tf,torch,caffe} or "
                        "--input-scale {raw,unit,standardized,tf,caffe} (with "
                        "--input-mean/--input-std), --channel-order and --outputs")


def declare_hint(contract: ModelContract) -> str:
    """How to declare a convention, for refusals about a model under `contract`."""
    return DECLARE_HINT if contract.is_digit else GENERAL_DECLARE_HINT


def _canonical_layout(layout: str) -> str:
    for name in LAYOUTS:
        if str(layout).lower() == name.lower():
            return name
    raise UsageError(f"{FLAG_NAMES['layout']} {layout!r}: choose from {', '.join(LAYOUTS)}")


def _choice(field_name: str, value, choices) -> str:
    if value not in choices:
        raise UsageError(f"{FLAG_NAMES[field_name]} {value!r}: choose from {', '.join(choices)}")
    return value


def _fmt(v) -> str:
    if isinstance(v, tuple):
        return "(" + ",".join(f"{x:g}" for x in v) + ")"
    return f"{v:g}"


def _values(flag: str, v) -> float | tuple[float, ...]:
    """One number, or a tuple of numbers (a list or tuple; one element is one number)."""
    if isinstance(v, (list, tuple)):
        if not v:
            raise UsageError(f"{flag}: give one value, or one per channel")
        try:
            vals = tuple(float(x) for x in v)
        except (TypeError, ValueError) as err:
            raise UsageError(f"{flag} {v!r}: not numbers") from err
        return vals[0] if len(vals) == 1 else vals
    try:
        return float(v)
    except (TypeError, ValueError) as err:
        raise UsageError(f"{flag} {v!r}: not a number") from err


def _per_channel(flag: str, v, channels: int) -> tuple[float, ...]:
    """A general contract's constants: C values (one value given: the same for every channel)."""
    if not isinstance(v, tuple):
        return (float(v),) * channels
    if len(v) != channels:
        raise UsageError(f"{flag} {','.join(f'{x:g}' for x in v)}: {len(v)} values for a model "
                         f"with {channels} channel{'s' if channels > 1 else ''}; give one per "
                         "channel (RGB order), or one for all")
    return v


def l2_normalize(x: np.ndarray, axis: int) -> np.ndarray:
    """keras.utils.normalize(x, axis, order=2) for a numpy array, computed as Keras computes it:
    the order-2 norm along `axis`, a zero norm replaced by 1 (an all-black column stays 0)."""
    import numpy as np

    norm = np.atleast_1d(np.linalg.norm(x, 2, axis))
    norm[norm == 0] = 1
    return x / np.expand_dims(norm, axis)


def layouts_for(contract: ModelContract) -> tuple[str, ...]:
    """The layouts a model under `contract` may take its pixels in: every one for one channel,
    no NHW for three."""
    return tuple(name for name in LAYOUTS if name != "NHW" or contract.channels == 1)


@dataclass(frozen=True)
class InputConvention:
    """How a model wants its input, relative to the raw pixels of `contract` (not recorded:
    the contract has its own record); `InputConvention()` is the contract itself."""

    layout: str = "NHW"
    scale: str = "raw"
    #: standardized only (0..1 scale): one value (digits: a float, MNIST's when not given) or,
    #: for a general contract, one per channel in RGB order (ImageNet's when not given)
    mean: float | tuple[float, ...] | None = None
    std: float | tuple[float, ...] | None = None
    l2_axis: int | None = None  # l2 only; Keras's default -1 when not given
    ink: str = WHITE_ON_BLACK
    outputs: str = PROBABILITIES
    contract: ModelContract = field(default=DIGIT_CONTRACT, repr=False)
    channel_order: str = RGB

    def __post_init__(self):
        set_ = partial(object.__setattr__, self)  # a frozen dataclass normalises its fields
        set_("layout", _canonical_layout(self.layout))
        _choice("scale", self.scale, SCALES)
        _choice("ink", self.ink, INKS)
        _choice("outputs", self.outputs, OUTPUTS)
        _choice("channel_order", self.channel_order, CHANNEL_ORDERS)
        digit, channels = self.contract.is_digit, self.contract.channels
        if self.layout not in layouts_for(self.contract):
            raise UsageError(f"{FLAG_NAMES['layout']} NHW has no channel axis; the model's "
                             f"pixels have {channels} channels")
        if not digit:
            if self.scale in DIGIT_ONLY_SCALES:
                raise UsageError(f"{FLAG_NAMES['scale']} {self.scale} is for digit models; "
                                 f"choose from {', '.join(_general_scales())}")
            if self.ink != WHITE_ON_BLACK:
                raise UsageError(f"{FLAG_NAMES['ink']} is for digit models (their ink "
                                 "polarity); a general image model has none")
        if self.channel_order == BGR and channels != 3:
            raise UsageError(f"{FLAG_NAMES['channel_order']} {BGR} needs 3 channels; the "
                             f"model's pixels have {channels}")
        if self.scale == "caffe" and channels != 3:
            raise UsageError(f"{FLAG_NAMES['scale']} caffe (Keras' caffe mode) is for RGB "
                             f"models; the model's pixels have {channels} channel")
        if self.scale == "standardized":
            self._standardize(set_, digit, channels)
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

    def _standardize(self, set_, digit: bool, channels: int) -> None:
        if (self.mean is None) != (self.std is None):
            default = (f"MNIST's {_fmt(MNIST_MEAN)}/{_fmt(MNIST_STD)}" if digit
                       else "ImageNet's, Keras' torch mode")
            raise UsageError(f"give both --input-mean and --input-std (or neither, for "
                             f"{default})")
        if digit:
            mean = MNIST_MEAN if self.mean is None else _values("--input-mean", self.mean)
            std = MNIST_STD if self.std is None else _values("--input-std", self.std)
            if isinstance(mean, tuple) or isinstance(std, tuple):
                raise UsageError("--input-mean/--input-std: a digit model has one channel; give "
                                 "one value each")
        else:
            mean, std = (IMAGENET_MEAN, IMAGENET_STD) if self.mean is None else (
                _values("--input-mean", self.mean), _values("--input-std", self.std))
            if channels == 1 and self.mean is None:
                mean, std = (sum(mean) / 3,), (sum(std) / 3,)
            mean = _per_channel("--input-mean", mean, channels)
            std = _per_channel("--input-std", std, channels)
        ms, ss = (mean if isinstance(mean, tuple) else (mean,)), (
            std if isinstance(std, tuple) else (std,))
        if not (all(math.isfinite(m) for m in ms) and all(math.isfinite(s) and s > 0
                                                           for s in ss)):
            raise UsageError(f"--input-mean {_fmt(mean)} / --input-std {_fmt(std)}: the mean "
                             "must be finite and the std finite and > 0")
        set_("mean", mean)
        set_("std", std)

    # ------------------------------------------------------------------ what it is

    @property
    def input_shape(self) -> tuple:
        """The model's input shape after the batch dimension."""
        return self.contract.layout_shape(self.layout)

    @property
    def is_contract(self) -> bool:
        """The contract's raw pixels in its own layout, probabilities out: nothing to adapt."""
        return self == InputConvention(layout=self.contract.layout, contract=self.contract)

    @property
    def preset(self) -> str | None:
        """The Keras preprocess_input mode this convention is ("tf", "torch", "caffe"), if any
        (a general contract's; torch with ImageNet's own mean and std)."""
        if self.contract.is_digit:
            return None
        if self.scale == "tf" and self.channel_order == RGB:
            return "tf"
        if self.scale == "caffe" and self.channel_order == BGR:
            return "caffe"
        if (self.scale == "standardized" and self.channel_order == RGB
                and self.contract.channels == 3
                and (self.mean, self.std) == (IMAGENET_MEAN, IMAGENET_STD)):
            return "torch"
        return None

    def with_outputs(self, outputs: str) -> InputConvention:
        return replace(self, outputs=outputs)

    def describe(self, full: bool = False) -> str:
        """For people: the pixel values as people write them, "keras.utils.normalize(axis=1)",
        "/255", "(x/255-0.1307)/0.3081", "raw 0..255", with "255-x, " first for black-on-white;
        a general contract's Keras modes "tf [-1,1]", "torch (x/255-mean)/std ImageNet",
        "caffe BGR x-ImageNet mean", and "BGR, " first for another bgr convention.
        Detection compares values only (the model's shape fixes the layout); `full` adds the
        layout and the outputs: "(N,1,28,28) /255, logits (softmax added)"."""
        preset = self.preset
        if preset == "torch":
            values = "torch (x/255-mean)/std ImageNet"
        elif preset == "caffe":
            values = "caffe BGR x-ImageNet mean"
        elif (self.scale == "standardized" and self.contract.channels == 3
              and (self.mean, self.std) == (IMAGENET_MEAN, IMAGENET_STD)):
            values = "BGR, torch (x/255-mean)/std ImageNet"  # the only other ImageNet one
        else:
            values = {
                "raw": "raw 0..255",
                "unit": "/255",
                "standardized": f"(x/255-{_fmt(self.mean or 0)})/{_fmt(self.std or 1)}",
                "l2": f"keras.utils.normalize(axis={self.l2_axis})",
                "tf": "tf [-1,1]",
                "caffe": "x-ImageNet mean",
            }[self.scale]
            if self.channel_order == BGR:
                values = f"BGR, {values}"
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
        (N, H, W, C) 0..255 RGB for a general contract, -> the model's input (numpy), in this
        order: ink, values (per channel), channel order, layout."""
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
        elif self.scale == "tf":
            x = x / np.float32(127.5) - np.float32(1)
        elif self.scale == "caffe":
            x = x - np.float32(CAFFE_MEAN)
        if self.channel_order == BGR:
            x = x[..., ::-1]
        if self.contract.layout == "NHWC" and self.layout == "NCHW":
            x = x.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(x.reshape((len(x), *self.input_shape)), dtype=np.float32)

    # ------------------------------------------------------------------ records

    def to_dict(self) -> dict:
        """For export.json and ONNX metadata (json.dumps it): only the fields that apply. A
        digit contract's record is as it always was; a general contract's has no ink and
        states the channel order (and its Keras mode, when it is one)."""
        d = {"layout": self.layout, "input_shape": ["N", *self.input_shape],
             "scale": self.scale}
        if self.scale == "standardized":
            mean, std = self.mean, self.std
            d.update(mean=list(mean) if isinstance(mean, tuple) else mean,
                     std=list(std) if isinstance(std, tuple) else std)
        if self.scale == "l2":
            d["l2_axis"] = self.l2_axis
        if self.contract.is_digit:
            d["ink"] = self.ink
        else:
            d["channel_order"] = self.channel_order
            if self.preset:
                d["preset"] = self.preset
        d.update(outputs=self.outputs, description=self.describe(full=True))
        return d

    @classmethod
    def from_dict(cls, d: dict, contract: ModelContract = DIGIT_CONTRACT) -> InputConvention:
        """Read a to_dict record back, for a model under `contract` (unknown or derived keys
        are ignored)."""
        names = {f.name for f in fields(cls)} - {"contract"}
        try:
            kept = {k: v for k, v in dict(d).items() if k in names}
            for k in ("mean", "std"):
                if isinstance(kept.get(k), list):
                    kept[k] = tuple(kept[k])
            return cls(**kept, contract=contract)
        except (UsageError, TypeError, ValueError) as err:
            raise ModelError(f"invalid input convention record {d!r} ({err})") from err


def _general_scales() -> tuple[str, ...]:
    return tuple(s for s in SCALES if s not in DIGIT_ONLY_SCALES)


def _pixels_text(contract: ModelContract) -> str:
    """"(N, 28, 28)": the contract's pixels as messages name them."""
    return "(" + ", ".join(str(d) for d in ("N", *contract.input_shape)) + ")"


def fits_layout(input_shape, layout: str, contract: ModelContract = DIGIT_CONTRACT) -> bool:
    """Whether a model input shape (batch first; None, -1 or a name for an unknown dimension)
    can be the contract's pixels in `layout`."""
    if layout not in layouts_for(contract):
        return False
    dims, want = tuple(input_shape)[1:], contract.layout_shape(layout)
    return len(dims) == len(want) and all(not isinstance(d, int) or d <= 0 or d == w
                                          for d, w in zip(dims, want, strict=True))


def layout_of(input_shape, contract: ModelContract = DIGIT_CONTRACT) -> str:
    """The layout of a model input shape, or ModelError when it is no layout of the contract's
    image (28x28 for digits) or fits several (a 4-D input with unknown dimensions)."""
    layouts = layouts_for(contract)
    found = [name for name in layouts if fits_layout(input_shape, name, contract)]
    shown = "(" + ", ".join("N" if i == 0 else str(d) for i, d in
                            enumerate(tuple(input_shape))) + ")"
    if not found:
        shapes = [contract.shape_text(shape=contract.layout_shape(name)) for name in layouts]
        what = (contract.image_text if contract.is_digit else
                f"{contract.height}x{contract.width}x{contract.channels} image")
        raise ModelError(f"model input {shown} is not a {what}; expected "
                         f"{', '.join(shapes[:-1])} or {shapes[-1]}")
    if len(found) > 1:
        raise ModelError(f"model input {shown} fits layouts {', '.join(found)}; declare it with "
                         "--input-layout")
    return found[0]


#: Value conventions detection tries for a digit contract, in the order ties are listed:
#: (scale, extra fields).
VALUE_CANDIDATES = (
    ("raw", {}),
    ("unit", {}),
    ("standardized", {"mean": MNIST_MEAN, "std": MNIST_STD}),
    ("standardized", {"mean": SYMMETRIC_MEAN, "std": SYMMETRIC_STD}),
    ("l2", {"l2_axis": 1}),
    ("l2", {"l2_axis": -1}),
)
#: Value conventions detection tries for a general contract, in the order ties are listed: the
#: plain scales, Keras' three preprocess_input modes (torch: ImageNet's mean/std; caffe: BGR
#: with the ImageNet mean), then, for RGB models, the plain scales and tf/torch in BGR order
#: (models trained on OpenCV's BGR arrays). Ink is a digit matter and is not tried.
GENERAL_CANDIDATES = (
    ("raw", {}),
    ("unit", {}),
    ("tf", {}),
    ("standardized", {}),  # torch: ImageNet's mean/std (their averages for a gray model)
    ("caffe", {"channel_order": BGR}),
    ("raw", {"channel_order": BGR}),
    ("unit", {"channel_order": BGR}),
    ("tf", {"channel_order": BGR}),
    ("standardized", {"channel_order": BGR}),
)


def candidates(input_shape, outputs: str = PROBABILITIES, layout: str | None = None,
               contract: ModelContract = DIGIT_CONTRACT) -> list[InputConvention]:
    """Every convention compatible with a model input shape, the layout fixed by the shape (or
    given): for digits each value scale of VALUE_CANDIDATES in each ink polarity; for a
    general contract each of GENERAL_CANDIDATES its channels allow."""
    layout = layout or layout_of(input_shape, contract)
    if contract.is_digit:
        return [InputConvention(layout=layout, scale=scale, ink=ink, outputs=outputs,
                                contract=contract, **extra)
                for ink in INKS for scale, extra in VALUE_CANDIDATES]
    return [InputConvention(layout=layout, scale=scale, outputs=outputs, contract=contract,
                            **extra)
            for scale, extra in GENERAL_CANDIDATES
            if contract.channels == 3 or (extra.get("channel_order", RGB) == RGB
                                          and scale != "caffe")]


@dataclass(frozen=True)
class ConventionFlags:
    """What the user declared (the --input-* flags; None = not given).

    --input-scale or --preprocess declares the convention and skips detection: the layout
    then comes from the model's input shape unless given, the ink defaults to white-on-black
    (MNIST's), the channel order to rgb (bgr for --preprocess caffe), and the outputs are read
    off the model unless --outputs is given. --preprocess torch's mean and std may be replaced
    by --input-mean/--input-std. Without either, any flags given narrow the candidates
    detection scores. Mean and std are one number or one per channel (RGB order).
    """

    layout: str | None = None
    scale: str | None = None
    mean: float | tuple[float, ...] | None = None
    std: float | tuple[float, ...] | None = None
    l2_axis: int | None = None
    ink: str | None = None
    outputs: str | None = None
    channel_order: str | None = None
    preset: str | None = None

    def __post_init__(self):
        set_ = partial(object.__setattr__, self)
        if self.layout is not None:
            set_("layout", _canonical_layout(self.layout))
        for name, choices in (("scale", SCALES), ("ink", INKS), ("outputs", OUTPUTS),
                              ("channel_order", CHANNEL_ORDERS), ("preset", tuple(PRESETS))):
            if getattr(self, name) is not None:
                _choice(name, getattr(self, name), choices)
        for name in ("mean", "std"):
            if getattr(self, name) is not None:
                set_(name, _values(FLAG_NAMES[name], getattr(self, name)))
        if self.preset is not None and self.scale is not None:
            raise UsageError("--preprocess and --input-scale both declare the pixel values; "
                             "give one")
        standardized = self.scale == "standardized" or self.preset == "torch"
        if (self.mean is not None or self.std is not None) and not standardized:
            raise UsageError("--input-mean/--input-std need --input-scale standardized (or "
                             "--preprocess torch)")
        if self.l2_axis is not None and self.scale != "l2":
            raise UsageError("--l2-axis needs --input-scale l2")
        if self.declared:
            self._check_values()

    def _check_values(self) -> None:
        """Every value check that does not depend on the model, now (a mean without a std,
        a std <= 0, an L2 axis): the rest when the model's contract is known."""
        mean, std = self.mean, self.std
        if self.preset == "torch" and mean is None and std is None:
            return
        if (mean is None) != (std is None) and (self.scale == "standardized"
                                                or self.preset == "torch"):
            raise UsageError("give both --input-mean and --input-std (or neither, for "
                             f"MNIST's {_fmt(MNIST_MEAN)}/{_fmt(MNIST_STD)} or ImageNet's)")
        ms = () if mean is None else (mean if isinstance(mean, tuple) else (mean,))
        ss = () if std is None else (std if isinstance(std, tuple) else (std,))
        if not (all(math.isfinite(m) for m in ms) and all(math.isfinite(s) and s > 0
                                                           for s in ss)):
            raise UsageError(f"--input-mean {_fmt(mean)} / --input-std {_fmt(std)}: the mean "
                             "must be finite and the std finite and > 0")
        if self.scale == "l2":
            InputConvention(scale="l2", l2_axis=self.l2_axis)

    @classmethod
    def from_options(cls, options: dict) -> ConventionFlags:
        """From click options named after the flags (input_layout, input_scale, input_mean,
        input_std, l2_axis, ink, outputs, channel_order, preprocess); other keys are ignored."""
        keys = {"layout": "input_layout", "scale": "input_scale", "mean": "input_mean",
                "std": "input_std", "l2_axis": "l2_axis", "ink": "ink", "outputs": "outputs",
                "channel_order": "channel_order", "preset": "preprocess"}
        return cls(**{f: options.get(k) for f, k in keys.items()})

    @property
    def declared(self) -> bool:
        return self.scale is not None or self.preset is not None

    @property
    def given(self) -> list[str]:
        """The flags given, as the user typed them."""
        return [FLAG_NAMES[f.name] for f in fields(self) if getattr(self, f.name) is not None]

    def _declared(self, layout: str,
                  contract: ModelContract = DIGIT_CONTRACT) -> InputConvention:
        values = dict(PRESETS.get(self.preset, {"scale": self.scale}))
        if self.mean is not None:
            values.update(mean=self.mean, std=self.std)
        if self.channel_order is not None:
            values["channel_order"] = self.channel_order
        return InputConvention(layout=layout, l2_axis=self.l2_axis,
                               ink=self.ink or WHITE_ON_BLACK,
                               outputs=self.outputs or PROBABILITIES, contract=contract,
                               **values)

    def layout_for(self, input_shape, contract: ModelContract = DIGIT_CONTRACT) -> str:
        """The declared layout checked against the model's shape, or the shape's layout."""
        if self.layout is None:
            return layout_of(input_shape, contract)
        if not fits_layout(input_shape, self.layout, contract):
            want = ("N", *contract.layout_shape(self.layout))
            raise UsageError(f"--input-layout {self.layout} {want} does not fit the model's "
                             f"input shape {('N', *tuple(input_shape)[1:])}")
        return self.layout

    def check_for(self, contract: ModelContract) -> None:
        """UsageError for a flag that cannot apply to a model under `contract` (--ink and
        --input-scale l2 to a general model; --channel-order bgr, caffe to a gray one)."""
        if self.ink is not None and not contract.is_digit:
            raise UsageError(f"{FLAG_NAMES['ink']} is for digit models (their ink polarity); a "
                             "general image model has none")
        if self.scale in DIGIT_ONLY_SCALES and not contract.is_digit:
            raise UsageError(f"{FLAG_NAMES['scale']} {self.scale} is for digit models; choose "
                             f"from {', '.join(_general_scales())}")
        rgb_only = [flag for flag, given in (("--preprocess caffe", self.preset == "caffe"),
                                             ("--input-scale caffe", self.scale == "caffe"),
                                             (f"--channel-order {BGR}",
                                              self.channel_order == BGR)) if given]
        if contract.channels != 3 and rgb_only:
            raise UsageError(f"{rgb_only[0]} is for RGB models; the model's pixels have "
                             f"{contract.channels} channel ({contract.shape_text()})")
        if contract.is_digit and self.preset == "torch":
            raise UsageError("--preprocess torch (ImageNet's mean and std) is for RGB image "
                             "models; a digit model's standardization is --input-scale "
                             "standardized")

    def allows(self, convention: InputConvention) -> bool:
        """Whether a candidate agrees with every flag given (outputs are not compared)."""
        return all(getattr(self, k) is None or getattr(self, k) == getattr(convention, k)
                   for k in ("layout", "scale", "ink", "channel_order"))


NO_FLAGS = ConventionFlags()


def declared_convention(flags: ConventionFlags, input_shape,
                        contract: ModelContract = DIGIT_CONTRACT) -> InputConvention | None:
    """The convention the flags declare for a model of `input_shape` under `contract`, or
    None when they do not declare one (no --input-scale or --preprocess: detect it). Outputs
    default to probabilities here; callers that can run the model check them
    (digitkit.model.resolve.resolve_convention does)."""
    if not flags.declared:
        return None
    flags.check_for(contract)
    return flags._declared(flags.layout_for(input_shape, contract), contract)


# ------------------------------------------------------------------------- pixel policy

#: The flag that declares each PolicyFlags field.
POLICY_FLAG_NAMES = {"input_size": "--input-size", "resize": "--resize",
                     "crop_fraction": "--crop-fraction", "pad": "--pad",
                     "interpolation": "--interpolation"}


def parse_size(text) -> tuple[int, int]:
    """"HxW" (or "H,W", or one number for a square) -> (H, W); UsageError naming --input-size."""
    if isinstance(text, (tuple, list)):
        parts = list(text)
    else:
        parts = str(text).lower().replace(",", "x").split("x")
    try:
        size = tuple(int(str(p).strip()) for p in parts)
    except ValueError:
        size = ()
    if len(size) == 1:
        size = size * 2
    if len(size) != 2 or not all(v >= 1 for v in size):
        raise UsageError(f"--input-size {text!r}: give HxW, e.g. 224x224")
    return size


def parse_colour(text) -> tuple[int, int, int] | int:
    """"R,G,B" or one gray level -> what PixelPolicy takes; UsageError naming --pad."""
    if isinstance(text, (tuple, list, int)):
        return tuple(text) if not isinstance(text, int) else text
    try:
        vals = tuple(int(v.strip()) for v in str(text).split(","))
    except ValueError:
        vals = ()
    if len(vals) not in (1, 3) or not all(0 <= v <= 255 for v in vals):
        raise UsageError(f"--pad {text!r}: give R,G,B (each 0..255) or one gray level")
    return vals[0] if len(vals) == 1 else vals


@dataclass(frozen=True)
class PolicyFlags:
    """What --input-size, --resize, --crop-fraction, --pad and --interpolation declare (None =
    not given): how a file becomes a general model's pixels. The one rule (`policy`):

    - the size is the model's own static height and width; --input-size gives it where the
      model's is dynamic, and must agree with a static one;
    - the channels are the model's (1 gray, 3 RGB);
    - resize, crop fraction, pad and interpolation are the flags', else PixelPolicy's
      defaults (squash, 1.0, black, bilinear: Keras' image_dataset_from_directory's way);
    - a model that records its policy (embedded record, ONNX metadata) keeps it, with each
      flag given replacing its field (`over`).
    """

    input_size: tuple[int, int] | None = None
    resize: str | None = None
    crop_fraction: float | None = None
    pad: tuple[int, int, int] | int | None = None
    interpolation: str | None = None

    def __post_init__(self):
        if self.input_size is not None:
            object.__setattr__(self, "input_size", parse_size(self.input_size))
        if self.pad is not None:
            object.__setattr__(self, "pad", parse_colour(self.pad))
        if self.given:  # every value check of PixelPolicy, now, with the flags' names
            self._policy((1, 1) if self.input_size is None else self.input_size, 3)

    @classmethod
    def from_options(cls, options: dict) -> PolicyFlags:
        """From click options named after the flags (input_size, resize, crop_fraction, pad,
        interpolation); other keys are ignored."""
        return cls(**{k: options.get(k) for k in POLICY_FLAG_NAMES})

    @property
    def given(self) -> list[str]:
        return [POLICY_FLAG_NAMES[f.name] for f in fields(self)
                if getattr(self, f.name) is not None]

    def _policy(self, size, channels: int, base=None):
        from dataclasses import replace as _replace

        from digitkit.images.pixels import PixelPolicy

        changes = {k: getattr(self, k) for k in ("resize", "crop_fraction", "pad",
                                                   "interpolation")
                   if getattr(self, k) is not None}
        if self.crop_fraction is not None and self.resize is None and (
                base is None or base.resize != "center-crop"):
            changes["resize"] = "center-crop"  # a crop fraction only means center-crop
        if self.pad is not None and self.resize is None and (
                base is None or base.resize != "letterbox"):
            changes["resize"] = "letterbox"  # a pad colour only means letterbox
        try:
            if base is not None:
                return _replace(base, **changes)
            return PixelPolicy(tuple(size), channels, **changes)
        except UsageError as err:
            raise UsageError(f"{' '.join(self.given)}: {err.message}") from err

    def policy(self, height, width, channels: int, where: str = "model"):
        """The PixelPolicy of a model whose input is (height, width) (None where dynamic) with
        `channels`; UsageError naming --input-size when a side is unknown or disagrees."""
        size = (height, width)
        static = all(isinstance(v, int) and v > 0 for v in size)
        if self.input_size is not None:
            if static and tuple(size) != self.input_size:
                raise UsageError(f"--input-size {self.input_size[0]}x{self.input_size[1]}: "
                                 f"{where} takes {height}x{width} images (a static size)")
            size = self.input_size
        elif not static:
            shown = "x".join("?" if not isinstance(v, int) or v <= 0 else str(v) for v in size)
            raise UsageError(f"{where}: its input height and width are dynamic ({shown}); give "
                             "--input-size HxW")
        return self._policy(size, channels)

    def over(self, policy, where: str = "model"):
        """A recorded policy with the flags given replacing their fields (--input-size must
        agree with its size: the model was made for it)."""
        if self.input_size is not None and tuple(policy.size) != self.input_size:
            raise UsageError(f"--input-size {self.input_size[0]}x{self.input_size[1]}: {where} "
                             f"records its input size {policy.size[0]}x{policy.size[1]}")
        return self._policy(policy.size, policy.channels, base=policy) if self.given else policy


NO_POLICY = PolicyFlags()
