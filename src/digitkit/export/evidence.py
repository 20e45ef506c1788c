"""What an export holds its copies to beyond the fixed edge inputs: real images for the parity
cases, an accuracy set for the accuracy lines, and the int8 calibration images.

- A digit model: MNIST, as always (`digitkit.data.MnistData`: test images for parity and
  accuracy, the first training images for int8 calibration).
- A general image classifier: the `--calibration` folder (one subfolder per class, matched by
  name to the contract's class names), decoded by the contract's own pixel policy, exactly as
  `infer` decodes files. Its pixels are the real parity images, the accuracy set and the int8
  calibration set. Without a folder there is no accuracy set (no accuracy lines) and no int8
  copy (calibrating on noise would be a guess); parity runs on seeded random pixels, which
  cover the whole 0..255 range of every channel. MNIST is never used for a general model.

`CalibrationSet` has the attribute names of MnistData that the validate steps read (x_train,
x_test, y_test, source), so both flow through the same steps.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

from digitkit.errors import UsageError
from digitkit.export.config import DEFAULT_CALIBRATION_IMAGES


@dataclass
class CalibrationSet:
    """A general model's evidence: `x_test`/`y_test` the labelled pixels (None without a
    folder), also its int8 calibration images (`x_train`); `record` is export.json's
    "calibration"."""

    x_test: object = None  # float32 (n, *pixels_shape) 0..255, or None
    y_test: object = None  # int64 (n,) indices into the contract's class names
    source: str = "seeded random pixels (no --calibration folder)"
    record: dict = field(default_factory=lambda: {"folder": None})

    @property
    def x_train(self):
        return self.x_test

    @property
    def has_images(self) -> bool:
        return self.x_test is not None and len(self.x_test) > 0

    @property
    def data_name(self) -> str | None:
        """"calibration images in DIR": what detection scores, for people (None: none)."""
        folder = self.record.get("folder")
        return f"calibration images in {folder}" if folder else None

    def describe(self) -> str:
        """"200 calibration images": what the accuracy lines say they counted."""
        return f"{len(self.x_test):,} calibration images" if self.has_images else ""


def per_class_cap(num_classes: int) -> int:
    """Images read per class: about DEFAULT_CALIBRATION_IMAGES in all, at least one each."""
    return max(1, math.ceil(DEFAULT_CALIBRATION_IMAGES / num_classes))


def load_calibration(root: str | os.PathLike | None, contract, say) -> CalibrationSet:
    """The --calibration folder as a general contract's evidence (an empty set without one).
    DataError (one line) when the folder is unusable: no class folders, a folder for a class
    the model does not have, no decodable image."""
    if root is None:
        say("no --calibration folder: copies are validated on seeded random pixels and edge "
            "inputs; no accuracy lines, no int8 copy")
        return CalibrationSet()
    from digitkit.model.detect import load_calibration as load_labelled_folder

    found = load_labelled_folder(contract, root, per_class_cap(contract.num_classes))
    counts = found.counts()
    skipped = len(found.failures)
    say(f"calibration: {len(found):,} images of {sum(1 for n in counts.values() if n)} "
        f"classes from {root}" + (f"; {skipped} files skipped (first: {found.failures[0][0]}: "
                                  f"{found.failures[0][1]})" if skipped else ""))
    # Absolute: `infer --runtime auto` reads it back from wherever it runs.
    record = {"folder": os.path.abspath(root), "images": len(found), "per_class": counts,
              "skipped_files": skipped,
              "pixel_policy": contract.pixel_policy.to_dict()}
    return CalibrationSet(found.pixels, found.labels, f"calibration folder {root}", record)


def export_evidence(contract, config, say):
    """The evidence of an export under `contract` that is not adapted on MNIST: MnistData for
    digits, a CalibrationSet for a general contract."""
    if contract.is_digit:
        if config.calibration is not None:
            raise UsageError("--calibration is for general image classifiers; a digit model is "
                             "validated on MNIST (see --data)")
        from digitkit.data import load_mnist

        return load_mnist(config.data)
    if config.quantize and config.calibration is None:
        raise UsageError(f"--quantize {config.quantize} calibrates on real pixels: give "
                         "--calibration DIR (a folder of class folders)")
    return load_calibration(config.calibration, contract, say)


def is_general(evidence) -> bool:
    return isinstance(evidence, CalibrationSet)


__all__ = ["CalibrationSet", "export_evidence", "is_general", "load_calibration",
           "per_class_cap"]
