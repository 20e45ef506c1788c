"""The model an export is made from: digitkit's own, or one made elsewhere behind its adapter.

A source that honours digitkit's contract by name (digitkit's own .h5) is exported exactly as
before: loaded by the safe loader with its contract checked, its own outputs the reference.
Any other source (a Keras .h5 from Keras 3 or tf.keras 2, a .keras, a SavedModel directory, a
foreign .onnx) has its input convention resolved once (declared by the --input-* flags, or
detected on MNIST test images, the evidence printed), and then:
- every copy is made from the source wrapped in the adapter (model.adapters: wrap_keras for
  Keras, adapted_function for a SavedModel, adapt_onnx nodes for an ONNX source), so every
  copy honours the one contract;
- every copy is validated against the SOURCE run under its own convention (predict_under),
  never against an adapted copy of itself, and each copy's test accuracy is shown beside the
  source's own.
An ONNX source can only become ONNX copies (there is no TensorFlow graph to save).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from digitkit.errors import ModelError, UsageError
from digitkit.model.contract import OUTPUT_NAME
from digitkit.model.files import (
    KERAS_H5,
    KERAS_V3,
    ONNX,
    SAVEDMODEL,
    SOURCE_COPY,
    ModelFile,
    identify,
)

#: How the export directory keeps its copy of each kind of source. digitkit's own .h5 stays
#: model.h5 (what every reader of an export directory expects); the others keep their kind,
#: under names that no reader takes for an exported copy.
SOURCE_COPIES = {KERAS_H5: SOURCE_COPY, KERAS_V3: "model.keras",
                 SAVEDMODEL: "source_saved_model", ONNX: "source.onnx"}
#: The export.json format name of each source copy.
SOURCE_FORMATS = {KERAS_H5: "keras-h5", KERAS_V3: "keras", SAVEDMODEL: "savedmodel",
                  ONNX: "onnx"}
#: The formats an ONNX source can become: ONNX Runtime's, made from its own graph.
ONNX_SOURCE_FORMATS = ("onnx", "onnx-int8")
_EXPECTED = ("expected a Keras HDF5 (.h5) or .keras model, a SavedModel directory or an .onnx "
             "file")


def check_source(path: str | os.PathLike) -> ModelFile:
    """The model to export, by kind. Cheap checks only (no import); the file kind comes from
    the model layer."""
    p = Path(path)
    if not p.exists():
        raise ModelError(f"{p}: no such file")
    if p.is_dir() and not (p / "saved_model.pb").is_file():
        raise ModelError(f"{p}: is a directory but no SavedModel (no saved_model.pb); "
                         f"{_EXPECTED}")
    suffix = p.suffix.lower()
    if p.is_file() and suffix not in (".h5", ".hdf5", ".keras", ".onnx"):
        got = f"a '{p.suffix}' file" if p.suffix else "a file without an extension"
        raise ModelError(f"{p}: {_EXPECTED}, got {got}")
    return identify(p)  # checks the HDF5 / zip signature


def check_formats(model: ModelFile, formats: tuple[str, ...], all_formats: bool) -> tuple:
    """The formats this source can become: an ONNX source has no TensorFlow graph, so asking
    it for a SavedModel (or LiteRT) copy is refused; "all" means all it can become."""
    if model.kind != ONNX:
        return formats
    if all_formats:
        return tuple(f for f in formats if f in ONNX_SOURCE_FORMATS)
    refused = [f for f in formats if f not in ONNX_SOURCE_FORMATS]
    if refused:
        raise UsageError(f"{model.path}: an ONNX source cannot become a {' or '.join(refused)} "
                         "copy (there is no TensorFlow graph to save); use --format onnx")
    return formats


@dataclass
class ExportSource:
    """A source made elsewhere, resolved and wrapped.

    model: what the TensorFlow builders convert (the wrapped Keras model, or a tf.Module
        serving the adapted SavedModel signature); None for an ONNX source.
    serve: the adapted serving function a SavedModel source brings (None: built from model).
    """

    file: ModelFile
    loaded: object  # digitkit.predictors.adapted.LoadedSource
    detection: object  # digitkit.model.detect.Detection
    model: object = None
    serve: object = None
    accuracy: float | None = None  # the source's own, under its convention, on the test set
    _proto: object = field(default=None, repr=False)

    @property
    def convention(self):
        return self.detection.convention

    @property
    def is_onnx(self) -> bool:
        return self.file.kind == ONNX

    def reference(self, pixels):
        """The source run under its own convention: what every copy is held to."""
        from digitkit.model.detect import predict_under

        return predict_under(self.loaded.source, self.convention, pixels)

    def fill_reference(self, cases: list) -> None:
        for case in cases:
            case.reference = self.reference(case.pixels)

    def measure(self, x, y) -> float:
        import numpy as np

        self.accuracy = float(np.mean(self.reference(x).argmax(axis=1) == np.asarray(y)))
        return self.accuracy

    def adapted_onnx(self):
        """The ONNX source with the adapter's nodes (an onnx.ModelProto)."""
        if self._proto is None:
            from digitkit.model.adapters import adapt_onnx

            self._proto = adapt_onnx(self.loaded.native, self.convention, self.file.path.name)
        return self._proto

    def metadata(self) -> dict[str, str]:
        """The ONNX metadata_props that record the adapter and the source's convention."""
        from digitkit.model.adapters import ADAPTER_KEY, CONVENTION_KEY, adapter_description

        return {CONVENTION_KEY: json.dumps(self.convention.to_dict()),
                ADAPTER_KEY: adapter_description(self.convention)}

    def record(self) -> dict:
        """export.json "source" keys beyond path, sha256 and copy."""
        from digitkit.model.adapters import adapter_description

        return {"kind": self.file.kind,
                "convention": self.convention.to_dict(),
                "adapter": adapter_description(self.convention),
                "detection": self.detection.to_dict(),
                "test_accuracy": None if self.accuracy is None else round(self.accuracy, 6)}

    def reference_label(self) -> str:
        """The table's [ref] row: the source, run under its own convention."""
        return f"source {self.file.path.name} under {self.convention.describe()}"


def open_export_source(loaded, config, mnist, say) -> ExportSource:
    """A source made elsewhere (`loaded` by digitkit.predictors.adapted.load_source, which
    refused unsafe models as for every source): its convention resolved and printed with the
    evidence, wrapped in the adapter, and its own test accuracy measured."""
    from digitkit.model.detect import DETECTED, resolve_convention

    model = loaded.file
    detection = resolve_convention(loaded.source, mnist.x_test, mnist.y_test,
                                   config.conventions)
    say(detection.summary() + (f" on {detection.images:,} MNIST test images"
                               if detection.scores else ""))
    if detection.how == DETECTED:
        for line in detection.table():
            say(f"  {line}")
    src = ExportSource(model, loaded, detection)
    if model.kind in (KERAS_H5, KERAS_V3):
        from digitkit.model.adapters import wrap_keras

        src.model = wrap_keras(loaded.native, detection.convention)
    elif model.kind == SAVEDMODEL:
        src.serve, src.model = _savedmodel_model(loaded.native, detection.convention)
    src.measure(mnist.x_test, mnist.y_test)
    return src


def _savedmodel_model(signature, convention):
    """(serving function, a tf.Module standing in for a Keras model) of a SavedModel source:
    the module tracks the source's variables (so they are saved with a copy) and is called
    like a Keras model (model(pixels, training=False)) by the builders that take one."""
    from digitkit.model.adapters import adapted_function
    from digitkit.model.loading import import_tensorflow

    tf = import_tensorflow("adapting a SavedModel")
    serve = adapted_function(signature, convention)

    class AdaptedSavedModel(tf.Module):
        def __init__(self):
            super().__init__(name="adapted_savedmodel")
            self.source = signature.loaded
            self.layers = []  # no Keras layers to rewrite for any converter

        def __call__(self, pixels, training=False):
            return serve(tf.convert_to_tensor(pixels, tf.float32))[OUTPUT_NAME]

    return serve, AdaptedSavedModel()




def own_model(model: ModelFile, config) -> bool:
    """A source digitkit made itself (a Keras file presenting the contract by name, no
    --input-* flag given): exported exactly as digitkit's models always were, no adapter."""
    from digitkit.predictors.adapted import CONTRACT, contract_status

    return (model.kind in (KERAS_H5, KERAS_V3) and not config.conventions.given
            and contract_status(model.path)[0] == CONTRACT)


def add_copy_accuracies(ctx, results: dict) -> None:
    """Each copy's top-1 accuracy on the whole MNIST test set beside the source's own (run
    under its convention), in the table's notes and in export.json ("test_accuracy")."""
    import numpy as np

    from digitkit.predictors import open_predictor

    x, y = ctx.mnist.x_test, ctx.mnist.y_test
    source = ctx.foreign.accuracy
    for name, res in results.items():
        known = res.extra.get("accuracy") or {}
        acc = known.get("accuracy", known.get("int8_accuracy"))  # LiteRT's, int8's own check
        path = ctx.path(name)
        if acc is None and res.error is None and path.exists():
            predictor = open_predictor(path, trust_model=ctx.config.trust_model)
            preds = [predictor.predict(np.asarray(x[i:i + 1000], np.float32)).argmax(axis=1)
                     for i in range(0, len(x), 1000)]
            acc = float(np.mean(np.concatenate(preds) == np.asarray(y)))
        if acc is None:
            continue
        res.extra["test_accuracy"] = {"copy": round(acc, 6), "source": round(source, 6),
                                      "test_images": int(len(x))}
        line = (f"test accuracy {acc:.2%}, the source's own {source:.2%} ({len(x)} MNIST test "
                "images)")
        res.notes = f"{line}; {res.notes}" if res.notes else line


def recorded_source(copy: Path, convention: dict, trust_model: bool = False) -> ExportSource:
    """The source copy of an existing export of a model made elsewhere, under the convention
    its export.json records (no detection)."""
    from digitkit.model.conventions import InputConvention
    from digitkit.model.detect import DECLARED, Detection
    from digitkit.predictors.adapted import load_source

    loaded = load_source(copy, trust_model)
    return ExportSource(loaded.file, loaded,
                        Detection(InputConvention.from_dict(convention), how=DECLARED))


__all__ = ["ONNX_SOURCE_FORMATS", "SOURCE_COPIES", "SOURCE_FORMATS", "ExportSource",
           "add_copy_accuracies", "check_formats", "check_source", "open_export_source",
           "own_model", "recorded_source"]
