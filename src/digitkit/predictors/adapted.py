"""Models made elsewhere, opened through the one loaders, and their adapted copies.

The model layer says what a foreign model is (digitkit.model.foreign.SourceModel), which input
convention it was trained on (model.detect) and how to wrap it so that it honours digitkit's
contract (model.adapters). This module opens every source kind through the one loaders
(model.loading for Keras and SavedModels, predictors.ort.open_session for ONNX) and writes the
adapted copy a command runs:

  load_source(path, trust_model, ...) the loaded model (LoadedSource: file, SourceModel,
                                     native) under its contract: the one it records, digits
                                     for digit shapes, else a general image contract from its
                                     shapes, --labels / --calibration names and the pixel
                                     policy flags (digitkit.model.foreign.derive_contract)
  open_source(path, trust_model)     just its SourceModel
  contract_status(path, trust_model) CONTRACT (digitkit's names and a contract's shape, digit
                                     or general), ADAPTED (carries
                                     the convention metadata of digitkit's adapter) or FOREIGN,
                                     read cheaply: no TensorFlow for .onnx and Keras files
  adapted_copy(loaded, convention)   the adapted model as a file of the source's own family
                                     (.onnx, .keras, SavedModel dir), cached (see CACHE_DIR)
  adapted_onnx(path, convention)     the adapted ONNX of a foreign .onnx file

Adapted copies are files because the runtimes that run them are opened from a path, in worker
processes and Ray actors as much as here.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from digitkit.errors import ModelError, one_line
from digitkit.model.contract import OUTPUT_NAME
from digitkit.model.conventions import InputConvention
from digitkit.model.files import (
    KERAS_H5,
    KERAS_V3,
    MANIFEST,
    ONNX,
    SAVEDMODEL,
    ModelFile,
    identify,
)
from digitkit.model.foreign import SourceModel, named_contract_shape

CONTRACT, ADAPTED, FOREIGN = "contract", "adapted", "foreign"
#: Adapted copies live under digitkit's cache directory (digitkit.data.cache_dir, beside the
#: MNIST cache), named by the source's sha256 and the convention: a second run on the same
#: file reuses its copy, and a changed file or convention never meets a stale one.
CACHE_DIR = "adapted"
_SOURCE_KINDS = (KERAS_H5, KERAS_V3, SAVEDMODEL, ONNX)
#: The file name suffix of an adapted copy, per source kind.
_ADAPTED_SUFFIX = {KERAS_H5: ".keras", KERAS_V3: ".keras", SAVEDMODEL: ".savedmodel",
                   ONNX: ".onnx"}


@dataclass(frozen=True)
class LoadedSource:
    """A model made anywhere, loaded: `native` is what the adapters take (the Keras model, the
    SavedModelSignature, or the onnx.ModelProto)."""

    file: ModelFile
    source: SourceModel
    native: object

    @property
    def name(self) -> str:
        return self.file.path.name


def source_kind(path: str | os.PathLike) -> ModelFile:
    """The source's ModelFile, or ModelError for a kind no source comes as (.tflite)."""
    model = identify(path)
    if model.kind not in _SOURCE_KINDS:
        raise ModelError(f"{model.path}: a {model.kind} file cannot be a source model; expected "
                         "a Keras .h5 or .keras file, a SavedModel directory or an .onnx file")
    return model


def load_source(path: str | os.PathLike, trust_model: bool = False, *, labels=None,
                calibration=None, policy=None, layout: str | None = None) -> LoadedSource:
    """Load a source model of any kind. Keras files go through the safe loader (code-carrying
    models refused unless `trust_model`), whatever their shapes; a SavedModel is loaded as a
    TensorFlow graph (no Python code is deserialised; a graph that does more than compute is
    refused unless `trust_model`); ONNX through ONNX Runtime.

    Its contract (digitkit.model.foreign.derive_contract): the one it records (a Keras
    file's or SavedModel's embedded record, an ONNX file's metadata), else digits for digit
    shapes, else a general image contract. `labels` (--labels FILE), `calibration`
    (--calibration DIR: its subfolder names name the classes when nothing else does),
    `policy` (a PolicyFlags) and `layout` (--input-layout) are the flags that shape it."""
    from digitkit.model.foreign import keras_source, onnx_source, savedmodel_source

    model = source_kind(path)
    p = model.path
    shape_it = _ContractFor(p.name, labels, calibration, policy, layout)
    if model.kind == ONNX:
        import onnx

        from digitkit.model.contract import contract_from_metadata
        from digitkit.predictors.ort import open_session

        session = open_session(p)  # a file ONNX Runtime cannot run fails here, with its reason
        try:
            proto = onnx.load(str(p))
        except Exception as err:  # noqa: BLE001 - onnx raises several types for bad files
            raise ModelError(f"{p}: not a usable ONNX model ({one_line(err)})") from err
        props = {q.key: q.value for q in proto.metadata_props}
        contract = shape_it(session.get_inputs()[0].shape, session.get_outputs()[0].shape,
                            contract_from_metadata(props, str(p)))
        return LoadedSource(model, onnx_source(session, p.name, contract), proto)
    record, stated = _embedded(p)
    if model.kind == SAVEDMODEL:
        from digitkit.model.loading import load_savedmodel

        signature = load_savedmodel(p, trust_model)
        outs = signature.fn.structured_outputs
        out_shape = (outs[signature.output_names[0]].shape.as_list()
                     if len(signature.output_names) == 1 else None)
        contract = shape_it(signature.input_shape, out_shape, record)
        source = savedmodel_source(signature, p.name, contract)
        return LoadedSource(model, _with_stated(source, stated), signature)
    import warnings

    from digitkit.model.loading import load_keras_model

    with warnings.catch_warnings():
        # Keras 3 reading a tf.keras 2 file warns about its (then usual) input_shape layer
        # arguments: advice for the file's author, noise for its user.
        warnings.simplefilter("ignore", UserWarning)
        keras_model = load_keras_model(p, trust_model, check_contract=False)
    if len(keras_model.inputs) != 1 or len(keras_model.outputs) != 1:
        raise ModelError(f"{p.name}: expected one input and one output, got "
                         f"{len(keras_model.inputs)} and {len(keras_model.outputs)}")
    contract = shape_it(tuple(keras_model.inputs[0].shape), tuple(keras_model.outputs[0].shape),
                        record)
    source = keras_source(keras_model, p.name, contract)
    if stated is None and not contract.is_digit:
        from digitkit.model.foreign import RAW_FROM_LAYERS, keras_preprocessing

        where = keras_preprocessing(keras_model)
        if where is not None:
            stated = (None, f"{RAW_FROM_LAYERS} ({where})")
    return LoadedSource(model, _with_stated(source, stated), keras_model)


class _ContractFor:
    """The contract of a source being loaded, once its shapes are known: the flags' names
    (--labels, else the calibration folder's subfolders when the model records no names) and
    pixel policy, through the one rule (digitkit.model.foreign.derive_contract)."""

    def __init__(self, name, labels, calibration, policy, layout):
        self.name, self.labels, self.calibration = name, labels, calibration
        self.policy, self.layout = policy, layout

    def __call__(self, input_shape, output_shape, record):
        from digitkit.model.foreign import derive_contract
        from digitkit.model.labels import folder_class_names, read_labels

        shape = tuple(output_shape) if output_shape is not None else ()
        k = shape[-1] if len(shape) == 2 and isinstance(shape[-1], int) else None
        names = None
        if self.labels is not None:
            names = read_labels(self.labels, k)
        elif self.calibration is not None and (record is None or record.is_digit):
            names = folder_class_names(self.calibration, k)
        general = (self.labels is not None or self.calibration is not None
                   or bool(self.policy and self.policy.given))
        return derive_contract(self.name, tuple(input_shape), output_shape, names=names,
                               record=record, policy=self.policy, layout=self.layout,
                               general=general)


def _embedded(path: Path):
    """(the contract a Keras file or SavedModel records, (its convention record, where it was
    read)) or Nones: read without running anything (digitkit.model.embedded)."""
    from digitkit.model.contract import contract_from_record
    from digitkit.model.embedded import read_record
    from digitkit.model.foreign import RAW_FROM_RECORD

    record = read_record(path)
    if record is None:
        return None, None
    contract = contract_from_record(record["model"], str(path))
    stated = record.get("convention")
    return contract, ((stated, RAW_FROM_RECORD) if stated else None)


def _with_stated(source: SourceModel, stated) -> SourceModel:
    """The source with the convention it states about itself: (a convention record or None
    for raw pixels in its own layout, where it was read)."""
    if stated is None:
        return source
    from dataclasses import replace

    from digitkit.model.conventions import layout_of

    record, by = stated
    contract = source.contract
    if record is None:
        conv = InputConvention(layout=layout_of(source.input_shape, contract), contract=contract)
    else:
        conv = InputConvention.from_dict(record, contract)
    return replace(source, stated=conv, stated_by=by)


def open_source(path: str | os.PathLike, trust_model: bool = False) -> SourceModel:
    """The SourceModel of a model made anywhere (see load_source)."""
    return load_source(path, trust_model).source


# ------------------------------------------------------------------------ contract status


def contract_status(path: str | os.PathLike,
                    trust_model: bool = False) -> tuple[str, InputConvention | None]:
    """(CONTRACT | ADAPTED | FOREIGN, the source convention an ADAPTED model records).

    Cheap where it can be: an ONNX file's graph and metadata are read without a session, a
    Keras file's names from its stored config (no TensorFlow). A SavedModel is CONTRACT inside
    a digitkit export directory (digitkit wrote it); elsewhere its signature is loaded (through
    the one loader: `trust_model` as there)."""
    model = identify(path)
    if model.kind == ONNX:
        return _onnx_status(model.path)
    if model.kind in (KERAS_H5, KERAS_V3):
        from digitkit.model.loading import read_model_config

        names = keras_ends(read_model_config(model.path))
        return (CONTRACT if named_contract_shape(*names) else FOREIGN), None
    if model.kind == SAVEDMODEL:
        if (model.path.parent / MANIFEST).is_file():
            return CONTRACT, None
        from digitkit.model.foreign import savedmodel_source
        from digitkit.model.loading import load_savedmodel

        source = savedmodel_source(load_savedmodel(model.path, trust_model), model.path.name)
        return (CONTRACT if source.honours_contract else FOREIGN), None
    return CONTRACT, None  # a LiteRT copy only ever comes from `digitkit export`


def stated_input_shape(path: str | os.PathLike) -> tuple | None:
    """The input shape (batch first) an .onnx or Keras file states, read without a runtime;
    None for other kinds or when it states none."""
    model = identify(path)
    if model.kind in (KERAS_H5, KERAS_V3):
        from digitkit.model.loading import read_model_config

        return keras_ends(read_model_config(model.path))[2]
    if model.kind == ONNX:
        g = _read_onnx(model.path).graph
        inits = {i.name for i in g.initializer}
        inputs = [i for i in g.input if i.name not in inits]
        return _dims(inputs[0]) if len(inputs) == 1 else None
    return None


def _read_onnx(path: Path):
    import onnx

    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as err:  # noqa: BLE001 - onnx raises several types for bad files
        raise ModelError(f"{path}: not a usable ONNX model ({one_line(err)})") from err


def _dims(value_info) -> tuple:
    return tuple(d.dim_value if d.HasField("dim_value") else None
                 for d in value_info.type.tensor_type.shape.dim)


def _onnx_status(path: Path) -> tuple[str, InputConvention | None]:
    from digitkit.model.adapters import onnx_convention
    from digitkit.model.onnx_ends import honours_contract

    if honours_contract(path):  # digitkit's own model, proved without importing onnx
        return CONTRACT, None
    proto = _read_onnx(path)
    recorded = onnx_convention(proto)
    if recorded is not None:
        return ADAPTED, recorded
    g = proto.graph
    inits = {i.name for i in g.initializer}
    inputs = [i for i in g.input if i.name not in inits]
    outputs = [o.name for o in g.output]
    if len(inputs) != 1 or OUTPUT_NAME not in outputs:
        return FOREIGN, None
    named = named_contract_shape(inputs[0].name, OUTPUT_NAME, _dims(inputs[0]))
    return (CONTRACT if named else FOREIGN), None


def keras_ends(config: dict) -> tuple[str | None, str | None, tuple | None]:
    """(input name, output name, input shape) of a stored Keras model config (Functional or
    Sequential, Keras 3 or tf.keras 2), read without deserialising anything."""
    cfg = config.get("config") or {}
    layers = cfg.get("layers") or []

    def first_name(refs):  # [["pixels", 0, 0]] or ["pixels", 0, 0]
        while isinstance(refs, list) and refs and isinstance(refs[0], list):
            refs = refs[0]
        return refs[0] if isinstance(refs, list) and refs else None

    def shape_of(layer):
        c = (layer or {}).get("config") or {}
        shape = c.get("batch_shape") or c.get("batch_input_shape")
        return tuple(shape) if shape else None

    inputs = [la for la in layers if la.get("class_name") == "InputLayer"]
    if config.get("class_name") == "Sequential":
        head = inputs[0] if inputs else (layers[0] if layers else None)
        in_name = ((head or {}).get("config") or {}).get("name") if inputs else None
        out = layers[-1] if layers else {}
        return in_name, (out.get("config") or {}).get("name"), shape_of(head)
    in_name = first_name(cfg.get("input_layers"))
    out_name = first_name(cfg.get("output_layers"))
    head = next((la for la in inputs if (la.get("config") or {}).get("name") == in_name
                 or la.get("name") == in_name), None)
    return in_name, out_name, shape_of(head)


# ------------------------------------------------------------------------ adapted copies


def source_sha256(path: str | os.PathLike) -> str:
    """A source's checksum: its file, or a SavedModel directory's tree."""
    from digitkit.artifacts import sha256_file, sha256_tree

    p = Path(path)
    return sha256_tree(p) if p.is_dir() else sha256_file(p)


def adapted_path(model: ModelFile, convention: InputConvention, sha: str | None = None) -> Path:
    """Where the adapted copy of `model` under `convention` is cached."""
    from digitkit.data import cache_dir

    sha = sha or source_sha256(model.path)
    conv = hashlib.sha256(json.dumps(convention.to_dict(), sort_keys=True).encode())
    stem = Path(model.path.name).stem or "model"
    return (cache_dir() / CACHE_DIR
            / f"{stem}-{sha[:16]}-{conv.hexdigest()[:12]}{_ADAPTED_SUFFIX[model.kind]}")


def adapted_copy(loaded: LoadedSource, convention: InputConvention) -> Path:
    """The source wrapped in the adapter for `convention`, written once to the cache: an
    .onnx for an ONNX source (adapter nodes), a .keras for a Keras source (built-in layers
    only: it reloads under the safe loader), a SavedModel directory for a SavedModel."""
    from digitkit.artifacts import atomic_path

    dest = adapted_path(loaded.file, convention)
    if dest.exists():
        return dest
    with atomic_path(dest) as tmp:
        _write_adapted(loaded, convention, tmp)
    return dest


def adapted_onnx(path: str | os.PathLike, convention: InputConvention) -> Path:
    """The adapted ONNX of a foreign .onnx file (what ONNX Runtime engines and their worker
    processes run), cached."""
    model = source_kind(path)
    if model.kind != ONNX:
        raise ModelError(f"{model.path}: not an .onnx file")
    return adapted_copy(load_source(model.path), convention)


def _write_adapted(loaded: LoadedSource, convention: InputConvention, out: Path) -> None:
    from digitkit.model import adapters

    kind = loaded.file.kind
    if kind == ONNX:
        proto = adapters.adapt_onnx(loaded.native, convention, loaded.name)
        out.write_bytes(proto.SerializeToString())
    elif kind == SAVEDMODEL:
        from digitkit.model.loading import import_tensorflow

        tf = import_tensorflow("adapting a SavedModel")
        serve = adapters.adapted_function(loaded.native, convention)
        module = tf.Module()
        module.source = loaded.native.loaded  # tracked, so its variables are saved
        module.serve = serve
        tf.saved_model.save(module, str(out), signatures={"serving_default": serve})
    else:
        adapters.wrap_keras(loaded.native, convention).save(out)
    if kind != ONNX and not convention.contract.is_digit:
        # the copy takes raw pixels: it carries its contract (names, policy), no convention
        from digitkit.model.embedded import write_contract

        write_contract(out, convention.contract)


__all__ = ["ADAPTED", "CONTRACT", "FOREIGN", "LoadedSource", "adapted_copy", "adapted_onnx",
           "adapted_path", "contract_status", "keras_ends", "load_source", "open_source",
           "source_kind", "source_sha256", "stated_input_shape"]
