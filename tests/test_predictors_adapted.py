"""digitkit.predictors.adapted and .runnable: every source kind opened through the one loaders,
its contract status read cheaply, its adapted copy cached, and what a command runs for a
MODEL argument (the file itself when it honours the contract, else its adapted copy)."""

from __future__ import annotations

import numpy as np
import pytest

from _foreign_models import FIXTURES, LEGACY_H5
from digitkit.errors import ModelError, UsageError
from digitkit.model.conventions import ConventionFlags, InputConvention
from digitkit.model.detect import predict_under
from digitkit.predictors.adapted import (
    ADAPTED,
    CONTRACT,
    FOREIGN,
    adapted_copy,
    adapted_onnx,
    contract_status,
    keras_ends,
    load_source,
    open_source,
    stated_input_shape,
)

pytestmark = pytest.mark.usefixtures("private_cache")


@pytest.fixture(scope="module")
def pixels(mnist_test):
    return mnist_test[0][::20].astype(np.float32)  # 500 real test images, raw 0..255


def test_contract_status_of_every_kind(zoo, seed_mlp_h5, linear_onnx):
    """digitkit's own models are told apart from models made elsewhere by name and shape,
    read without a runtime (the notebook's model has the contract's shapes, not its names)."""
    assert contract_status(seed_mlp_h5) == (CONTRACT, None)
    assert contract_status(linear_onnx) == (CONTRACT, None)
    for name in ("notebook-axis1", "convnet-unit", "nchw-onnx-unit", "legacy-notebook-axis1"):
        assert contract_status(zoo.path(name)) == (FOREIGN, None), name
    assert keras_ends({"class_name": "Functional", "config": {
        "input_layers": [["pixels", 0, 0]], "output_layers": ["probabilities", 0, 0],
        "layers": [{"class_name": "InputLayer", "name": "pixels",
                    "config": {"name": "pixels", "batch_shape": [None, 28, 28]}}]}}) \
        == ("pixels", "probabilities", (None, 28, 28))
    assert stated_input_shape(LEGACY_H5) == (None, 28, 28)
    assert stated_input_shape(zoo.path("nchw-onnx-unit")) == (None, 1, 28, 28)


@pytest.mark.parametrize("name, shape", [("legacy-notebook-axis1", (None, 28, 28)),
                                         ("convnet-unit", (None, 28, 28, 1)),
                                         ("nchw-onnx-unit", ("batch_size", 1, 28, 28))])
def test_load_source_opens_each_kind(zoo, name, shape):
    loaded = load_source(zoo.path(name))
    assert loaded.source.input_shape == shape and not loaded.source.honours_contract
    assert loaded.name == zoo.path(name).name


def test_load_source_refuses_code_and_non_sources(tmp_path, zoo):
    import keras

    inp = keras.Input(shape=(28, 28))
    x = keras.layers.Lambda(lambda t: t / 255.0, name="scale")(inp)
    keras.Model(inp, keras.layers.Dense(10)(keras.layers.Flatten()(x))).save(
        tmp_path / "lambda.keras")
    with pytest.raises(ModelError, match="Lambda layer 'scale'.*--trust-model"):
        open_source(tmp_path / "lambda.keras")
    (tmp_path / "m.tflite").write_bytes(b"x")
    with pytest.raises(ModelError, match="cannot be a source model"):
        load_source(tmp_path / "m.tflite")
    with pytest.raises(ModelError, match="not an .onnx file"):
        adapted_onnx(zoo.path("notebook-axis1"), InputConvention())


def test_adapted_onnx_is_cached_and_reproduces_the_source(zoo, pixels):
    from digitkit.predictors.ort import OnnxPredictor

    conv = FIXTURES["nchw-onnx-unit"][1]
    path = adapted_onnx(zoo.path("nchw-onnx-unit"), conv)
    assert contract_status(path) == (ADAPTED, conv)
    mtime = path.stat().st_mtime_ns
    assert adapted_onnx(zoo.path("nchw-onnx-unit"), conv) == path
    assert path.stat().st_mtime_ns == mtime  # reused, not rewritten
    other = adapted_onnx(zoo.path("nchw-onnx-unit"), InputConvention(layout="NCHW"))
    assert other != path  # keyed by the convention too
    got = OnnxPredictor(path).predict(pixels)
    ref = predict_under(zoo.source("nchw-onnx-unit"), conv, pixels)
    assert np.abs(got - ref).max() < 1e-5
    np.testing.assert_array_equal(got.argmax(1), ref.argmax(1))


def test_adapted_keras_reloads_under_the_safe_loader(zoo, pixels):
    """A Keras source's adapted copy is a .keras of built-in layers honouring the contract:
    the TensorFlow engines load it as they load digitkit's own models."""
    from digitkit.predictors.tf import KerasPredictor

    name = "notebook-axis1"
    loaded = load_source(zoo.path(name))
    path = adapted_copy(loaded, FIXTURES[name][1])
    assert path.suffix == ".keras" and contract_status(path) == (CONTRACT, None)
    got = KerasPredictor(path).predict(pixels)
    ref = predict_under(loaded.source, FIXTURES[name][1], pixels)
    assert np.abs(got - ref).max() < 2e-5
    np.testing.assert_array_equal(got.argmax(1), ref.argmax(1))


# ----------------------------------------------------------------------- runnable_model


def test_contract_models_run_as_they_are_without_data(seed_mlp_h5, linear_onnx, tmp_path):
    from digitkit.predictors.runnable import runnable_model

    for path in (seed_mlp_h5, linear_onnx):
        run = runnable_model(path, data=tmp_path / "no-such-data")
        assert run.path == path and not run.adapted and run.line() is None


def test_foreign_models_run_adapted(zoo, mnist_dir):
    from digitkit.predictors.runnable import runnable_model

    run = runnable_model(zoo.path("nchw-onnx-unit"), data=mnist_dir)
    assert run.adapted and run.convention == FIXTURES["nchw-onnx-unit"][1]
    assert run.line().startswith("nchw_unit.onnx: detected: /255 (logits: softmax added), ")
    again = runnable_model(run.path, data=mnist_dir)  # the adapted copy records its convention
    assert again.path == run.path and again.convention == run.convention


def test_declared_flags_override_detection_and_need_no_data(zoo, mnist_dir, tmp_path,
                                                           monkeypatch):
    from digitkit.predictors.runnable import runnable_model

    flags = ConventionFlags(scale="raw")
    run = runnable_model(zoo.path("nchw-onnx-unit"), flags, mnist_dir)
    assert run.convention == InputConvention(layout="NCHW", outputs="logits")
    assert run.line().startswith("nchw_unit.onnx: declared: raw 0..255 (logits: softmax "
                                 "added), ") and "MNIST test images" in run.line()
    # No MNIST anywhere (and no download for a declared convention): nothing to score, the
    # outputs are read off stand-in images.
    monkeypatch.setenv("DIGITKIT_CACHE", str(tmp_path / "empty"))
    blind = runnable_model(zoo.path("nchw-onnx-unit"), flags)
    assert blind.convention == run.convention and "MNIST" not in blind.line()
    with pytest.raises(UsageError, match="LiteRT copy"):
        (tmp_path / "m.tflite").write_bytes(b"x")
        runnable_model(tmp_path / "m.tflite", flags)


@pytest.mark.parametrize("name", ["caffe", "nchw-onnx"])
def test_general_adapted_copies_carry_their_contract(general_zoo, name):
    """The adapted copy of a general model (a .keras for Keras, adapter nodes for ONNX) takes
    the contract's raw pixels (N, 24, 24, 3), reproduces the source under its convention, is
    read back as honouring its contract, and carries its class names and pixel policy."""
    from digitkit.model.adapters import onnx_convention
    from digitkit.model.contract import contract_from_metadata
    from digitkit.model.embedded import read_contract

    loaded = load_source(general_zoo.path(name), calibration=general_zoo.image_set)
    conv = InputConvention.from_dict(general_zoo.convention(name).to_dict(),
                                     loaded.source.contract)
    x = general_zoo.pixels(name)[:50]
    ref = predict_under(loaded.source, conv, x)
    copy = adapted_copy(loaded, conv)
    assert adapted_copy(loaded, conv) == copy  # cached
    contract = loaded.source.contract
    if copy.suffix == ".onnx":
        import onnx

        from digitkit.predictors.ort import open_session

        proto = onnx.load(str(copy))
        props = {p.key: p.value for p in proto.metadata_props}
        assert contract_from_metadata(props, "copy") == contract
        assert contract_status(copy) == (ADAPTED, onnx_convention(proto))
        assert onnx_convention(proto) == conv
        got = open_session(copy).run(None, {"pixels": x})[0]
    else:
        from digitkit.model.loading import load_keras_model

        assert read_contract(copy) == contract and contract_status(copy) == (CONTRACT, None)
        got = np.asarray(load_keras_model(copy)(x, training=False))
    assert np.abs(got - ref).max() < 2e-5
    np.testing.assert_array_equal(got.argmax(1), ref.argmax(1))


def test_general_savedmodel_source(general_zoo, tmp_path):
    """A SavedModel made elsewhere (Keras' model.export of the NCHW torch fixture): opened
    under a general contract named by --calibration, detected on that folder, and its adapted
    SavedModel takes the contract's raw pixels and carries its contract in its assets."""
    from digitkit.model.detect import load_calibration
    from digitkit.model.embedded import read_contract
    from digitkit.model.loading import load_keras_model, load_savedmodel
    from digitkit.model.resolve import resolve_convention

    keras_model = load_keras_model(general_zoo.path("torch-nchw"), check_contract=False)
    keras_model.export(tmp_path / "sm", verbose=False)
    loaded = load_source(tmp_path / "sm", calibration=general_zoo.image_set)
    contract = loaded.source.contract
    assert contract.input_shape == (24, 24, 3) and contract.class_names[0] == "astronaut"
    cal = load_calibration(contract, general_zoo.image_set)
    found = resolve_convention(loaded.source, cal.pixels, cal.labels)
    assert found.convention.preset == "torch" and found.convention.layout == "NCHW"
    copy = adapted_copy(loaded, found.convention)
    assert read_contract(copy) == contract and contract_status(copy)[0] == CONTRACT
    signature = load_savedmodel(copy)
    x = cal.pixels[:20]
    got = signature(x)[signature.output_names[0]]
    ref = predict_under(loaded.source, found.convention, x)
    assert np.abs(got - ref).max() < 2e-5
