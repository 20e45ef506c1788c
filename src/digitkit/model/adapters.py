"""Adapters: a model made elsewhere, made to honour its contract.

The contract (digitkit.model.contract.ModelContract, the convention's `contract`; for digits:
input "pixels" float32 (N, 28, 28) raw 0..255 white-on-black; output "probabilities" float32
(N, 10)). An adapter puts the source's input
convention (digitkit.model.conventions) in front of the source and a softmax behind it when
the source outputs logits, as graph ops, so every copy made from the adapted model (SavedModel,
ONNX, int8) is run on raw pixels like digitkit's own models and nobody has to remember the
source's preprocessing:

  wrap_keras(model, convention)      a new Keras model of built-in layers only (Rescaling,
                                     per channel where the convention is; a frozen 1x1 Dense
                                     permutation for BGR; UnitNormalization, Permute, Reshape,
                                     Softmax) around the source: it converts with tf2onnx and
                                     reloads under safe_mode
  adapted_function(call, convention) the same as a tf.function serving signature around any
                                     TensorFlow callable (a SavedModel's signature)
  adapt_onnx(proto, convention)      ONNX nodes prepended to a foreign ONNX graph (its own
                                     opset, input name and batch dimension kept: Sub/Div/Mul
                                     per channel, Gather for BGR, Transpose for NCHW, Reshape),
                                     a Softmax appended; the convention recorded in
                                     metadata_props, and a general contract with it

Each is checked against `InputConvention.apply` (numpy), the reference. TensorFlow and onnx
are imported inside the functions that need them.
"""

from __future__ import annotations

import json

import numpy as np

from digitkit.errors import ModelError, one_line
from digitkit.model.contract import ADAPTER_KEY, CONVENTION_KEY  # noqa: F401  (re-exported)
from digitkit.model.conventions import (
    BGR,
    BLACK_ON_WHITE,
    CAFFE_MEAN,
    LOGITS,
    InputConvention,
    fits_layout,
)

#: metadata_props keys an adapted ONNX model carries (values are strings); the first two are
#: defined beside the contract's own keys (model.contract), which model.onnx_ends reads too.
SOURCE_INPUT_KEY, SOURCE_OUTPUT_KEY = "source_input_name", "source_output_name"
#: The oldest opset adapt_onnx writes: Max broadcasts from opset 8 on.
MIN_ONNX_OPSET = 8
#: The L2 zero guard in ONNX: dividing by max(norm, the smallest normal float32) gives exactly
#: keras.utils.normalize's "a zero norm divides by 1" (0/tiny and 0/1 are both 0), with no
#: Equal op (Equal takes floats only from opset 11).
_TINY = float(np.finfo(np.float32).tiny)


def adapter_description(convention: InputConvention) -> str:
    """One line for metadata and manifests."""
    contract = convention.contract
    return (f"digitkit adapter: {contract.input_text()} -> the source's input "
            f"{convention.describe(full=True)} -> {contract.output_text()}")


# ------------------------------------------------------------------------------- Keras


def wrap_keras(model, convention: InputConvention):
    """A Keras model honouring the contract around `model` (loaded with
    load_keras_model(..., check_contract=False)) trained on `convention`."""
    from digitkit.model.loading import import_tensorflow

    import_tensorflow("adapting a Keras model")
    import keras
    from keras import layers

    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ModelError(f"{model.name}: expected one input and one output, got "
                         f"{len(model.inputs)} and {len(model.outputs)}")
    contract = convention.contract
    contract.check_classes(model.name, tuple(model.outputs[0].shape))
    taken = {model.name}

    def name(base: str) -> str:  # outer layer names must not clash with the source's name
        n = base
        while n in taken:
            n += "_"
        taken.add(n)
        return n

    pixels = keras.Input(shape=contract.input_shape, dtype="float32",
                         name=name(contract.input_name))
    x = pixels
    c = convention
    if c.ink == BLACK_ON_WHITE:
        x = layers.Rescaling(-1.0, offset=255.0, name=name("adapter_ink"))(x)
    if c.scale == "unit":
        x = layers.Rescaling(1.0 / 255, name=name("adapter_scale"))(x)
    elif c.scale == "standardized":
        # (x/255 - mean)/std as one affine map: x * 1/(255 std) - mean/std (per channel: a
        # list of C scales and offsets, broadcast over the last axis)
        if isinstance(c.mean, tuple):
            scale = [1.0 / (255 * s) for s in c.std]
            offset = [-m / s for m, s in zip(c.mean, c.std, strict=True)]
        else:
            scale, offset = 1.0 / (255 * c.std), -c.mean / c.std
        x = layers.Rescaling(scale, offset=offset, name=name("adapter_standardize"))(x)
    elif c.scale == "l2":
        # keras.utils.normalize's L2 over the same axis of (N, H, W); its epsilon (1e-12
        # on the squared norm) only matters for an all-zero slice, which stays 0 either way.
        x = layers.UnitNormalization(axis=c.l2_axis, name=name("adapter_l2"))(x)
    elif c.scale == "tf":
        x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name=name("adapter_tf"))(x)
    elif c.scale == "caffe":
        x = layers.Rescaling(1.0, offset=[-m for m in CAFFE_MEAN], name=name("adapter_caffe"))(x)
    if c.channel_order == BGR:
        # No built-in layer reverses one axis; a frozen 1x1 Dense with a permutation matrix
        # does, exactly (each output is one input times 1 plus zeros).
        flip = layers.Dense(contract.channels, use_bias=False, trainable=False,
                            name=name("adapter_bgr"))
        x = flip(x)
        flip.set_weights([np.eye(contract.channels, dtype=np.float32)[::-1]])
    if c.layout != contract.layout:
        if contract.layout == "NHWC" and c.layout == "NCHW":
            x = layers.Permute((3, 1, 2), name=name("adapter_layout"))(x)
        else:
            x = layers.Reshape(c.input_shape, name=name("adapter_layout"))(x)
    y = model(x)
    if c.outputs == LOGITS:
        y = layers.Softmax(name=name(contract.output_name))(y)
    else:
        y = layers.Identity(name=name(contract.output_name))(y)
    return keras.Model(pixels, y, name=name(f"{model.name}_adapted"))


def tf_apply(pixels, convention: InputConvention):
    """The convention as TensorFlow ops on the contract's float32 pixels, in the numpy
    reference's order (255-x, /255, -mean, /std per channel, L2 with a zero norm read as 1,
    x/127.5-1, -caffe mean, channels reversed, transpose or reshape)."""
    import tensorflow as tf

    c = convention
    x = pixels
    if c.ink == BLACK_ON_WHITE:
        x = 255.0 - x
    if c.scale == "unit":
        x = x / 255.0
    elif c.scale == "standardized":
        x = (x / 255.0 - tf.constant(c.mean, tf.float32)) / tf.constant(c.std, tf.float32)
    elif c.scale == "l2":
        norm = tf.sqrt(tf.reduce_sum(tf.square(x), axis=c.l2_axis, keepdims=True))
        x = x / tf.where(norm == 0.0, tf.ones_like(norm), norm)
    elif c.scale == "tf":
        x = x / 127.5 - 1.0
    elif c.scale == "caffe":
        x = x - tf.constant(CAFFE_MEAN, tf.float32)
    if c.channel_order == BGR:
        x = tf.reverse(x, axis=[-1])
    if c.layout != c.contract.layout:
        if c.contract.layout == "NHWC" and c.layout == "NCHW":
            x = tf.transpose(x, (0, 3, 1, 2))
        else:
            x = tf.reshape(x, (-1, *c.input_shape))
    return x


def adapted_function(source, convention: InputConvention):
    """A serving tf.function with the contract's signature, {output name: probabilities},
    around `source`: a digitkit.model.loading.SavedModelSignature (its one output), a Keras
    model, or any TensorFlow callable from the source's input to its output."""
    from digitkit.model.loading import SavedModelSignature, import_tensorflow

    tf = import_tensorflow("adapting a TensorFlow model")
    call = source
    if isinstance(source, SavedModelSignature):
        if len(source.output_names) != 1:
            raise ModelError(f"{source.path}: serving signature has outputs "
                             f"{source.output_names}, expected one")

        def call(x):
            return source.fn(**{source.input_name: x})[source.output_names[0]]

    contract = convention.contract

    @tf.function(input_signature=[tf.TensorSpec((None, *contract.input_shape), tf.float32,
                                                name=contract.input_name)])
    def serve(pixels):
        y = call(tf_apply(pixels, convention))
        y = tf.cast(y, tf.float32)
        return {contract.output_name: tf.nn.softmax(y, axis=-1)
                if convention.outputs == LOGITS else y}

    return serve


# ------------------------------------------------------------------------------- ONNX


def _graph_names(graph, names: set) -> set:
    for n in graph.node:
        names.update(n.input)
        names.update(n.output)
        for a in n.attribute:
            for g in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                _graph_names(g, names)
    for seq in (graph.input, graph.output, graph.value_info, graph.initializer):
        names.update(v.name for v in seq)
    return names


def _rename(graph, old: str, new: str) -> None:
    """Rename a tensor everywhere in a graph and its subgraphs."""
    for n in graph.node:
        for seq in (n.input, n.output):
            for i, v in enumerate(seq):
                if v == old:
                    seq[i] = new
        for a in n.attribute:
            for g in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                _rename(g, old, new)
    for seq in (graph.input, graph.output, graph.value_info, graph.initializer):
        for v in seq:
            if v.name == old:
                v.name = new


def _copies(messages) -> list:
    """Detached copies of protobuf messages, to put back after their container is cleared."""
    out = []
    for m in messages:
        c = type(m)()
        c.CopyFrom(m)
        out.append(c)
    return out


def _dims(value_info) -> list:
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
            for d in value_info.type.tensor_type.shape.dim]


def _default_opset(proto) -> int:
    for o in proto.opset_import:
        if o.domain in ("", "ai.onnx"):
            return int(o.version)
    raise ModelError(f"{proto.graph.name or 'ONNX model'}: imports no default ONNX opset")


class _Nodes:
    """Adapter nodes under one name prefix (unique names, constants as Constant nodes so that
    no initializer has to be listed as a graph input in old IR versions)."""

    def __init__(self, prefix: str):
        self.prefix, self.nodes = prefix, []

    def add(self, op: str, inputs: list, out: str | None = None, **attrs) -> str:
        from onnx import helper

        n = len(self.nodes) + 1
        out = out or f"{self.prefix}{op.lower()}_{n}"
        self.nodes.append(helper.make_node(op, inputs, [out], name=f"{self.prefix}{op}_{n}",
                                           **attrs))
        return out

    def const(self, value, dtype=np.float32) -> str:
        from onnx import numpy_helper

        return self.add("Constant", [], value=numpy_helper.from_array(np.asarray(value, dtype)))


def _input_nodes(w: _Nodes, c: InputConvention, opset: int, in_type: int, out: str) -> None:
    """The contract's input ("pixels") -> the source's input `out`, in the numpy reference's
    order."""
    from onnx import TensorProto

    x = c.contract.input_name
    if c.ink == BLACK_ON_WHITE:
        x = w.add("Sub", [w.const(255.0), x])
    if c.scale in ("unit", "standardized"):
        x = w.add("Div", [x, w.const(255.0)])
    if c.scale == "standardized":  # a per-channel (C,) constant broadcasts over NHWC
        x = w.add("Div", [w.add("Sub", [x, w.const(c.mean)]), w.const(c.std)])
    elif c.scale == "tf":
        x = w.add("Sub", [w.add("Div", [x, w.const(127.5)]), w.const(1.0)])
    elif c.scale == "caffe":
        x = w.add("Sub", [x, w.const(CAFFE_MEAN)])
    elif c.scale == "l2":
        axis = 2 if c.l2_axis == -1 else 1  # of (N, H, W)
        if opset >= 18:  # ReduceL2 takes its axes as an input from opset 18 on
            norm = w.add("ReduceL2", [x, w.const([axis], np.int64)], keepdims=1)
        else:
            norm = w.add("ReduceL2", [x], axes=[axis], keepdims=1)
        x = w.add("Div", [x, w.add("Max", [norm, w.const(_TINY)])])
    if c.channel_order == BGR:  # the last axis of (N, H, W, C), reversed
        x = w.add("Gather", [x, w.const(list(range(c.contract.channels))[::-1], np.int64)],
                  axis=3)
    if c.layout != c.contract.layout:
        if c.contract.layout == "NHWC" and c.layout == "NCHW":
            x = w.add("Transpose", [x], perm=[0, 3, 1, 2])
        else:
            x = w.add("Reshape", [x, w.const([-1, *c.input_shape], np.int64)])
    if in_type != TensorProto.FLOAT:
        x = w.add("Cast", [x], to=in_type)
    w.add("Identity", [x], out=out)


def _output_nodes(w: _Nodes, c: InputConvention, out_type: int, src_out: str) -> None:
    """The source's output -> the contract's output ("probabilities": float32; a Softmax for
    logits)."""
    from onnx import TensorProto

    out = c.contract.output_name
    y = src_out
    if out_type != TensorProto.FLOAT:
        y = w.add("Cast", [y], to=TensorProto.FLOAT)
    if c.outputs == LOGITS:
        # axis 1 of (N, K): the same before opset 13 (2-D coercion) and after
        w.add("Softmax", [y], out=out, axis=1)
    else:
        w.add("Identity", [y], out=out)


def adapt_onnx(proto, convention: InputConvention, name: str | None = None):
    """A copy of a foreign ONNX model (an onnx.ModelProto; `name` for messages) honouring the
    convention's contract: `convention` as nodes before its graph in the source's own opset, a
    Softmax after it for logits, its input and output now the contract's ("pixels", its batch
    dimension, dynamic or static, kept; "probabilities"), the convention in metadata_props;
    onnx.checker(full_check)."""
    import onnx
    from onnx import TensorProto, helper

    contract = convention.contract
    src = proto
    proto = onnx.ModelProto()
    proto.CopyFrom(src)
    g = proto.graph
    name = name or g.name or "ONNX model"
    if onnx_convention(src) is not None:
        raise ModelError(f"{name}: already adapted by digitkit ({CONVENTION_KEY} in its "
                         "metadata); it honours the contract as it is")
    opset = _default_opset(proto)
    if opset < MIN_ONNX_OPSET:
        raise ModelError(f"{name}: opset {opset} is older than {MIN_ONNX_OPSET}, the oldest the "
                         "adapter writes; re-export the model at a newer opset")
    inits = {i.name for i in g.initializer}
    inputs = [i for i in g.input if i.name not in inits]
    if len(inputs) != 1 or len(g.output) != 1:
        raise ModelError(f"{name}: expected one input and one output, got {len(inputs)} "
                         f"({', '.join(i.name for i in inputs)}) and {len(g.output)}")
    in_dims, out_dims = _dims(inputs[0]), _dims(g.output[0])
    want = convention.input_shape
    if not fits_layout(in_dims, convention.layout, contract):
        raise ModelError(f"{name}: input {inputs[0].name!r} {in_dims} does not fit the "
                         f"convention's layout {convention.layout} (N, {want})")
    contract.check_classes(name, out_dims)
    in_type = inputs[0].type.tensor_type.elem_type
    if in_type not in (TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16):
        raise ModelError(f"{name}: input {inputs[0].name!r} is not a float tensor")

    used = _graph_names(g, set())
    for reserved in (contract.input_name, contract.output_name):  # free them for the contract
        if reserved in used:
            fresh = reserved
            while fresh in used:
                fresh = f"source/{fresh}"
            _rename(g, reserved, fresh)
            used.add(fresh)
    src_in = next(i for i in g.input if i.name not in inits)
    src_in_name, src_out_name = src_in.name, g.output[0].name
    prefix = "digitkit_adapter/"
    while any(n.startswith(prefix) for n in used):
        prefix = "_" + prefix
    pre, post = _Nodes(prefix), _Nodes(f"{prefix}out_")
    _input_nodes(pre, convention, opset, in_type, src_in_name)
    _output_nodes(post, convention, g.output[0].type.tensor_type.elem_type, src_out_name)

    batch_in, batch_out = in_dims[0], out_dims[0] if out_dims else None
    new_in = helper.make_tensor_value_info(contract.input_name, TensorProto.FLOAT,
                                           [batch_in or "batch", *contract.input_shape])
    new_out = helper.make_tensor_value_info(contract.output_name, TensorProto.FLOAT,
                                            [batch_out or batch_in or "batch",
                                             contract.num_classes])
    g.value_info.extend([src_in, g.output[0]])  # the source's ends, now inner tensors
    kept = _copies(i for i in g.input if i.name != src_in_name)  # initializers (IR < 4)
    body = _copies(g.node)
    del g.input[:], g.output[:], g.node[:]
    g.input.extend([new_in, *kept])
    g.output.append(new_out)
    g.node.extend([*pre.nodes, *body, *post.nodes])

    props = {p.key: p.value for p in proto.metadata_props}
    c = convention
    if not contract.is_digit:  # a general contract travels with the copy (digits: implied)
        props.update(contract.onnx_metadata())
    props.update({CONVENTION_KEY: json.dumps(c.to_dict()), ADAPTER_KEY: adapter_description(c),
                  SOURCE_INPUT_KEY: src_in_name, SOURCE_OUTPUT_KEY: src_out_name})
    helper.set_model_props(proto, props)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as err:  # noqa: BLE001 - the checker raises several types
        raise ModelError(f"{name}: the adapted graph fails onnx.checker ({one_line(err)})") from err
    return proto


def onnx_convention(proto) -> InputConvention | None:
    """The source convention an adapted ONNX model records (None: not adapted by digitkit),
    under the contract its metadata records (a digit contract when it records none). A model
    carrying it already honours the contract and must not be adapted again."""
    from digitkit.model.contract import DIGIT_CONTRACT, contract_from_metadata

    props = {p.key: p.value for p in proto.metadata_props}
    if CONVENTION_KEY not in props:
        return None
    contract = contract_from_metadata(props, proto.graph.name or "ONNX model") or DIGIT_CONTRACT
    try:
        record = json.loads(props[CONVENTION_KEY])
    except ValueError as err:
        raise ModelError(f"{CONVENTION_KEY} metadata is not valid JSON") from err
    return InputConvention.from_dict(record, contract)
