"""The --input-* flags every command that runs a model takes: one decorator, defined once.

They declare how a model made elsewhere expects its input (digitkit.model.conventions); given
--input-scale, detection is skipped. Choices and names come from the model layer, so the help
cannot drift from what the flags accept.
"""

from __future__ import annotations

import click

from digitkit.model.conventions import (
    DEFAULT_L2_AXIS,
    FLAG_NAMES,
    INKS,
    L2_AXES,
    LAYOUTS,
    MNIST_MEAN,
    MNIST_STD,
    OUTPUTS,
    SCALES,
    WHITE_ON_BLACK,
    ConventionFlags,
)

#: The click parameter names of the flags (ConventionFlags.from_options reads these keys).
OPTION_KEYS = ("input_layout", "input_scale", "input_mean", "input_std", "l2_axis", "ink",
               "outputs")

_FLAGS = (
    click.option(FLAG_NAMES["layout"], "input_layout",
                 default=None, metavar=f"[{'|'.join(LAYOUTS)}]",  # any case: checked there
                 help="A model made elsewhere: its input layout, NHW (N,28,28), NHWC "
                 "(N,28,28,1), NCHW (N,1,28,28) or flat (N,784). [default: from its input "
                 "shape]"),
    click.option(FLAG_NAMES["scale"], "input_scale", type=click.Choice(list(SCALES)),
                 default=None, help="Declare the pixel values it was trained on, skipping "
                 "detection: raw 0..255, unit x/255, standardized (x/255-mean)/std, l2 "
                 "keras.utils.normalize. [default: detected on MNIST test images]"),
    click.option(FLAG_NAMES["mean"], "input_mean", type=float, default=None,
                 help=f"With --input-scale standardized. [default: MNIST's {MNIST_MEAN}]"),
    click.option(FLAG_NAMES["std"], "input_std", type=float, default=None,
                 help=f"With --input-scale standardized. [default: MNIST's {MNIST_STD}]"),
    click.option(FLAG_NAMES["l2_axis"], "l2_axis", type=int, default=None,
                 help="With --input-scale l2: the axis of the (N,28,28) pixels, "
                 f"{' or '.join(map(str, L2_AXES))} (the classic notebook's is 1). [default: "
                 f"{DEFAULT_L2_AXIS}, keras.utils.normalize's]"),
    click.option(FLAG_NAMES["ink"], "ink", type=click.Choice(list(INKS)), default=None,
                 help=f"Ink polarity it was trained on. [default: {WHITE_ON_BLACK}, MNIST's]"),
    click.option(FLAG_NAMES["outputs"], "outputs", type=click.Choice(list(OUTPUTS)),
                 default=None, help="What it outputs; logits get a softmax. [default: read off "
                 "its outputs]"),
)


def convention_options(command):
    """Add the --input-* flags to a click command (in this order in --help)."""
    for option in reversed(_FLAGS):
        command = option(command)
    return command


def take_convention_flags(options: dict) -> ConventionFlags:
    """Remove the flags from a command's **options and return them, checked (UsageError)."""
    return ConventionFlags.from_options({k: options.pop(k, None) for k in OPTION_KEYS})
