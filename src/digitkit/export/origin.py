"""Where an export's copies come from: `ExportSource`, the one type of source model, for every
model digitkit exports, its own included.

An ExportSource is a model file under its contract (digitkit.model.contract.ModelContract)
with an adapter in front of it; it gives the builders what they convert (`model`, `serve`),
the reference every copy is held to (`reference`), its own test accuracy (`test_accuracy`),
and what export.json and each ONNX copy record about it (`record`, `metadata`).

- digitkit's own model (a Keras file presenting the contract by name, no --input-* flag given)
  is its own adapter, the identity: loaded by the safe loader with its contract checked, its
  own outputs the reference, nothing about an adapter recorded.
- Any other source (a Keras .h5 from Keras 3 or tf.keras 2, a .keras, a SavedModel directory,
  a foreign .onnx) has its input convention resolved once (declared by the --input-* flags, or
  detected on MNIST test images, the evidence printed). Every copy is made from the source
  wrapped in the adapter (model.adapters: wrap_keras for Keras, adapted_function for a
  SavedModel, adapt_onnx nodes for an ONNX source), validated against the SOURCE run under
  its own convention (predict_under), never against an adapted copy of itself, and each
  copy's test accuracy is shown beside the source's own.

An ONNX source can only become ONNX copies (there is no TensorFlow graph to save).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from digitkit.errors import ModelError, UsageError
from digitkit.model.contract import DIGIT_CONTRACT, ModelContract
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


#: Images per call when measuring a source's test accuracy.
_ACCURACY_BATCH = 1000
#: Images per call of a general model's reference outputs.
_REFERENCE_SLICE = 100


@dataclass
class ExportSource:
    """The model an export is made from, under its contract, behind its adapter.

    reference: the contract's raw pixels -> probabilities: the source run under its own
        convention, what every copy is held to.
    model: what the TensorFlow builders convert (the Keras model itself, the adapter-wrapped
        Keras model, or a tf.Module serving an adapted SavedModel signature); None for an ONNX
        source.
    serve: a ready serving function (an adapted SavedModel signature); None: built from model.
    detection: how its input convention was chosen (digitkit.model.detect.Detection); None
        for a model that honours its contract itself, whose adapter is the identity.
    """

    file: ModelFile
    contract: ModelContract
    reference: Callable
    model: object = None
    serve: object = None
    detection: object = None
    loaded: object = field(default=None, repr=False)  # a LoadedSource, for the ONNX adapter
    #: Where a general contract's class names and pixel policy came from (export.json
    #: "source"); empty for digit models.
    provenance: dict = field(default_factory=dict)
    _accuracy: float | None = field(default=None, repr=False)
    _proto: object = field(default=None, repr=False)

    @property
    def adapted(self) -> bool:
        """Whether an adapter stands between the contract and the model (not the identity)."""
        return self.detection is not None

    @property
    def convention(self):
        """The source's input convention (the contract itself for the identity adapter)."""
        if self.detection is not None:
            return self.detection.convention
        from digitkit.model.conventions import InputConvention

        return InputConvention(layout=self.contract.layout, contract=self.contract)

    @property
    def is_onnx(self) -> bool:
        return self.file.kind == ONNX

    def fill_reference(self, cases: list) -> None:
        for case in cases:
            case.reference = self.reference(case.pixels)

    def test_accuracy(self, x, y) -> float:
        """Its own top-1 accuracy on (x, y) under its convention, measured once."""
        if self._accuracy is None:
            import numpy as np

            from digitkit.model.calls import in_calls

            preds = [self.reference(np.asarray(part, np.float32)).argmax(axis=1)
                     for part in in_calls(x, _ACCURACY_BATCH)]
            self._accuracy = float(np.mean(np.concatenate(preds) == np.asarray(y)))
        return self._accuracy

    def adapted_onnx(self):
        """The ONNX source with the adapter's nodes (an onnx.ModelProto)."""
        if self._proto is None:
            from digitkit.model.adapters import adapt_onnx

            self._proto = adapt_onnx(self.loaded.native, self.convention, self.file.path.name)
        return self._proto

    def progress(self, format_name: str) -> str | None:
        """The progress line of a copy when it is made unlike the table says (None: as it
        says): an ONNX source's ONNX copy is its own graph with the adapter's nodes."""
        if format_name == "onnx" and self.is_onnx:
            return "adapter nodes added to the source's graph, checked and validated"
        return None

    def metadata(self) -> dict[str, str]:
        """The ONNX metadata_props that record the adapter and the source's convention (none
        for the identity)."""
        if not self.adapted:
            return {}
        from digitkit.model.adapters import ADAPTER_KEY, CONVENTION_KEY, adapter_description

        return {CONVENTION_KEY: json.dumps(self.convention.to_dict()),
                ADAPTER_KEY: adapter_description(self.convention)}

    def record(self) -> dict:
        """export.json "source" keys beyond path, sha256 and copy (for the identity: where a
        general contract came from; nothing for a digit model)."""
        if not self.adapted:
            return dict(self.provenance)
        from digitkit.model.adapters import adapter_description

        return {"kind": self.file.kind,
                "convention": self.convention.to_dict(),
                "adapter": adapter_description(self.convention),
                "detection": self.detection.to_dict(),
                "test_accuracy": None if self._accuracy is None else round(self._accuracy, 6)}

    def reference_label(self, keras_version: str) -> str:
        """The table's [ref] row: the Keras model itself, or the source under its own
        convention."""
        if not self.adapted:
            return f"keras (keras {keras_version})"
        return f"source {self.file.path.name} under {self.convention.describe()}"


def honours_contract(model: ModelFile, config) -> bool:
    """A source digitkit made itself (a Keras file presenting the contract by name, no
    --input-* flag given): exported exactly as digitkit's models always were, no adapter."""
    from digitkit.predictors.adapted import CONTRACT, contract_status

    return (model.kind in (KERAS_H5, KERAS_V3) and not config.conventions.given
            and contract_status(model.path)[0] == CONTRACT)


def open_export_source(model: ModelFile, config, say) -> tuple[ExportSource, object]:
    """(the ExportSource of `model`, the evidence its copies are held to: MNIST for a digit
    model, a digitkit.export.evidence.CalibrationSet for a general one). The model is loaded
    first, so that an unsafe one is refused before anything is written or downloaded; a model
    made elsewhere then has its convention resolved (and printed with the evidence), is
    wrapped in the adapter, and has its own accuracy measured.

    Its contract is the model layer's one rule (digitkit.model.foreign.derive_contract, in
    load_source): what it records, digit shapes as digits, else a general image contract
    from its shapes, --labels or the --calibration folder's names and the pixel policy
    flags."""
    from digitkit.data import load_mnist
    from digitkit.export.evidence import export_evidence
    from digitkit.model.loading import load_keras_model
    from digitkit.predictors.adapted import load_source

    if _digit_by_name(model) and honours_contract(model, config) and not _general_flags(config):
        source = own_source(model, load_keras_model(model.path, config.trust_model))
        return source, export_evidence(source.contract, config, say)
    loaded = load_source(model.path, config.trust_model,  # as strict about code
                         labels=config.labels, calibration=config.calibration,
                         policy=config.policy, layout=config.conventions.layout)
    if loaded.source.contract.is_digit:
        _digit_only(model, config)
        mnist = load_mnist(config.data)
        return adapted_source(loaded, config.conventions, mnist, say), mnist
    return general_source(loaded, config, say)


def _general_flags(config) -> bool:
    return (config.calibration is not None or config.labels is not None
            or bool(config.policy.given))


def _digit_by_name(model: ModelFile) -> bool:
    """A Keras file whose stored config presents digitkit's digit contract by its shape
    ((N,28,28)): digitkit's own digit model, exported as it always was."""
    if model.kind not in (KERAS_H5, KERAS_V3):
        return False
    from digitkit.model.loading import read_model_config
    from digitkit.predictors.adapted import keras_ends

    shape = keras_ends(read_model_config(model.path))[2]
    return shape is not None and tuple(shape[1:]) == DIGIT_CONTRACT.input_shape


def _digit_only(model: ModelFile, config) -> None:
    """The options only a general image classifier takes, refused for a model recording
    digitkit's digit contract (derive_contract turns anything else general when they are
    given)."""
    given = [flag for flag, value in (("--calibration", config.calibration),
                                      ("--labels", config.labels)) if value is not None]
    given += config.policy.given
    if given:
        raise UsageError(f"{model.path}: {' and '.join(given)} apply to general image "
                         "classifiers; this model records digitkit's digit contract and is "
                         "exported on MNIST")


def general_source(loaded, config, say) -> tuple[ExportSource, object]:
    """(the ExportSource of a general image classifier `loaded` under its contract, its
    evidence). Its convention is resolved by the model layer's one entry (resolve_convention:
    declared by the flags, its contract by name, stated by its record or its own layers, or
    detected on the --calibration folder), printed with the evidence. A Keras model that
    honours its contract by name is its own adapter, the identity (converted as it is, its
    own outputs the reference); any other is wrapped in the adapter and validated against
    the source run under its convention."""
    from digitkit.export.evidence import export_evidence
    from digitkit.model.detect import CONTRACT, DETECTED
    from digitkit.model.resolve import resolve_convention

    contract = loaded.source.contract
    provenance = _provenance(loaded, config)
    lines = [f"contract: {contract.input_text()} -> {contract.output_text()}; "
             f"{contract.preprocessing.summary}; class names from "
             f"{provenance['class_names_from']}"]
    evidence = export_evidence(contract, config, lines.append)
    detection = resolve_convention(loaded.source, evidence.x_test, evidence.y_test,
                                   config.conventions, data=evidence.data_name)
    for line in lines:  # once the model is accepted: a refusal stays one line
        say(line)
    if detection.how == CONTRACT and loaded.file.kind in (KERAS_H5, KERAS_V3):
        source = own_source(loaded.file, loaded.native, contract)
    else:
        say(detection.summary() + detection.evidence())
        if detection.how == DETECTED:
            for line in detection.table():
                say(f"  {line}")
        source = _adapted(loaded, detection)
    source.provenance = provenance
    if evidence.has_images:
        source.test_accuracy(evidence.x_test, evidence.y_test)
    return source, evidence


def _provenance(loaded, config) -> dict:
    """Where a general contract's class names and pixel policy came from (export.json
    "source"), by the precedence of derive_contract."""
    from digitkit.model.contract import contract_from_metadata
    from digitkit.model.embedded import read_record

    if loaded.file.kind == ONNX:
        props = {p.key: p.value for p in loaded.native.metadata_props}
        recorded = contract_from_metadata(props, str(loaded.file.path)) is not None
    else:
        recorded = read_record(loaded.file.path) is not None
    if config.labels is not None:
        names = f"--labels {config.labels}"
    elif recorded:
        names = "the model's own record"
    elif config.calibration is not None:
        names = f"the class folders of {config.calibration} (sorted, Keras' order)"
    else:
        names = "output indices (the model records none; --labels FILE names them)"
    policy = "the model's own record" if recorded else "the default"
    if config.policy.given:
        policy += f" with {', '.join(config.policy.given)}"
    record = {"class_names_from": names, "pixel_policy_from": policy}
    if config.labels is not None:
        record["labels_file"] = str(config.labels)
    return record


def own_source(model: ModelFile, keras_model,
               contract: ModelContract = DIGIT_CONTRACT) -> ExportSource:
    """A Keras model honouring `contract` itself: converted as it is, its own outputs the
    reference (one call per batch, as Keras runs it; a general model's in slices of
    _REFERENCE_SLICE images, since its inputs may be 224x224x3 and a case 1,000 of them)."""
    import numpy as np

    from digitkit.model.calls import call_batch, in_calls

    def reference(pixels):
        if contract.is_digit or len(pixels) <= call_batch(pixels, _REFERENCE_SLICE):
            return np.asarray(keras_model(pixels, training=False), dtype=np.float32)
        return np.concatenate([reference(part) for part in in_calls(pixels, _REFERENCE_SLICE)])

    return ExportSource(model, contract, reference, model=keras_model)


def adapted_source(loaded, flags, mnist, say) -> ExportSource:
    """A source made elsewhere (`loaded` by digitkit.predictors.adapted.load_source, which
    refused unsafe models as for every source): its convention resolved and printed with the
    evidence, wrapped in the adapter, and its own test accuracy measured."""
    from digitkit.model.detect import DETECTED
    from digitkit.model.resolve import resolve_convention

    detection = resolve_convention(loaded.source, mnist.x_test, mnist.y_test, flags)
    say(detection.summary() + (f" on {detection.images:,} MNIST test images"
                               if detection.scores else ""))
    if detection.how == DETECTED:
        for line in detection.table():
            say(f"  {line}")
    src = _adapted(loaded, detection)
    src.test_accuracy(mnist.x_test, mnist.y_test)
    return src


def _adapted(loaded, detection) -> ExportSource:
    from digitkit.model.detect import predict_under

    convention = detection.convention
    model = loaded.file

    def reference(pixels):
        return predict_under(loaded.source, convention, pixels)

    src = ExportSource(model, convention.contract, reference, detection=detection,
                       loaded=loaded)
    if model.kind in (KERAS_H5, KERAS_V3):
        from digitkit.model.adapters import wrap_keras

        src.model = wrap_keras(loaded.native, convention)
    elif model.kind == SAVEDMODEL:
        src.serve, src.model = _savedmodel_model(loaded.native, convention)
    return src


def _savedmodel_model(signature, convention):
    """(serving function, a tf.Module standing in for a Keras model) of a SavedModel source:
    the module tracks the source's variables (so they are saved with a copy) and is called
    like a Keras model (model(pixels, training=False)) by the builders that take one."""
    from digitkit.model.adapters import adapted_function
    from digitkit.model.loading import import_tensorflow

    tf = import_tensorflow("adapting a SavedModel")
    serve = adapted_function(signature, convention)
    output_name = convention.contract.output_name

    class AdaptedSavedModel(tf.Module):
        def __init__(self):
            super().__init__(name="adapted_savedmodel")
            self.source = signature.loaded
            self.layers = []  # no Keras layers to rewrite for any converter

        def __call__(self, pixels, training=False):
            return serve(tf.convert_to_tensor(pixels, tf.float32))[output_name]

    return serve, AdaptedSavedModel()


def recorded_export_source(copy: Path, recorded: dict, trust_model: bool = False,
                           contract: ModelContract = DIGIT_CONTRACT) -> ExportSource:
    """The source copy of an existing export, under what its export.json `recorded` ("source")
    says: the convention of a model made elsewhere (no detection), or none for digitkit's
    own model (loaded with its contract checked)."""
    from digitkit.model.files import identify
    from digitkit.model.loading import load_keras_model

    if not recorded.get("convention"):
        model = load_keras_model(copy, trust_model, check_contract=contract.is_digit)
        contract.check_keras(copy, model)
        return own_source(identify(copy), model, contract)
    from digitkit.model.conventions import InputConvention
    from digitkit.model.detect import DECLARED, Detection
    from digitkit.predictors.adapted import load_source

    # The copy's own shapes under the recorded contract's size (a dynamic or flat input
    # was given one by --input-size at export time).
    policy = None
    if not contract.is_digit:
        from digitkit.model.conventions import PolicyFlags

        policy = PolicyFlags(input_size=(contract.height, contract.width))
    loaded = load_source(copy, trust_model, policy=policy)
    convention = InputConvention.from_dict(recorded["convention"], contract)
    return _adapted(loaded, Detection(convention, how=DECLARED))


def add_copy_accuracies(ctx, results: dict) -> None:
    """Each copy's top-1 accuracy on the whole accuracy set (MNIST's test set; a general
    model's calibration folder; nothing without one) beside the source's own (run
    under its convention), in the table's notes and in export.json ("test_accuracy"): the
    evidence that an adapter kept the source's behaviour. The identity adapter has nothing to
    show: its copies are held to the model itself."""
    if not ctx.origin.adapted or not ctx.test_images:
        return
    import numpy as np

    from digitkit.predictors import open_predictor

    x, y = ctx.data.x_test, ctx.data.y_test
    what = "MNIST test" if ctx.contract.is_digit else "calibration"
    source = ctx.source_accuracy()
    for name, res in results.items():
        known = res.extra.get("accuracy") or {}
        acc = known.get("accuracy", known.get("int8_accuracy"))  # LiteRT's, int8's own check
        path = ctx.path(name)
        if acc is None and res.error is None and path.exists():
            predictor = open_predictor(path, trust_model=ctx.config.trust_model)
            from digitkit.model.calls import in_calls

            preds = [predictor.predict(np.asarray(part, np.float32)).argmax(axis=1)
                     for part in in_calls(x)]
            acc = float(np.mean(np.concatenate(preds) == np.asarray(y)))
        if acc is None:
            continue
        res.extra["test_accuracy"] = {"copy": round(acc, 6), "source": round(source, 6),
                                      "test_images": int(len(x))}
        line = (f"test accuracy {acc:.2%}, the source's own {source:.2%} ({len(x)} {what} "
                "images)")
        res.notes = f"{line}; {res.notes}" if res.notes else line


__all__ = ["ONNX_SOURCE_FORMATS", "SOURCE_COPIES", "SOURCE_FORMATS", "ExportSource",
           "adapted_source", "add_copy_accuracies", "check_formats", "check_source",
           "honours_contract", "open_export_source", "own_source", "recorded_export_source"]
