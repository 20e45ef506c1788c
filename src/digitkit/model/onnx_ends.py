"""Whether an .onnx file honours digitkit's contract, read from its bytes without the onnx
package.

Every `infer`, `bench` and `view` of an .onnx file first asks whether it is digitkit's own
(predictors.adapted.contract_status). Importing `onnx` to answer (with protobuf and
ml_dtypes) costs the main process more CPU than the rest of its start-up; for digitkit's own
models the answer needs a few fields of the protobuf wire format: the graph's inputs
(less its initializers), their shapes, its output names, and the metadata keys.

`honours_contract` answers True only when it has proved, field by field, exactly what
`contract_status` would conclude as CONTRACT through `onnx.load`; everything else (an adapted
model carrying its convention, a foreign model, any encoding it does not follow to the letter:
repeated singular fields, groups, undecodable names, a damaged file) gives None, and the
caller takes the onnx path, with its answers and its error messages, as before.

`read_ends` / `read_metadata` read the same way the metadata_props and the graph's ends: the
contract a general classifier's copy records there (issue 18) is read from them when a
command opens it (`digitkit.predictors.runnable.model_contract`), again without onnx.
"""

from __future__ import annotations

import mmap
import os

from digitkit.model.contract import CONVENTION_KEY, INPUT_NAME, OUTPUT_NAME
from digitkit.model.conventions import fits_layout

_CONVENTION_KEY = CONVENTION_KEY.encode()
_VARINT, _LEN = 0, 2
# Field numbers of onnx.proto (onnx/onnx.proto3 of onnx 1.x; they never change meaning).
_MODEL_GRAPH, _MODEL_METADATA = 7, 14
_GRAPH_INITIALIZER, _GRAPH_INPUT, _GRAPH_OUTPUT = 5, 11, 12
_TENSOR_NAME = 8
_VALUE_NAME, _VALUE_TYPE = 1, 2
_TYPE_TENSOR, _TYPE_DENOTATION = 1, 6
_TENSOR_ELEM_TYPE, _TENSOR_SHAPE = 1, 2
_SHAPE_DIM = 1
_DIM_VALUE, _DIM_PARAM, _DIM_DENOTATION = 1, 2, 3
_ENTRY_KEY, _ENTRY_VALUE = 1, 2
_GRAPH_NODE, _NODE_OP_TYPE = 1, 4


class _Unsure(Exception):
    """The bytes are not what this reader follows: let the onnx package decide."""


def honours_contract(path: str | os.PathLike) -> bool | None:
    """True when the .onnx file at `path` is digitkit's contract model (one graph input named
    INPUT_NAME of an (N, 28, 28) shape, an output named OUTPUT_NAME, no adapter metadata);
    None when this reader cannot say (see the module docstring)."""
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            return _contract(buf) or None
    except (OSError, ValueError, _Unsure):  # ValueError: an empty file cannot be mapped
        return None


def op_types(path: str | os.PathLike) -> set[str] | None:
    """The op types of the main graph's nodes (what `onnx.load(path).graph.node` would give),
    read from the bytes without the onnx package; None when this reader cannot say (the
    caller then asks onnx)."""
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            graph = None
            for field, wire, a, b in _fields(buf, 0, len(buf)):
                if field == _MODEL_GRAPH:
                    _need(wire == _LEN and graph is None)
                    graph = (a, b)
            _need(graph is not None)
            ops = set()
            for field, wire, a, b in _fields(buf, *graph):
                if field == _GRAPH_NODE:
                    _need(wire == _LEN)
                    ops.add(_singular_string(buf, a, b, _NODE_OP_TYPE))
            return ops
    except (OSError, ValueError, _Unsure):
        return None


def read_ends(path: str | os.PathLike) -> OnnxEnds | None:
    """The metadata_props and graph ends of the .onnx file at `path`, read from its bytes
    (no onnx import); None when this reader cannot follow them (the caller then asks the
    onnx package, or treats the file as recording nothing)."""
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            return _ends(buf)
    except (OSError, ValueError, _Unsure):
        return None


def read_metadata(path: str | os.PathLike) -> dict[str, str] | None:
    """The metadata_props of the .onnx file at `path` as {key: value} (what
    `digitkit.model.contract.contract_from_metadata` reads a contract from); None when the
    bytes are not what this reader follows."""
    ends = read_ends(path)
    return None if ends is None else ends.metadata


class OnnxEnds:
    """What a graph shows from outside: metadata_props, its inputs (initializers left out)
    and outputs as (name, dims), dims as onnx gives them (None: no dim_value)."""

    __slots__ = ("metadata", "inputs", "outputs")

    def __init__(self, metadata: dict, inputs: list, outputs: list):
        self.metadata, self.inputs, self.outputs = metadata, inputs, outputs


def _ends(buf) -> OnnxEnds:
    graph, metadata = None, {}
    for field, wire, a, b in _fields(buf, 0, len(buf)):
        if field == _MODEL_GRAPH:
            _need(wire == _LEN and graph is None)
            graph = (a, b)
        elif field == _MODEL_METADATA:
            _need(wire == _LEN)
            key = _singular_string(buf, a, b, _ENTRY_KEY)
            metadata[key] = _singular_string(buf, a, b, _ENTRY_VALUE)
    _need(graph is not None)
    initializers, inputs, outputs = set(), [], []
    for field, wire, a, b in _fields(buf, *graph):
        if field == _GRAPH_INITIALIZER:
            _need(wire == _LEN)
            initializers.add(_singular_string(buf, a, b, _TENSOR_NAME))
        elif field in (_GRAPH_INPUT, _GRAPH_OUTPUT):
            _need(wire == _LEN)
            (inputs if field == _GRAPH_INPUT else outputs).append(_value_info(buf, a, b))
    return OnnxEnds(metadata, [(n, d) for n, d in inputs if n not in initializers], outputs)


def _contract(buf) -> bool:
    graph = None
    for field, wire, a, b in _fields(buf, 0, len(buf)):
        if field == _MODEL_GRAPH:
            _need(wire == _LEN and graph is None)
            graph = (a, b)
        elif field == _MODEL_METADATA:
            _need(wire == _LEN)
            for f2, w2, c, d in _fields(buf, a, b):
                if f2 == _ENTRY_KEY:
                    _need(w2 == _LEN)
                    if buf[c:d] == _CONVENTION_KEY:
                        return False  # an adapted copy: the onnx path reads its convention
    _need(graph is not None)
    initializers, inputs, outputs = set(), [], []
    for field, wire, a, b in _fields(buf, *graph):
        if field == _GRAPH_INITIALIZER:
            _need(wire == _LEN)
            initializers.add(_singular_string(buf, a, b, _TENSOR_NAME))
        elif field in (_GRAPH_INPUT, _GRAPH_OUTPUT):
            _need(wire == _LEN)
            (inputs if field == _GRAPH_INPUT else outputs).append(_value_info(buf, a, b))
    inputs = [(name, dims) for name, dims in inputs if name not in initializers]
    return (len(inputs) == 1 and inputs[0][0] == INPUT_NAME
            and OUTPUT_NAME in [name for name, _ in outputs]
            and fits_layout(inputs[0][1], "NHW"))


def _value_info(buf, a: int, b: int) -> tuple[str, tuple]:
    """(name, dims) of a ValueInfoProto; dims as onnx gives them (None: no dim_value)."""
    name, typ = "", None
    for field, wire, c, d in _fields(buf, a, b):
        if field == _VALUE_NAME:
            _need(wire == _LEN and not name)
            name = _text(buf, c, d)
        elif field == _VALUE_TYPE:
            _need(wire == _LEN and typ is None)
            typ = (c, d)
    tensor = None
    for field, wire, c, d in _fields(buf, *typ) if typ else ():
        _need(field in (_TYPE_TENSOR, _TYPE_DENOTATION) and wire == _LEN)  # other kinds: unsure
        if field == _TYPE_TENSOR:
            _need(tensor is None)
            tensor = (c, d)
    shape = None
    for field, wire, c, d in _fields(buf, *tensor) if tensor else ():
        if field == _TENSOR_SHAPE:
            _need(wire == _LEN and shape is None)
            shape = (c, d)
    dims = []
    for field, wire, c, d in _fields(buf, *shape) if shape else ():
        if field == _SHAPE_DIM:
            _need(wire == _LEN)
            dims.append(_dim(buf, c, d))
    return name, tuple(dims)


def _dim(buf, a: int, b: int) -> int | None:
    value, kinds = None, 0
    for field, wire, c, _ in _fields(buf, a, b):
        if field == _DIM_VALUE:
            _need(wire == _VARINT)
            value = c - (1 << 64) if c >= 1 << 63 else c  # int64, two's complement
        if field in (_DIM_VALUE, _DIM_PARAM):
            kinds += 1
    _need(kinds <= 1)  # a oneof set twice: the last wins, which this reader does not track
    return value


def _singular_string(buf, a: int, b: int, number: int) -> str:
    found = None
    for field, wire, c, d in _fields(buf, a, b):
        if field == number:
            _need(wire == _LEN and found is None)
            found = _text(buf, c, d)
    return found or ""


def _text(buf, a: int, b: int) -> str:
    try:
        return buf[a:b].decode("utf-8")
    except UnicodeDecodeError:
        raise _Unsure from None


def _fields(buf, i: int, end: int):
    """(field number, wire type, a, b) of each field in buf[i:end]: a varint's value in a,
    a length-delimited field's bounds in a:b; fixed-size fields are skipped over."""
    while i < end:
        key, i = _varint(buf, i, end)
        field, wire = key >> 3, key & 7
        if wire == _VARINT:
            value, i = _varint(buf, i, end)
            yield field, wire, value, None
            continue
        if wire == _LEN:
            n, i = _varint(buf, i, end)
            _need(i + n <= end)
            yield field, wire, i, i + n
            i += n
        elif wire in (1, 5):  # fixed64, fixed32
            i += 8 if wire == 1 else 4
            _need(i <= end)
        else:
            raise _Unsure  # groups (deprecated) or no wire type at all


def _varint(buf, i: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        _need(i < end and shift < 70)
        byte = buf[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, i
        shift += 7


def _need(ok: bool) -> None:
    if not ok:
        raise _Unsure
