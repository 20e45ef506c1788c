"""What kind of model a path holds, and the layout of an export directory.

`identify` is the one answer to "what is this model file" for every command (export, infer,
bench, view): decided from the path and at most a few header bytes, so it is cheap and imports
no runtime. A model file must be a regular file of at most MAX_MODEL_SIZE bytes
(`digitkit.inputs`, the one rule for what is read): a FIFO, a device or a link to /dev/zero
is refused in one line before any runtime reads it. `ModelCopies` / `read_export_dir` is the
one reading of an export directory.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from digitkit.errors import ModelError
from digitkit.inputs import check_regular, open_regular

ONNX = "onnx"
SAVEDMODEL = "savedmodel"
KERAS_H5 = "keras-h5"  # HDF5, written by Keras 3 or legacy tf.keras
KERAS_V3 = "keras"  # the .keras zip of Keras 3
TFLITE = "tflite"  # a LiteRT (TensorFlow Lite) flatbuffer

#: kind -> the runtime family that loads it
RUNTIME_OF = {ONNX: "onnxruntime", SAVEDMODEL: "tensorflow", KERAS_H5: "tensorflow",
              KERAS_V3: "tensorflow", TFLITE: "litert"}
_SUFFIX_KIND = {".onnx": ONNX, ".h5": KERAS_H5, ".hdf5": KERAS_H5, ".keras": KERAS_V3,
                ".tflite": TFLITE}
EXPECTED = ".onnx, .h5, .keras, .tflite or a SavedModel directory"

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
ZIP_MAGIC = b"PK\x03\x04"

# -- the export directory layout (written by `digitkit export`, read by bench and others) --
SOURCE_COPY = "model.h5"
SAVEDMODEL_DIR = "saved_model"
ONNX_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
TFLITE_FILE = "model.tflite"
MANIFEST = "export.json"
FAILED_SUFFIX = ".FAILED"

#: Largest model file read, in bytes (2 GiB): an ONNX or LiteRT file cannot be larger (protobuf
#: and FlatBuffers offsets are 32-bit; bigger ONNX weights live in external-data files), and a
#: Keras digit classifier is megabytes.
MAX_MODEL_SIZE = 2 * 2**30
#: Largest manifest (export.json) read: it lists a few files and numbers.
MAX_MANIFEST_SIZE = 16 * 2**20

_INT8_OPS = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul",
             "MatMulInteger", "ConvInteger"}


@dataclass(frozen=True)
class ModelFile:
    path: Path
    kind: str

    @property
    def runtime(self) -> str:
        return RUNTIME_OF[self.kind]

    @property
    def is_keras(self) -> bool:
        return self.kind in (KERAS_H5, KERAS_V3)


def is_savedmodel_dir(path: str | os.PathLike) -> bool:
    return (Path(path) / "saved_model.pb").is_file()


def identify(path: str | os.PathLike) -> ModelFile:
    """The kind of model at `path`, or ModelError naming the path and what was expected."""
    p = Path(path)
    if not p.exists():
        raise ModelError(f"{p}: no such file or directory")
    if p.is_dir():
        if is_savedmodel_dir(p):
            return ModelFile(p, SAVEDMODEL)
        raise ModelError(f"{p}: directory is not a SavedModel (no saved_model.pb); "
                         f"expected {EXPECTED}")
    kind = _SUFFIX_KIND.get(p.suffix.lower())
    if kind is None:
        got = f"'{p.suffix}' files" if p.suffix else "files without an extension"
        raise ModelError(f"{p}: unknown model type ({got}); expected {EXPECTED}")
    check_regular(p, MAX_MODEL_SIZE, _refused)
    if kind in (KERAS_H5, KERAS_V3):
        magic = HDF5_MAGIC if kind == KERAS_H5 else ZIP_MAGIC
        try:
            with open_regular(p, MAX_MODEL_SIZE, _refused) as f:
                head = f.read(len(magic))
        except OSError as err:
            raise ModelError(f"{p}: cannot read ({err.strerror or err})") from err
        if head != magic:
            what = "an HDF5 file" if kind == KERAS_H5 else "a Keras zip archive"
            raise ModelError(f"{p}: not {what} (wrong signature); expected a Keras "
                             f"{p.suffix} model")
    return ModelFile(p, kind)


def _refused(path, reason: str) -> ModelError:
    return ModelError(f"{path}: {reason}")


def is_int8_onnx(path: str | os.PathLike) -> bool:
    """An ONNX file holding quantized ops (named *.int8.onnx, or found by its op types)."""
    p = Path(path)
    if p.name.endswith(".int8.onnx"):
        return True
    from digitkit.model.onnx_ends import op_types

    ops = op_types(p)  # from the bytes: importing onnx costs more than the rest of start-up
    if ops is not None:
        return bool(ops & _INT8_OPS)
    try:
        import onnx

        ops = {n.op_type for n in onnx.load(str(p), load_external_data=False).graph.node}
    except Exception:  # noqa: BLE001 - unreadable files fail later, at load, with a reason
        return False
    return bool(ops & _INT8_OPS)


@dataclass
class ModelCopies:
    """The copies of one model: an export directory's, or loose files given together."""

    name: str
    keras: Path | None = None
    saved_model: Path | None = None
    onnx: Path | None = None
    onnx_int8: Path | None = None
    tflite: Path | None = None
    manifest: dict = field(default_factory=dict)

    COPIES = ("keras", "saved_model", "onnx", "onnx_int8", "tflite")

    def any(self) -> bool:
        return any(getattr(self, c) is not None for c in self.COPIES)

    def add(self, model: ModelFile) -> None:
        """File a loose model file under the copy it is."""
        if model.kind == ONNX:
            self._set("onnx_int8" if is_int8_onnx(model.path) else "onnx", model.path)
        elif model.kind == SAVEDMODEL:
            self._set("saved_model", model.path)
        elif model.kind == TFLITE:
            self._set("tflite", model.path)
        else:
            self._set("keras", model.path)

    def _set(self, attr: str, path: Path) -> None:
        if getattr(self, attr) is None:
            setattr(self, attr, path)

    def as_dict(self) -> dict:
        return {"name": self.name,
                **{c: str(getattr(self, c)) if getattr(self, c) else None for c in self.COPIES}}


def is_export_dir(path: str | os.PathLike) -> bool:
    p = Path(path)
    return p.is_dir() and not is_savedmodel_dir(p)


def read_export_dir(path: str | os.PathLike) -> ModelCopies:
    """The copies in an export directory (model.h5 or model.keras, saved_model/, model.onnx,
    model.int8.onnx, model.tflite) and its manifest; ModelError when it holds none."""
    p = Path(path)
    m = ModelCopies(name=p.resolve().name)
    for name, attr in ((SOURCE_COPY, "keras"), ("model.keras", "keras"),
                       (SAVEDMODEL_DIR, "saved_model"), (ONNX_FILE, "onnx"),
                       (INT8_FILE, "onnx_int8"), (TFLITE_FILE, "tflite")):
        if (p / name).exists():
            m._set(attr, p / name)
    manifest = p / MANIFEST
    if manifest.is_file():
        try:
            with open_regular(manifest, MAX_MANIFEST_SIZE, _refused) as f:
                m.manifest = json.loads(f.read())
        except (OSError, ValueError, ModelError):
            m.manifest = {}
    if not m.any():
        raise ModelError(f"{p}: no model copy found (expected {SOURCE_COPY}, {SAVEDMODEL_DIR}/, "
                         f"{ONNX_FILE}, {INT8_FILE} or {TFLITE_FILE})")
    return m
