"""What the build and validate steps of one export have at hand.

`export_model` makes one over its staging directory; `validate_export_dir` makes one over an
existing export directory, so both run the very same validate steps of the format table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from digitkit.export.config import ExportConfig, calibration_cap
from digitkit.export.formats import EXPORT_FORMATS
from digitkit.model.loading import import_tensorflow


@dataclass
class ExportContext:
    config: ExportConfig
    source: Path  # the model file every copy is made from and compared with
    #: That model (digitkit.export.origin.ExportSource): what the builders convert, the
    #: reference outputs, its contract and its own accuracy.
    origin: object
    workdir: Path  # where copies are built (staging) or found (an existing export directory)
    cases: list  # digitkit.export.validate.Case, references filled in
    #: The evidence (digitkit.export.evidence): digitkit.data.MnistData for a digit model
    #: (test images: accuracy; training images: int8 calibration), a CalibrationSet for a
    #: general one (its --calibration folder's pixels, both roles; none without a folder).
    data: object
    source_sha256: str = ""  # written into the ONNX metadata
    _serve: object = field(default=None, repr=False)

    @property
    def model(self):
        """What the TensorFlow builders convert (called like a Keras model)."""
        return self.origin.model

    @property
    def contract(self):
        """The contract every copy honours (digitkit.model.contract.ModelContract)."""
        return self.origin.contract

    def path(self, name: str) -> Path:
        """Where the copy of format `name` is in workdir."""
        return self.workdir / EXPORT_FORMATS[name].file

    def calibration_images(self):
        """The int8 calibration images: MNIST's first training images for a digit model; a
        general model's calibration folder (in class order) taken evenly, so every class
        is in it; at most `calibration_cap` of them (the calibrator's memory)."""
        import math

        import numpy as np

        x = self.data.x_train
        n = min(len(x), calibration_cap(math.prod(self.contract.pixels_shape)))
        if self.contract.is_digit or n == len(x):
            return x[:n]
        return x[np.linspace(0, len(x) - 1, n).round().astype(int)]

    @property
    def test_images(self) -> int:
        """Images in the accuracy set (0: none, a general model without --calibration)."""
        x = self.data.x_test
        return 0 if x is None else len(x)

    def source_accuracy(self) -> float | None:
        """The source's top-1 accuracy on the whole accuracy set (what float copies match);
        None without one."""
        if not self.test_images:
            return None
        return self.origin.test_accuracy(self.data.x_test, self.data.y_test)

    def serving_function(self):
        """The one tf.function every TensorFlow-built copy is made of (SavedModel and ONNX
        share a graph, so they cannot drift apart)."""
        if self._serve is None:
            self._serve = self.origin.serve
        if self._serve is None:
            tf = import_tensorflow("digitkit export")
            model, contract = self.model, self.contract

            @tf.function(input_signature=[tf.TensorSpec((None, *contract.input_shape),
                                                        tf.float32, name=contract.input_name)])
            def serve(pixels):
                return {contract.output_name: model(pixels, training=False)}

            self._serve = serve
        return self._serve
