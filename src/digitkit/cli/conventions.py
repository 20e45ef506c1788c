"""The flags every command that runs a model takes: one decorator each, defined once.

`convention_options`: the --input-* flags (with --channel-order and --preprocess) declare how
a model made elsewhere expects its input (digitkit.model.conventions.ConventionFlags); given
--input-scale or --preprocess, detection is skipped. `policy_options`: --input-size,
--resize, --crop-fraction, --pad and --interpolation declare how files become a general
model's pixels (digitkit.model.conventions.PolicyFlags: the rule lives there). Choices and
names come from the model layer, so the help cannot drift from what the flags accept.
"""

from __future__ import annotations

import click

from digitkit.model.conventions import (
    CHANNEL_ORDERS,
    DEFAULT_L2_AXIS,
    FLAG_NAMES,
    INKS,
    L2_AXES,
    LAYOUTS,
    MNIST_MEAN,
    MNIST_STD,
    OUTPUTS,
    POLICY_FLAG_NAMES,
    PRESETS,
    RGB,
    SCALES,
    WHITE_ON_BLACK,
    ConventionFlags,
    PolicyFlags,
)
from digitkit.model.policy import INTERPOLATION_NAMES, RESIZE_MODES

#: The click parameter names of the flags (ConventionFlags.from_options reads these keys).
OPTION_KEYS = ("input_layout", "input_scale", "input_mean", "input_std", "l2_axis", "ink",
               "outputs", "channel_order", "preprocess")
#: The click parameter names of the pixel policy flags (PolicyFlags.from_options).
POLICY_KEYS = tuple(POLICY_FLAG_NAMES)


class _Numbers(click.ParamType):
    """One number, or one per channel: "0.5" or "0.485,0.456,0.406"."""

    name = "N[,N,N]"

    def convert(self, value, param, ctx):
        if isinstance(value, (float, int, tuple)):
            return value
        try:
            vals = tuple(float(v) for v in str(value).split(","))
        except ValueError:
            self.fail(f"{value!r}: give one number, or one per channel (e.g. "
                      "0.485,0.456,0.406)", param, ctx)
        return vals[0] if len(vals) == 1 else vals


_FLAGS = (
    click.option(FLAG_NAMES["layout"], "input_layout",
                 default=None, metavar=f"[{'|'.join(LAYOUTS)}]",  # any case: checked there
                 help="A model made elsewhere: its input layout, NHW (N,28,28), NHWC "
                 "(N,28,28,1), NCHW (N,1,28,28) or flat (N,784) for digits, NHWC/NCHW/flat of "
                 "(H,W,C) for other images. [default: from its input shape]"),
    click.option(FLAG_NAMES["scale"], "input_scale", type=click.Choice(list(SCALES)),
                 default=None, help="Declare the pixel values it was trained on, skipping "
                 "detection: raw 0..255, unit x/255, standardized (x/255-mean)/std, l2 "
                 "keras.utils.normalize (digits), tf x/127.5-1, caffe x-ImageNet mean. "
                 "[default: detected on MNIST test images, or on --calibration]"),
    click.option(FLAG_NAMES["preset"], "preprocess", type=click.Choice(list(PRESETS)),
                 default=None, help="Declare one of Keras' preprocess_input modes, skipping "
                 "detection: tf [-1,1], torch (x/255-ImageNet mean)/std, caffe BGR minus the "
                 "ImageNet mean."),
    click.option(FLAG_NAMES["mean"], "input_mean", type=_Numbers(), default=None,
                 help="With --input-scale standardized or --preprocess torch: one value, or "
                 f"one per channel in RGB order. [default: MNIST's {MNIST_MEAN} for digits, "
                 "ImageNet's for others]"),
    click.option(FLAG_NAMES["std"], "input_std", type=_Numbers(), default=None,
                 help=f"Likewise. [default: MNIST's {MNIST_STD} for digits, ImageNet's for "
                 "others]"),
    click.option(FLAG_NAMES["l2_axis"], "l2_axis", type=int, default=None,
                 help="With --input-scale l2: the axis of the (N,28,28) pixels, "
                 f"{' or '.join(map(str, L2_AXES))} (the classic notebook's is 1). [default: "
                 f"{DEFAULT_L2_AXIS}, keras.utils.normalize's]"),
    click.option(FLAG_NAMES["ink"], "ink", type=click.Choice(list(INKS)), default=None,
                 help=f"Digit models: ink polarity it was trained on. [default: {WHITE_ON_BLACK}, "
                 "MNIST's]"),
    click.option(FLAG_NAMES["channel_order"], "channel_order",
                 type=click.Choice(list(CHANNEL_ORDERS)), default=None,
                 help=f"RGB models: the channel order it was trained on. [default: {RGB}; bgr "
                 "with --preprocess caffe]"),
    click.option(FLAG_NAMES["outputs"], "outputs", type=click.Choice(list(OUTPUTS)),
                 default=None, help="What it outputs; logits get a softmax. [default: read off "
                 "its outputs]"),
)

_POLICY_FLAGS = (
    click.option(POLICY_FLAG_NAMES["input_size"], "input_size", default=None, metavar="HxW",
                 help="A general image model whose input height and width are dynamic: the "
                 "size to feed it. [default: the model's own]"),
    click.option(POLICY_FLAG_NAMES["resize"], "resize",
                 type=click.Choice(list(RESIZE_MODES)), default=None,
                 help="How a picture becomes the model's size. [default: squash, or what the "
                 "model records]"),
    click.option(POLICY_FLAG_NAMES["crop_fraction"], "crop_fraction", type=float, default=None,
                 help="With center-crop: the part of the centred box kept, 0 < F <= 1 (timm's "
                 "0.875). [default: 1]"),
    click.option(POLICY_FLAG_NAMES["pad"], "pad", default=None, metavar="R,G,B",
                 help="With letterbox: the fill colour. [default: 0,0,0]"),
    click.option(POLICY_FLAG_NAMES["interpolation"], "interpolation",
                 type=click.Choice(list(INTERPOLATION_NAMES)), default=None,
                 help="Resampling filter. [default: bilinear]"),
)


def convention_options(command):
    """Add the --input-* flags to a click command (in this order in --help)."""
    for option in reversed(_FLAGS):
        command = option(command)
    return command


def take_convention_flags(options: dict) -> ConventionFlags:
    """Remove the flags from a command's **options and return them, checked (UsageError)."""
    return ConventionFlags.from_options({k: options.pop(k, None) for k in OPTION_KEYS})


def policy_options(command):
    """Add the pixel policy flags (--input-size, --resize, --crop-fraction, --pad,
    --interpolation) to a click command."""
    for option in reversed(_POLICY_FLAGS):
        command = option(command)
    return command


def take_policy_flags(options: dict) -> PolicyFlags:
    """Remove the pixel policy flags from a command's **options and return them, checked."""
    return PolicyFlags.from_options({k: options.pop(k, None) for k in POLICY_KEYS})
