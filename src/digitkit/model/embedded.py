"""The contract a model file carries inside itself: class names, input size, channels and
pixel policy travel with the model, so no copy needs flags (issue 18).

Where each kind of file keeps it (the JSON form of ModelContract.to_dict, plus an optional
"convention" record for a model that takes other pixels than raw 0..255):

  .keras        a zip member "digitkit.json" (Keras' loader reads only its own members)
  .h5           the root attribute "digitkit_contract" (Keras ignores unknown attributes)
  SavedModel    assets/digitkit.json (saved and restored with the model, never executed)
  .onnx         metadata_props (ModelContract.onnx_metadata; digitkit.model.contract
                `contract_from_metadata` reads it back)
  .tflite       the model's metadata buffer "digitkit_contract" (export/tflite.py writes it)

Reading never runs anything in the model: a zip listing, an HDF5 attribute, a JSON file.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

from digitkit.errors import ModelError
from digitkit.model.contract import ModelContract, contract_from_record

KERAS_MEMBER = "digitkit.json"
H5_ATTRIBUTE = "digitkit_contract"
SAVEDMODEL_ASSET = "digitkit.json"
#: The largest embedded record read: a record is names and a policy (ImageNet-21k's names
#: take ~0.5 MB).
MAX_RECORD = 8 * 2**20


def embedded_record(contract: ModelContract, convention: dict | None = None) -> dict:
    """What a model file carries: {"model": the contract's JSON form, "convention": the input
    convention it was trained on, when not raw pixels}."""
    record = {"model": contract.to_dict()}
    if convention:
        record["convention"] = convention
    return record


def write_contract(path: str | os.PathLike, contract: ModelContract,
                   convention: dict | None = None) -> None:
    """Record `contract` inside the model at `path` (.keras, .h5 or a SavedModel folder)."""
    p = Path(path)
    text = json.dumps(embedded_record(contract, convention), indent=1)
    if p.is_dir():
        (p / "assets").mkdir(exist_ok=True)
        (p / "assets" / SAVEDMODEL_ASSET).write_text(text + "\n")
    elif p.suffix.lower() == ".keras":
        with zipfile.ZipFile(p, "a") as z:
            if KERAS_MEMBER in z.namelist():
                raise ModelError(f"{p}: already carries a {KERAS_MEMBER}")
            z.writestr(KERAS_MEMBER, text)
    elif p.suffix.lower() in (".h5", ".hdf5"):
        import h5py

        with h5py.File(p, "a") as f:
            f.attrs[H5_ATTRIBUTE] = text
    else:
        raise ModelError(f"{p}: cannot carry a contract (expected .keras, .h5 or a SavedModel)")


def read_record(path: str | os.PathLike) -> dict | None:
    """The record a model file carries, or None when it carries none."""
    p = Path(path)
    try:
        if p.is_dir():
            asset = p / "assets" / SAVEDMODEL_ASSET
            if not asset.is_file():
                return None
            from digitkit.inputs import read_regular

            text = read_regular(str(asset), MAX_RECORD).decode("utf-8")
        elif p.suffix.lower() == ".keras":
            with zipfile.ZipFile(p) as z:
                if KERAS_MEMBER not in z.namelist():
                    return None
                info = z.getinfo(KERAS_MEMBER)
                if info.file_size > MAX_RECORD:
                    raise ModelError(f"{p}: {KERAS_MEMBER} too large")
                text = z.read(info).decode("utf-8")
        elif p.suffix.lower() in (".h5", ".hdf5"):
            try:
                import h5py
            except ImportError:
                return None
            with h5py.File(p, "r") as f:
                value = f.attrs.get(H5_ATTRIBUTE)
            if value is None:
                return None
            text = value.decode("utf-8") if isinstance(value, bytes) else str(value)
        else:
            return None
        record = json.loads(text)
    except ModelError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, KeyError) as err:
        raise ModelError(f"{p}: unreadable digitkit contract record ({err})") from err
    if not isinstance(record, dict) or not isinstance(record.get("model"), dict):
        raise ModelError(f"{p}: digitkit contract record is not an object with a model")
    return record


def read_contract(path: str | os.PathLike) -> ModelContract | None:
    """The contract a model file carries (None: it carries none)."""
    record = read_record(path)
    return None if record is None else contract_from_record(record["model"], str(path))




# ------------------------------------------------------------------------ LiteRT (.tflite)
#
# A .tflite file is a FlatBuffer of LiteRT's schema: the root table Model has a vector of
# Buffer tables (field 4; each holds bytes inline, or an offset and size past the
# flatbuffer in files over 2 GB) and a vector of Metadata tables (field 6: a name and the
# index of the buffer holding its bytes). The converter already writes two entries
# (min_runtime_version, CONVERSION_METADATA); digitkit adds one more, TFLITE_METADATA,
# holding the record as JSON. The interpreter ignores metadata it does not know.
#
# Writing uses TensorFlow's own flatbuffer_utils (export time: TensorFlow is there).
# Reading parses the few tables above with struct, bounds-checked: the base install reads
# the contract of a .tflite copy without TensorFlow, without the `flatbuffers` package
# (onnxruntime brings it, but digitkit does not depend on it) and without running the model.

#: The name of the LiteRT metadata entry that holds the record.
TFLITE_METADATA = "digitkit_contract"
_TFLITE_IDENTIFIER = b"TFL3"
_MODEL_BUFFERS, _MODEL_METADATA = 4, 6  # field indices of Model in LiteRT's schema.fbs
_METADATA_NAME, _METADATA_BUFFER = 0, 1
_BUFFER_DATA, _BUFFER_OFFSET, _BUFFER_SIZE = 0, 1, 2


def tflite_with_contract(flatbuffer: bytes, contract: ModelContract,
                         convention: dict | None = None, where: str = "LiteRT model") -> bytes:
    """`flatbuffer` (a .tflite file's bytes) with the record of `contract` added as the
    metadata entry TFLITE_METADATA. Needs TensorFlow (its flatbuffer_utils)."""
    import numpy as np

    from digitkit.environment import import_tensorflow

    import_tensorflow("writing a LiteRT copy's metadata")
    from tensorflow.lite.python import schema_py_generated as schema_fb
    from tensorflow.lite.tools import flatbuffer_utils

    text = json.dumps(embedded_record(contract, convention), separators=(",", ":"))
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(flatbuffer))
    entries = list(model.metadata or [])
    if any(_text(m.name) == TFLITE_METADATA for m in entries):
        raise ModelError(f"{where}: already carries a {TFLITE_METADATA} metadata entry")
    buffer = schema_fb.BufferT()
    buffer.data = np.frombuffer(text.encode("utf-8"), np.uint8)
    model.buffers = [*(model.buffers or []), buffer]
    entry = schema_fb.MetadataT()
    entry.name = TFLITE_METADATA
    entry.buffer = len(model.buffers) - 1
    model.metadata = [*entries, entry]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def write_tflite_contract(path: str | os.PathLike, contract: ModelContract,
                          convention: dict | None = None) -> None:
    """Record `contract` in the .tflite file at `path` (rewritten in place). Needs TensorFlow."""
    p = Path(path)
    p.write_bytes(tflite_with_contract(p.read_bytes(), contract, convention, str(p)))


def tflite_metadata(path: str | os.PathLike) -> dict[str, bytes]:
    """Every metadata entry of a .tflite file, {name: bytes}, read without TensorFlow.
    ModelError when the file is no LiteRT flatbuffer or its tables point outside it."""
    import mmap

    p = Path(path)
    try:
        with open(p, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return _FlatReader(data, p).metadata()
    except (OSError, ValueError) as err:  # ValueError: mmap of an empty file
        raise ModelError(f"{p}: cannot read as a LiteRT model ({err})") from err


def read_tflite_record(path: str | os.PathLike) -> dict | None:
    """The record a .tflite file carries in its TFLITE_METADATA entry, or None."""
    raw = tflite_metadata(path).get(TFLITE_METADATA)
    if raw is None:
        return None
    if len(raw) > MAX_RECORD:
        raise ModelError(f"{path}: {TFLITE_METADATA} metadata too large")
    try:
        record = json.loads(raw.decode("utf-8"))
    except ValueError as err:
        raise ModelError(f"{path}: unreadable digitkit contract record ({err})") from err
    if not isinstance(record, dict) or not isinstance(record.get("model"), dict):
        raise ModelError(f"{path}: digitkit contract record is not an object with a model")
    return record


def read_tflite_contract(path: str | os.PathLike) -> ModelContract | None:
    """The contract a .tflite file carries (None: it carries none)."""
    record = read_tflite_record(path)
    return None if record is None else contract_from_record(record["model"], str(path))


def _text(name) -> str | None:
    return name.decode("utf-8", "replace") if isinstance(name, bytes) else name


class _FlatReader:
    """The few FlatBuffer reads the metadata takes: tables, vectors, strings, scalars, each
    checked against the file's size (a hostile file gets a ModelError, never a crash)."""

    def __init__(self, data, path: Path):
        self.data, self.path, self.size = data, path, len(data)

    def _bad(self, why: str) -> ModelError:
        return ModelError(f"{self.path}: not a LiteRT model ({why})")

    def _u(self, fmt: str, at: int) -> int:
        import struct

        n = struct.calcsize(fmt)
        if at < 0 or at + n > self.size:
            raise self._bad("a table points outside the file")
        return struct.unpack_from(fmt, self.data, at)[0]

    def _field(self, table: int, index: int) -> int | None:
        """The position of field `index` of the table at `table`, None when absent."""
        vtable = table - self._u("<i", table)
        vt_size = self._u("<H", vtable)
        slot = 4 + 2 * index
        if slot + 2 > vt_size:
            return None
        offset = self._u("<H", vtable + slot)
        return table + offset if offset else None

    def _deref(self, at: int) -> int:
        return at + self._u("<I", at)

    def _vector(self, table: int, index: int) -> tuple[int, int]:
        """(start of the elements, count) of a vector field; (0, 0) when absent."""
        at = self._field(table, index)
        if at is None:
            return 0, 0
        vec = self._deref(at)
        return vec + 4, self._u("<I", vec)

    def _bytes(self, start: int, count: int) -> bytes:
        if start < 0 or start + count > self.size:
            raise self._bad("a vector runs past the end of the file")
        return bytes(self.data[start:start + count])

    def metadata(self) -> dict[str, bytes]:
        if self.size < 8 or bytes(self.data[4:8]) != _TFLITE_IDENTIFIER:
            raise self._bad(f"no {_TFLITE_IDENTIFIER.decode()} file identifier")
        root = self._deref(0)
        buffers, n_buffers = self._vector(root, _MODEL_BUFFERS)
        entries, n_entries = self._vector(root, _MODEL_METADATA)
        found = {}
        for i in range(n_entries):
            entry = self._deref(entries + 4 * i)
            name_at = self._field(entry, _METADATA_NAME)
            if name_at is None:
                continue
            start = self._deref(name_at)
            name = self._bytes(start + 4, self._u("<I", start)).decode("utf-8", "replace")
            buffer_at = self._field(entry, _METADATA_BUFFER)
            index = 0 if buffer_at is None else self._u("<I", buffer_at)
            if index >= n_buffers:
                raise self._bad(f"metadata {name!r} names buffer {index} of {n_buffers}")
            found[name] = self._buffer(self._deref(buffers + 4 * index))
        return found

    def _buffer(self, table: int) -> bytes:
        start, count = self._vector(table, _BUFFER_DATA)
        if count:
            return self._bytes(start, count)
        offset_at = self._field(table, _BUFFER_OFFSET)
        size_at = self._field(table, _BUFFER_SIZE)
        if offset_at is None or size_at is None:
            return b""
        # A file over 2 GB keeps buffers past the flatbuffer, at offsets from its start.
        return self._bytes(self._u("<Q", offset_at), self._u("<Q", size_at))


__all__ = ["H5_ATTRIBUTE", "KERAS_MEMBER", "SAVEDMODEL_ASSET", "TFLITE_METADATA",
           "embedded_record", "read_contract", "read_record", "read_tflite_contract",
           "read_tflite_record", "tflite_metadata", "tflite_with_contract", "write_contract",
           "write_tflite_contract"]
