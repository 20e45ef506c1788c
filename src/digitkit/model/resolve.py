"""The one entry that settles a source model's input convention, for every command:
declared by flags, presented by name (digitkit's contract), stated by the model itself, or
detected on labelled images with a detected affine preset's constants put to a fit.

Its own module because it sits above both detection (digitkit.model.detect) and the fit
(digitkit.model.fitting, which builds on detection): here each is imported once, at the top,
and neither imports the other back. Numpy only (the base install runs it).
"""

from __future__ import annotations

import numpy as np

from digitkit.model.conventions import (
    LOGITS,
    NO_FLAGS,
    ConventionFlags,
    InputConvention,
    declare_hint,
    declared_convention,
)
from digitkit.model.detect import (
    CONTRACT,
    DECLARED,
    DEFAULT_DETECTION_IMAGES,
    STATED,
    ConventionError,
    Detection,
    data_name,
    detection_sample,
    is_simplex,
    outputs_read,
    refusal,
    score,
    softmax,
)
from digitkit.model.fitting import detect_and_fit
from digitkit.model.foreign import RAW_FROM_RECORD, SourceModel

#: Stand-in pictures when a convention is taken from flags or the model itself and no
#: labelled images are at hand: what the model outputs (probabilities or logits) is read off
#: them; nothing is scored.
STAND_IN_IMAGES = 16


def resolve_convention(source: SourceModel, images: np.ndarray | None,
                       labels: np.ndarray | None, flags: ConventionFlags = NO_FLAGS,
                       n: int = DEFAULT_DETECTION_IMAGES, data: str | None = None) -> Detection:
    """The one entry for every command. In order: the declared convention (--input-scale or
    --preprocess given: no candidates scored, the outputs read off the model unless --outputs
    is given); the contract, for a model that presents it by name and no flags are given
    (digitkit's own models and exports: nothing to adapt); the convention its embedded record
    states; else `detect_convention` on the labelled images (MNIST test images for digits; a
    calibration folder's for a general contract, `data` naming it); without labels, a general
    model's own layers (SourceModel.stated), else a refusal naming --calibration and the flags.
    The chosen convention's own accuracy is measured when labels are given. `images` may be
    None when there are no labels (stand-ins are run to read the outputs)."""
    contract = source.contract
    data = data or data_name(source)
    flags.check_for(contract)
    if (not contract.is_digit and images is not None
            and tuple(np.shape(images)[1:]) != contract.pixels_shape):
        # MNIST test images handed over for a general model (a caller that knows only
        # digits) are not pictures of its classes: no evidence, as if none were given
        images, labels = None, None
    chosen = declared_convention(flags, source.input_shape, contract)
    stated_by = None
    if chosen is None and not flags.given and source.honours_contract:
        chosen, how = InputConvention(layout=contract.layout, contract=contract), CONTRACT
    elif chosen is None and not flags.given and source.stated is not None and (
            labels is None or source.stated_by == RAW_FROM_RECORD):
        chosen, how, stated_by = source.stated, STATED, source.stated_by
    elif chosen is None:
        if labels is None:
            if contract.is_digit:
                raise refusal(source, "detecting its input convention needs labelled MNIST "
                              "test images")
            raise refusal(source, "its input convention cannot be told: it records none and "
                          "does not prepare its own pixels (no Rescaling/Normalization layer "
                          "first)")
        return detect_and_fit(source, images, labels, flags, n, data=data)
    else:
        how = DECLARED
    if images is None or len(images) == 0:
        rng = np.random.default_rng(0)
        x, y = rng.integers(0, 256, (STAND_IN_IMAGES, *contract.pixels_shape)).astype(
            np.float32), None
    elif labels is None:
        x, y = images[:n], None
    else:
        x, y = detection_sample(images, labels, n)
    out = source(chosen.apply(x))
    if how == DECLARED or (how == STATED and stated_by != RAW_FROM_RECORD):
        chosen = chosen.with_outputs(outputs_read(source, flags, out))
    elif how == CONTRACT and not is_simplex(out):
        raise ConventionError(f"{source.name}: named like digitkit's contract "
                              f"('{contract.input_name}' -> '{contract.output_name}') but its "
                              f"outputs are not probabilities; {declare_hint(contract)}")
    probs = softmax(out) if chosen.outputs == LOGITS else out
    scores = (score(probs, y, chosen),) if y is not None else ()
    return Detection(chosen, scores, how, len(x) if y is not None else 0, data=data,
                     stated_by=stated_by)
