"""How many images one call of a model over a whole set of them may take: the one rule for
every place that runs a model over a set (a source's reference outputs and accuracy, export's
parity cases and accuracy lines, detection). Pure Python: no runtime, no numpy."""

from __future__ import annotations

import math

#: Input values one call of a model over a whole set of images may take: 1,000 digits at once,
#: or 32 images of 224x224x3. A runtime holds a whole call's activations: a 224x224x3
#: MobileNetV2 given its 300 calibration photos in one call went past 23 GB and was killed.
MAX_CALL_VALUES = 32 * 224 * 224 * 3


def call_batch(x, most: int = 1000) -> int:
    """Images per call when `x` (N, ...) is run through a model in pieces: at most `most`, and
    at most MAX_CALL_VALUES input values."""
    return max(1, min(most, MAX_CALL_VALUES // max(1, math.prod(x.shape[1:]))))


def in_calls(x, most: int = 1000):
    """The pieces of `x` to run one call each (see `call_batch`)."""
    step = call_batch(x, most)
    return (x[i:i + step] for i in range(0, len(x), step))


__all__ = ["MAX_CALL_VALUES", "call_batch", "in_calls"]
