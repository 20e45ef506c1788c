"""The one table of export formats (see EXPORT_FORMATS at the bottom), in the manner of
Ultralytics' export_formats(): one row per copy `digitkit export` can write, naming the file
it is installed as (the export layout of digitkit.model.files), the function that builds it
and the function that validates it.

Adding a format is one row plus its build function: the CLI's choices, option checks, the
plan of files, installation, export.json and `validate_export_dir` all read the table.

Each step is called as `step(ctx, path)`, `ctx` being the run's
digitkit.export.context.ExportContext and `path` the copy's place in ctx.workdir. This module
is imported for --help (through digitkit.export.config), so TensorFlow, ONNX and even numpy
(the validation modules) are imported inside the steps only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from digitkit import __version__
from digitkit.errors import ModelError, one_line
from digitkit.model.contract import ModelContract
from digitkit.model.files import INT8_FILE, ONNX_FILE, SAVEDMODEL_DIR, TFLITE_FILE
from digitkit.model.loading import import_tensorflow


@dataclass(frozen=True)
class ExportFormat:
    """One kind of exported copy."""

    name: str  # its key in export.json "artifacts" and its row of the validation table
    label: str  # how messages name it
    file: str  # its name in the export directory
    build: Callable  # (ctx, path): write the copy at path
    validate: Callable  # (ctx, path) -> ArtifactValidation of the copy at path
    #: progress line after "<name>: "; {opset}, {test_images} and {evidence} ("test" for
    #: MNIST, "calibration" for a general model's folder) are filled in
    done: str
    quantize: str | None = None  # the --quantize value that asks for it (None: --format NAME)
    made_from: str | None = None  # the format it is derived from, which must be built first
    #: (contract) -> the extra keys of its export.json record, fixed by the contract
    record: Callable[[ModelContract], dict] = field(default=lambda contract: {})
    #: The progress line when there is no accuracy set (a general model without
    #: --calibration); None: `done` either way.
    unevaluated: str | None = None


class BuildFailed(Exception):
    """A build that failed in a way the export reports as a failed copy (exit 4, like a copy
    that fails validation) instead of aborting the whole export (exit 1)."""

    def __init__(self, result):
        super().__init__(result.error)
        self.result = result  # the copy's ArtifactValidation, `error` saying what went wrong


# --------------------------------------------------------------------------- SavedModel

#: The name of the serving signature every exported SavedModel has.
SERVING_SIGNATURE = "serving_default"


def savedmodel_signature(contract: ModelContract) -> dict:
    """The serving signature of a SavedModel copy under `contract` (recorded in export.json)."""
    return {
        "name": SERVING_SIGNATURE,
        "inputs": {contract.input_name: {"shape": [None, *contract.input_shape],
                                         "dtype": contract.dtype}},
        "outputs": {contract.output_name: {"shape": [None, contract.num_classes],
                                           "dtype": contract.dtype}},
    }



def build_savedmodel(ctx, path) -> None:
    """SavedModel with one named signature; the model is tracked so its variables are saved.
    A general contract rides along in assets/ (digitkit.model.embedded), so the copy needs
    no flags; a digit copy is as it always was (its contract is the only digit one)."""
    tf = import_tensorflow("writing a SavedModel")
    serve = ctx.serving_function()
    module = tf.Module()
    module.model = ctx.model
    module.serve = serve
    tf.saved_model.save(module, str(path), signatures={SERVING_SIGNATURE: serve})
    if not ctx.contract.is_digit:
        from digitkit.model.embedded import write_contract

        write_contract(path, ctx.contract)


def validate_savedmodel_copy(ctx, path):
    from digitkit.export.validate import validate_savedmodel

    return validate_savedmodel(path, ctx.cases, ctx.config.atol, ctx.config.rtol,
                               ctx.config.trust_model, contract=ctx.contract)


# --------------------------------------------------------------------------- ONNX


def build_onnx(ctx, path) -> None:
    """Convert the serving function with tf2onnx, add metadata, run onnx's full checker.

    tf2onnx's from_keras does not understand Keras 3 models; converting the same
    tf.function the SavedModel serves gives one graph for both copies.
    """
    if ctx.origin.is_onnx:  # the adapter as nodes on the source's own graph
        return _write_checked(ctx.origin.adapted_onnx(), path, onnx_metadata(ctx))
    import tf2onnx

    serve = ctx.serving_function()
    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    try:
        proto, _ = tf2onnx.convert.from_function(serve, input_signature=serve.input_signature,
                                                 opset=ctx.config.opset)
    except Exception as err:  # noqa: BLE001
        raise ModelError(f"{ctx.source}: ONNX conversion failed ({one_line(err)})") from err
    # tf2onnx names the dynamic dimension "unk__N"; a consumer should read "batch".
    for value in list(proto.graph.input) + list(proto.graph.output):
        dim0 = value.type.tensor_type.shape.dim[0]
        dim0.ClearField("dim_value")
        dim0.dim_param = "batch"
    proto.producer_name = "digitkit"
    proto.producer_version = f"{__version__} (tf2onnx {tf2onnx.__version__})"
    contract = ctx.contract
    proto.doc_string = (f"digitkit export of {ctx.source.name}: {contract.input_text('batch')} "
                        f"-> {contract.output_text('batch')} softmax")
    _write_checked(proto, path, onnx_metadata(ctx))


def _write_checked(proto, path, metadata: dict[str, str]) -> None:
    import onnx

    props = {p.key: p.value for p in proto.metadata_props}  # an adapted graph's own, kept
    onnx.helper.set_model_props(proto, {**props, **metadata})
    onnx.save(proto, str(path))
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as err:  # noqa: BLE001 - checker raises several types
        raise ModelError(f"{path.name}: onnx.checker rejected the converted model "
                         f"({one_line(err)})") from err


def onnx_metadata(ctx) -> dict[str, str]:
    """metadata_props: everything a consumer needs without guessing (all values are strings):
    the contract, the source file, and what the source records about its adapter (the input
    convention of a model made elsewhere; nothing for digitkit's own)."""
    return {
        **ctx.contract.onnx_metadata(),
        "source_model": ctx.source.name,
        "source_model_sha256": ctx.source_sha256,
        "digitkit_version": __version__,
        **ctx.origin.metadata(),
    }


def validate_onnx_copy(ctx, path):
    from digitkit.export.validate import validate_onnx

    return validate_onnx(path, ctx.cases, ctx.config.atol, rtol=ctx.config.rtol,
                         contract=ctx.contract)


# --------------------------------------------------------------------------- int8 ONNX


def build_int8(ctx, path) -> None:
    """Static int8 copy of the float ONNX model, calibrated on MNIST training images (a
    general model: its --calibration folder's pixels). It keeps the float copy's metadata
    (the contract included): quantize_static copies metadata_props. A failed
    quantization is a failed copy, not a failed export: the float copies stand on their own."""
    from digitkit.export.quantize import quantize_int8
    from digitkit.export.validate import ArtifactValidation

    input_name = ctx.contract.input_name
    try:
        quantize_int8(ctx.path("onnx"), path, ctx.calibration_images(), input_name=input_name)
    except Exception as err:  # noqa: BLE001
        raise BuildFailed(ArtifactValidation("onnx-int8", "onnxruntime.quantization", None,
                                             error=f"quantization failed: {one_line(err)}")
                          ) from err


def validate_int8_copy(ctx, path):
    from digitkit.export.quantize import check_int8

    return check_int8(path, ctx.path("onnx"), ctx.cases, ctx.data,
                      ctx.config.max_accuracy_drop, len(ctx.calibration_images()),
                      contract=ctx.contract)


# --------------------------------------------------------------------------- LiteRT


def build_tflite(ctx, path) -> None:
    """A float32 LiteRT flatbuffer from TensorFlow's own converter, weights frozen (see
    digitkit.export.tflite for the two traps that takes). A general contract rides along in
    the file's metadata (digitkit.model.embedded); a digit copy is as it always was."""
    from digitkit.export.tflite import convert_tflite

    try:
        convert_tflite(ctx.model, path, ctx.contract)
    except Exception as err:  # noqa: BLE001 - the converter raises many types
        raise ModelError(f"{ctx.source}: LiteRT conversion failed ({one_line(err)})") from err
    if not ctx.contract.is_digit:
        from digitkit.model.embedded import write_tflite_contract

        write_tflite_contract(path, ctx.contract)


def validate_tflite_copy(ctx, path):
    from digitkit.export.tflite import check_tflite

    return check_tflite(path, ctx.cases, ctx.config.atol, ctx.data, ctx.source_accuracy(),
                        ctx.config.rtol, contract=ctx.contract)


# --------------------------------------------------------------------------- the table

EXPORT_FORMATS: dict[str, ExportFormat] = {f.name: f for f in (
    ExportFormat("savedmodel", "SavedModel", SAVEDMODEL_DIR, build_savedmodel,
                 validate_savedmodel_copy, done="written and validated",
                 record=lambda contract: {"signature": savedmodel_signature(contract)}),
    ExportFormat("onnx", "ONNX", ONNX_FILE, build_onnx, validate_onnx_copy,
                 done="converted (opset {opset}), checked and validated"),
    ExportFormat("onnx-int8", "int8 ONNX", INT8_FILE, build_int8, validate_int8_copy,
                 done="quantized and evaluated on {test_images} {evidence} images",
                 quantize="int8", made_from="onnx"),
    ExportFormat("tflite", "LiteRT", TFLITE_FILE, build_tflite, validate_tflite_copy,
                 done="converted (weights frozen), validated and evaluated on {test_images} "
                      "{evidence} images",
                 unevaluated="converted (weights frozen) and validated",
                 record=lambda contract: {"precision": "fp32",
                                          "signature": SERVING_SIGNATURE}),
)}

#: What --format names (in the order copies are built and recorded) ...
FORMATS = tuple(f.name for f in EXPORT_FORMATS.values() if f.quantize is None)
#: ... and what --quantize names: {option value: format}.
QUANTIZE_CHOICES = {f.quantize: f.name for f in EXPORT_FORMATS.values() if f.quantize}


def selected(formats, quantize) -> list[ExportFormat]:
    """The rows one export builds, in table order (a derived copy after its source)."""
    return [f for f in EXPORT_FORMATS.values()
            if (f.quantize is None and f.name in formats)
            or (f.quantize is not None and f.quantize == quantize)]
