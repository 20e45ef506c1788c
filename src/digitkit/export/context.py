"""What the build and validate steps of one export have at hand.

`export_model` makes one over its staging directory; `validate_export_dir` makes one over an
existing export directory, so both run the very same validate steps of the format table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from digitkit.export.config import DEFAULT_CALIBRATION_IMAGES, ExportConfig
from digitkit.export.formats import EXPORT_FORMATS
from digitkit.model.contract import INPUT_NAME, INPUT_SHAPE, OUTPUT_NAME
from digitkit.model.loading import import_tensorflow


@dataclass
class ExportContext:
    config: ExportConfig
    source: Path  # the Keras model every copy is made from and compared with
    model: object  # that model, loaded: the reference outputs and what the builders convert
    workdir: Path  # where copies are built (staging) or found (an existing export directory)
    cases: list  # digitkit.export.validate.Case, references filled in
    mnist: object  # digitkit.data.MnistData: test images (int8 accuracy), training (calibration)
    source_sha256: str = ""  # written into the ONNX metadata
    #: A source made elsewhere (digitkit.export.source.ExportSource): its adapter, convention
    #: and reference; None for digitkit's own models.
    foreign: object = None
    _serve: object = field(default=None, repr=False)
    _source_accuracy: float | None = field(default=None, repr=False)

    def path(self, name: str) -> Path:
        """Where the copy of format `name` is in workdir."""
        return self.workdir / EXPORT_FORMATS[name].file

    def calibration_images(self):
        return self.mnist.x_train[:DEFAULT_CALIBRATION_IMAGES]

    @property
    def test_images(self) -> int:
        return len(self.mnist.x_test)

    def source_accuracy(self) -> float:
        """The Keras model's top-1 accuracy on the whole test set (what float copies match)."""
        if self._source_accuracy is None:
            import numpy as np

            x, y = self.mnist.x_test, self.mnist.y_test
            preds = [np.asarray(self.model(np.asarray(x[i:i + 1000], np.float32),
                                           training=False)).argmax(axis=1)
                     for i in range(0, len(x), 1000)]
            self._source_accuracy = float(np.mean(np.concatenate(preds) == np.asarray(y)))
        return self._source_accuracy

    def serving_function(self):
        """The one tf.function every TensorFlow-built copy is made of (SavedModel and ONNX
        share a graph, so they cannot drift apart)."""
        if self._serve is None and self.foreign is not None and self.foreign.serve is not None:
            self._serve = self.foreign.serve  # a SavedModel source's adapted signature
        if self._serve is None:
            tf = import_tensorflow("digitkit export")
            model = self.model

            @tf.function(input_signature=[tf.TensorSpec((None, *INPUT_SHAPE), tf.float32,
                                                        name=INPUT_NAME)])
            def serve(pixels):
                return {OUTPUT_NAME: model(pixels, training=False)}

            self._serve = serve
        return self._serve
