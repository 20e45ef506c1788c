"""digitkit.model.adapters: an adapted copy of a foreign model, fed raw pixels, reproduces the
source model run under its own convention (InputConvention.apply, numpy) on real MNIST images:
Keras wraps through tf2onnx, and ONNX graphs with nodes prepended."""

from __future__ import annotations

import numpy as np
import pytest

from _foreign_models import (
    FIXTURES,
    KERAS_DETECTABLE,
    LEGACY_H5,
    ONNX_INPUT_NAME,
    write_nchw_onnx,
)
from digitkit.errors import ModelError
from digitkit.model.adapters import (
    ADAPTER_KEY,
    SOURCE_INPUT_KEY,
    adapt_onnx,
    adapted_function,
    onnx_convention,
    wrap_keras,
)
from digitkit.model.contract import INPUT_NAME, OUTPUT_NAME
from digitkit.model.conventions import LOGITS, InputConvention, candidates
from digitkit.model.detect import predict_under

#: What "reproduces" means: float32 rounding of the same maths in another order (measured
#: max |diff| 2e-7 for ONNX nodes, 8e-6 for the Keras layers of a saturating convention).
ATOL = 2e-5


@pytest.fixture(scope="module")
def pixels(mnist_test):
    """2,000 real test images, raw float32 0..255 (the contract's input)."""
    return mnist_test[0][::5].astype(np.float32)


@pytest.fixture(scope="module")
def edges(pixels):
    """300 real images and the edge inputs export validation feeds every copy: all black
    (every L2 norm zero) and all white."""
    blank = np.zeros((2, 28, 28), np.float32)
    return np.concatenate([pixels[:300], blank, blank + 255])


def _same(got, ref):
    assert got.shape == ref.shape and got.dtype == np.float32
    assert np.abs(got - ref).max() < ATOL
    np.testing.assert_array_equal(got.argmax(1), ref.argmax(1))


def _ort_run(proto, pixels):
    import tempfile
    from pathlib import Path

    from digitkit.predictors.ort import open_session

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "adapted.onnx"
        path.write_bytes(proto.SerializeToString())
        session = open_session(path)
        assert [i.name for i in session.get_inputs()] == [INPUT_NAME]
        assert [o.name for o in session.get_outputs()] == [OUTPUT_NAME]
        return session.run([OUTPUT_NAME], {INPUT_NAME: pixels})[0]


# ------------------------------------------------------------------------------- ONNX


@pytest.mark.parametrize("opset", [9, 13, 18])
def test_adapt_onnx_every_convention(zoo, edges, opset, tmp_path):
    """Every candidate convention of an NCHW model (ReduceL2 takes its axes as an attribute
    before opset 18 and as an input from 18), with the source's input name and batch kept."""
    import onnx

    from digitkit.model.foreign import onnx_source
    from digitkit.predictors.ort import open_session

    path = write_nchw_onnx(tmp_path / f"nchw{opset}.onnx", zoo.nchw_weights(), opset=opset)
    source = onnx_source(open_session(path), path.name)
    proto = onnx.load(str(path))
    for conv in candidates(source.input_shape, outputs=LOGITS):
        adapted = adapt_onnx(proto, conv)
        _same(_ort_run(adapted, edges), predict_under(source, conv, edges))
    assert adapted.opset_import[0].version == opset
    dims = adapted.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch_size" and [d.dim_value for d in dims[1:]] == [28, 28]
    props = {p.key: p.value for p in adapted.metadata_props}
    assert props[SOURCE_INPUT_KEY] == ONNX_INPUT_NAME and "digitkit adapter" in props[ADAPTER_KEY]
    assert onnx_convention(adapted) == conv and onnx_convention(proto) is None
    with pytest.raises(ModelError, match="already adapted"):
        adapt_onnx(adapted, conv)
    assert proto.graph.input[0].name == ONNX_INPUT_NAME  # the source proto is untouched


def test_adapted_onnx_reproduces_the_source(zoo, pixels, mnist_test):
    """The NCHW fixture under its detected convention, on 2,000 real images."""
    import onnx

    from digitkit.model.detect import detect_convention

    source = zoo.source("nchw-onnx-unit")
    conv = detect_convention(source, *mnist_test).convention
    assert conv == FIXTURES["nchw-onnx-unit"][1]
    adapted = adapt_onnx(onnx.load(str(zoo.path("nchw-onnx-unit"))), conv)
    got = _ort_run(adapted, pixels)
    _same(got, predict_under(source, conv, pixels))
    np.testing.assert_allclose(got.sum(1), 1, rtol=1e-5)  # the Softmax was appended


def test_adapt_onnx_static_batch_and_clashing_names(zoo, pixels, tmp_path):
    """A batch-1 export whose input is already called "pixels" and whose output is called
    "probabilities" (but wants x/255 and outputs logits) is adapted without a name clash."""
    import onnx

    from digitkit.model.foreign import onnx_source
    from digitkit.predictors.ort import open_session

    path = write_nchw_onnx(tmp_path / "clash.onnx", zoo.nchw_weights(), batch=1,
                           input_name=INPUT_NAME)
    proto = onnx.load(str(path))
    proto.graph.node[-1].output[0] = OUTPUT_NAME
    proto.graph.output[0].name = OUTPUT_NAME
    onnx.save(proto, str(path))
    source = onnx_source(open_session(path), path.name)
    conv = InputConvention(layout="NCHW", scale="unit", outputs=LOGITS)
    adapted = adapt_onnx(proto, conv)
    assert adapted.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1
    x = pixels[:1]
    _same(_ort_run(adapted, x), predict_under(source, conv, x))
    # 7 images through a static batch of 1: the source runner loops
    assert source(conv.apply(pixels[:7])).shape == (7, 10)


def test_adapt_onnx_refuses(zoo, tmp_path):
    import onnx

    path = write_nchw_onnx(tmp_path / "m.onnx", zoo.nchw_weights())
    proto = onnx.load(str(path))
    with pytest.raises(ModelError, match="does not fit the convention's layout NHWC"):
        adapt_onnx(proto, InputConvention(layout="NHWC"))
    old = onnx.ModelProto()
    old.CopyFrom(proto)
    old.opset_import[0].version = 7
    with pytest.raises(ModelError, match="opset 7 is older than 8"):
        adapt_onnx(old, InputConvention(layout="NCHW"))
    five = onnx.ModelProto()
    five.CopyFrom(proto)
    five.graph.output[0].type.tensor_type.shape.dim[1].dim_value = 5
    with pytest.raises(ModelError, match="expected \\(N, 10\\)"):
        adapt_onnx(five, InputConvention(layout="NCHW"))


# ------------------------------------------------------------------------------- Keras


def test_wrap_keras_every_convention(zoo, edges):
    """Each convention as built-in Keras layers, and as the TensorFlow ops of
    adapted_function, against the numpy reference (one MLP, eager calls)."""
    from digitkit.model.foreign import keras_source
    from digitkit.model.loading import load_keras_model

    model = load_keras_model(zoo.path("notebook-axis1"), check_contract=False)
    source = keras_source(model)
    x = edges
    for conv in candidates(source.input_shape) + [InputConvention(outputs=LOGITS)]:
        ref = predict_under(source, conv, x)
        _same(np.asarray(wrap_keras(model, conv)(x, training=False)), ref)
    for conv in (InputConvention(scale="l2", l2_axis=1),
                 InputConvention(scale="standardized", ink="black-on-white", outputs=LOGITS)):
        _same(adapted_function(model, conv)(x)[OUTPUT_NAME].numpy(),
              predict_under(source, conv, x))


@pytest.mark.parametrize("name", KERAS_DETECTABLE)
def test_wrapped_keras_exports_through_tf2onnx(zoo, pixels, name, tmp_path):
    """The wrapped model converts the way the export room converts (tf2onnx.from_function on a
    tf.function with an input signature), and its ONNX copy, fed raw pixels, reproduces the
    source under its own convention on 2,000 real images; saved as .keras it reloads under
    the safe loader and honours the contract by name."""
    import logging

    import tf2onnx

    from digitkit.model.foreign import keras_source
    from digitkit.model.loading import import_tensorflow, load_keras_model

    tf = import_tensorflow()
    model = load_keras_model(zoo.path(name), check_contract=False)
    source = keras_source(model, name)
    conv = FIXTURES[name][1]
    wrapped = wrap_keras(model, conv)

    @tf.function(input_signature=[tf.TensorSpec((None, 28, 28), tf.float32, name=INPUT_NAME)])
    def serve(pixels):
        return {OUTPUT_NAME: wrapped(pixels, training=False)}

    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    proto, _ = tf2onnx.convert.from_function(serve, input_signature=serve.input_signature,
                                             opset=17)
    ref = predict_under(source, conv, pixels)
    _same(_ort_run(proto, pixels), ref)

    wrapped.save(tmp_path / "wrapped.keras")
    reloaded = load_keras_model(tmp_path / "wrapped.keras")  # contract checked, safe mode
    assert keras_source(reloaded).honours_contract and not source.honours_contract
    _same(np.asarray(reloaded(pixels[:200], training=False)), ref[:200])


def test_legacy_tf_keras_h5_loads():
    """The committed tf.keras 2.x .h5 (scripts/make_legacy_h5.py) is a Keras 2 file and
    Keras 3 reads it through digitkit's safe loader."""
    import h5py

    from digitkit.model.loading import load_keras_model

    with h5py.File(LEGACY_H5, "r") as f:
        version = f.attrs["keras_version"]
    assert (version.decode() if isinstance(version, bytes) else version).startswith("2.")
    assert LEGACY_H5.stat().st_size < 300_000
    model = load_keras_model(LEGACY_H5)
    assert tuple(model.inputs[0].shape) == (None, 28, 28)


def test_foreign_loading_is_as_strict_about_code(tmp_path):
    import keras

    from digitkit.model.loading import load_keras_model

    inp = keras.Input(shape=(784,))
    x = keras.layers.Lambda(lambda t: t / 255.0, name="scale")(inp)
    keras.Model(inp, keras.layers.Dense(10)(x)).save(tmp_path / "lambda.h5")
    with pytest.raises(ModelError, match="Lambda layer 'scale'.*--trust-model"):
        load_keras_model(tmp_path / "lambda.h5", check_contract=False)


def test_savedmodel_source_detected_and_adapted(zoo, pixels, mnist_test, tmp_path):
    """A SavedModel made elsewhere (signature input "flat_input" (None, 784), output "logits"):
    run through load_savedmodel, detected, wrapped by adapted_function, converted by tf2onnx,
    and its ONNX copy reproduces the source under its own convention."""
    import logging

    import tf2onnx

    from digitkit.model.detect import detect_convention
    from digitkit.model.foreign import savedmodel_source
    from digitkit.model.loading import import_tensorflow, load_keras_model, load_savedmodel

    tf = import_tensorflow()
    keras_model = load_keras_model(zoo.path("flat-logits-standardized"), check_contract=False)
    module = tf.Module()
    module.model = keras_model

    @tf.function(input_signature=[tf.TensorSpec((None, 784), tf.float32, name="flat_input")])
    def serve(flat_input):
        return {"logits": keras_model(flat_input, training=False)}

    tf.saved_model.save(module, str(tmp_path / "sm"), signatures={"serving_default": serve})
    signature = load_savedmodel(tmp_path / "sm")
    source = savedmodel_source(signature)
    assert (source.input_name, source.output_name) == ("flat_input", "logits")
    conv = detect_convention(source, *mnist_test).convention
    assert conv == FIXTURES["flat-logits-standardized"][1]
    adapted = adapted_function(signature, conv)
    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    proto, _ = tf2onnx.convert.from_function(adapted, input_signature=adapted.input_signature,
                                             opset=17)
    _same(_ort_run(proto, pixels), predict_under(source, conv, pixels))


# ------------------------------------------------------------------ general image contracts


def _general_contract(channels: int = 3):
    from digitkit.images.pixels import PixelPolicy
    from digitkit.model.contract import image_contract

    return image_contract(8, 6, channels, ["a", "b", "c", "d"], PixelPolicy((8, 6), channels))


def _general_conventions(contract):
    """Every candidate in every layout the contract allows, logits and declared per-channel
    values too."""
    from digitkit.model.conventions import layouts_for

    out = []
    for layout in layouts_for(contract):
        shape = (None, *contract.layout_shape(layout))
        out += candidates(shape, layout=layout, contract=contract)
    out.append(InputConvention(layout="NHWC", scale="standardized", mean=(0.3, 0.5, 0.7)[
        :contract.channels], std=(0.1, 0.2, 0.3)[:contract.channels], outputs=LOGITS,
        contract=contract))
    return out


@pytest.fixture(scope="module")
def general_pixels():
    """Random 8x6 RGB pictures over every value 0..255, one all black and one all white."""
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (40, 8, 6, 3)).astype(np.float32)
    x[0], x[1] = 0, 255
    return x


def _dense_model(input_shape, k: int = 4, seed: int = 0):
    """A Keras model of the convention's input shape: Flatten, Dense (fixed random weights)."""
    import keras

    keras.utils.set_random_seed(seed)
    inp = keras.Input(shape=input_shape, name="image")
    out = keras.layers.Dense(k)(keras.layers.Flatten()(inp))
    return keras.Model(inp, out, name="foreign")


def _onnx_dense(input_shape, k: int = 4, seed: int = 0):
    """The same as ONNX nodes: Flatten, Gemm, from numpy weights (an NCHW or NHWC export)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    n = int(np.prod(input_shape))
    w = rng.normal(0, 0.05, (n, k)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["x"], ["f"], axis=1),
         helper.make_node("Gemm", ["f", "w"], ["y"])], "dense",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", *input_shape])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", k])],
        [numpy_helper.from_array(w, "w")])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    proto.ir_version = 7
    return proto


@pytest.mark.parametrize("channels", [3, 1])
def test_general_adapters_match_apply(general_pixels, channels):
    """Every general convention as Keras layers (wrap_keras), TensorFlow ops
    (adapted_function) and ONNX nodes (adapt_onnx), each against the numpy reference."""
    from digitkit.model.foreign import SourceModel

    contract = _general_contract(channels)
    x = general_pixels[..., :channels]
    models, protos = {}, {}
    for conv in _general_conventions(contract):
        shape = conv.input_shape
        if shape not in models:
            models[shape] = _dense_model(shape)
            protos[shape] = _onnx_dense(shape)
        model = models[shape]
        source = SourceModel("m", (None, *shape), lambda a, m=model: np.asarray(m(a)),
                             (None, 4), contract=contract)
        ref = predict_under(source, conv, x)
        _same(np.asarray(wrap_keras(model, conv)(x, training=False)), ref)
        _same(adapted_function(model, conv)(x)[OUTPUT_NAME].numpy(), ref)
        # the ONNX twin has other weights: hold it to its own reference
        proto = protos[shape]
        from digitkit.predictors.ort import open_session

        adapted = adapt_onnx(proto, conv)
        _same(_ort_run_general(adapted, x, contract), _onnx_reference(proto, conv, x, open_session))
        assert onnx_convention(adapted) == conv  # read back under the recorded contract


def _ort_run_general(proto, pixels, contract):
    import tempfile
    from pathlib import Path

    from digitkit.predictors.ort import open_session

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "adapted.onnx"
        path.write_bytes(proto.SerializeToString())
        session = open_session(path)
        assert [i.name for i in session.get_inputs()] == [contract.input_name]
        assert session.get_inputs()[0].shape[1:] == list(contract.input_shape)
        return session.run([contract.output_name], {contract.input_name: pixels})[0]


def _onnx_reference(proto, conv, x, open_session):
    import tempfile
    from pathlib import Path

    from digitkit.model.foreign import onnx_source

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "source.onnx"
        path.write_bytes(proto.SerializeToString())
        source = onnx_source(open_session(path), "source", contract=conv.contract)
        return predict_under(source, conv, x)


def test_general_wrapped_keras_reloads_and_converts(general_pixels, tmp_path):
    """A BGR NCHW per-channel adapter saved as .keras reloads under the safe loader (built-in
    layers only), and converts through tf2onnx like the export room converts it."""
    import logging

    import tf2onnx

    from digitkit.model.foreign import SourceModel
    from digitkit.model.loading import import_tensorflow, load_keras_model

    tf = import_tensorflow()
    contract = _general_contract()
    conv = InputConvention(layout="NCHW", scale="standardized", channel_order="bgr",
                           outputs=LOGITS, contract=contract)
    model = _dense_model(conv.input_shape)
    source = SourceModel("m", (None, *conv.input_shape), lambda a: np.asarray(model(a)),
                         (None, 4), contract=contract)
    ref = predict_under(source, conv, general_pixels)
    wrapped = wrap_keras(model, conv)
    wrapped.save(tmp_path / "wrapped.keras")
    reloaded = load_keras_model(tmp_path / "wrapped.keras", check_contract=False)
    _same(np.asarray(reloaded(general_pixels, training=False)), ref)

    @tf.function(input_signature=[tf.TensorSpec((None, *contract.input_shape), tf.float32,
                                                name=contract.input_name)])
    def serve(pixels):
        return {contract.output_name: wrapped(pixels, training=False)}

    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    proto, _ = tf2onnx.convert.from_function(serve, input_signature=serve.input_signature,
                                             opset=17)
    _same(_ort_run_general(proto, general_pixels, contract), ref)
