"""digitkit.predictors: ONNX Runtime and TensorFlow predictors behind one interface, the one
session configuration, and `open_predictor`'s choice of runtime. The contract every row of
the runtime table keeps (load, predict, bad file, missing extra): test_predictors_contract.py."""

from __future__ import annotations

import numpy as np
import pytest

from _onnx_model import write_linear_onnx
from digitkit.errors import ModelError, UsageError
from digitkit.predictors import OnnxPredictor, OrtSettings, open_predictor
from digitkit.predictors.compare import agreement
from digitkit.predictors.tf import KerasPredictor, SavedModelPredictor


@pytest.fixture(scope="module")
def linear(linear_model):
    return linear_model


def _softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_onnx_predictor_matches_numpy(linear, mnist_test):
    path, w, b = linear
    x = mnist_test[0][:64].astype(np.float32)
    pred = OnnxPredictor(path, OrtSettings(threads=1))
    assert pred._session is None  # cheap constructor: nothing loaded yet
    probs = pred.predict(x)
    assert probs.dtype == np.float32 and probs.shape == (64, 10)
    np.testing.assert_allclose(probs, _softmax(x.reshape(64, -1) @ w + b), atol=1e-5)


def test_onnx_names_and_flat_input_read_from_the_model(linear, tmp_path, mnist_test):
    import onnx

    path, w, b = linear
    model = onnx.load(str(path))
    # Rename the ports and make the input (N, 784), as some exports do.
    model.graph.input[0].name = "input_1"
    dims = model.graph.input[0].type.tensor_type.shape.dim
    del dims[2]
    dims[1].dim_value = 784
    model.graph.output[0].name = "dense_out"
    for node in model.graph.node:
        node.input[:] = ["input_1" if i == "pixels" else i for i in node.input]
        node.output[:] = ["dense_out" if o == "probabilities" else o for o in node.output]
    other = tmp_path / "renamed.onnx"
    onnx.save(model, str(other))
    x = mnist_test[0][:8].astype(np.float32)
    np.testing.assert_allclose(OnnxPredictor(other).predict(x),
                               OnnxPredictor(path).predict(x), atol=1e-6)


def test_open_predictor_picks_the_runtime_by_model_type(linear, tmp_path):
    path, _, _ = linear
    assert isinstance(open_predictor(path), OnnxPredictor)
    h5 = tmp_path / "m.h5"
    h5.write_bytes(b"\x89HDF\r\n\x1a\n")
    assert isinstance(open_predictor(h5), KerasPredictor)
    (tmp_path / "saved_model.pb").write_bytes(b"")
    assert isinstance(open_predictor(tmp_path), SavedModelPredictor)
    with pytest.raises(UsageError, match="runs on onnxruntime"):
        open_predictor(path, runtime="tensorflow")
    with pytest.raises(UsageError, match="runs on tensorflow"):
        open_predictor(h5, runtime="onnxruntime")
    txt = tmp_path / "m.txt"
    txt.write_text("")
    with pytest.raises(ModelError, match="unknown model type"):
        open_predictor(txt)
    with pytest.raises(ModelError):
        open_predictor(tmp_path / "missing.onnx")


def test_tensorflow_predictor_on_h5_and_savedmodel(seed_mlp_h5, tmp_path, mnist_test):
    import keras

    x = mnist_test[0][:32].astype(np.float32)
    expected = keras.models.load_model(seed_mlp_h5, compile=False).predict(x, verbose=0)
    np.testing.assert_allclose(KerasPredictor(seed_mlp_h5).predict(x), expected, atol=1e-5)

    saved = tmp_path / "saved"
    keras.models.load_model(seed_mlp_h5, compile=False).export(str(saved), verbose=False)
    np.testing.assert_allclose(open_predictor(saved).predict(x), expected, atol=1e-5)


def test_linear_helper_writes_a_valid_model(tmp_path):
    w = np.zeros((784, 10), np.float32)
    b = np.arange(10, dtype=np.float32)
    p = write_linear_onnx(tmp_path / "m.onnx", w, b)
    probs = OnnxPredictor(p).predict(np.zeros((2, 28, 28), np.float32))
    assert probs.argmax(1).tolist() == [9, 9]


def test_session_options_are_the_settings_asked_for(linear):
    from digitkit.predictors.ort import session_options

    so = session_options(OrtSettings(threads=1, spinning=False))
    assert so.intra_op_num_threads == 1 and so.inter_op_num_threads == 1
    assert so.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    spinning = session_options(OrtSettings(threads=2, spinning=True))
    assert spinning.intra_op_num_threads == 2
    with pytest.raises(Exception, match="does not have configuration"):
        spinning.get_session_config_entry("session.intra_op.allow_spinning")


def test_agreement_counts_top1_and_the_largest_difference():
    ref = np.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5]], np.float32)
    out = np.array([[0.8, 0.2], [0.6, 0.4], [0.5, 0.5]], np.float32)
    a = agreement(out, ref)
    assert (a.n, a.top1_agree) == (3, 2)
    assert a.max_abs_diff == pytest.approx(0.4)
    assert not agreement(np.array([[np.nan, 0.0]]), np.array([[1.0, 0.0]])).finite
    with pytest.raises(ValueError, match="shape"):
        agreement(out[:2], ref)
