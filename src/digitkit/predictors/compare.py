"""Agreement of one predictor's outputs with a reference: the one rule export validation and
the bench cross-check both apply."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Agreement:
    n: int
    top1_agree: int  # rows whose arg-max equals the reference's
    max_abs_diff: float  # largest |difference| of any output value
    finite: bool  # every output value is a finite number

    @property
    def top1_fraction(self) -> float:
        return self.top1_agree / self.n if self.n else 1.0


def agreement(outputs: np.ndarray, reference: np.ndarray) -> Agreement:
    """Compare two (N, classes) arrays; shapes must match (check them first)."""
    out = np.asarray(outputs, dtype=np.float64)
    ref = np.asarray(reference, dtype=np.float64)
    if out.shape != ref.shape:
        raise ValueError(f"shape {out.shape} vs reference {ref.shape}")
    if not len(out):
        return Agreement(0, 0, 0.0, True)
    return Agreement(len(out), int(np.sum(out.argmax(axis=1) == ref.argmax(axis=1))),
                     float(np.max(np.abs(out - ref))), bool(np.all(np.isfinite(out))))
