"""digitkit.export.origin: one source type for every model. digitkit's own model is a source
whose adapter is the identity (nothing recorded, its own outputs the reference); a model made
elsewhere is a source with its resolved convention; both own their test accuracy."""

from __future__ import annotations

import numpy as np
import pytest

from digitkit.data import load_mnist
from digitkit.export.config import ExportConfig
from digitkit.export.origin import (
    adapted_source,
    honours_contract,
    own_source,
    recorded_export_source,
)
from digitkit.model.adapters import ADAPTER_KEY, CONVENTION_KEY
from digitkit.model.contract import DIGIT_CONTRACT
from digitkit.model.conventions import NO_FLAGS, ConventionFlags
from digitkit.model.files import identify


@pytest.fixture(scope="module")
def mnist(mnist_dir):
    return load_mnist(mnist_dir)


def _accuracy(probabilities, y) -> float:
    return float(np.mean(probabilities.argmax(axis=1) == np.asarray(y)))


def test_own_model_is_the_identity(seed_mlp_h5, mnist):
    from digitkit.model.loading import load_keras_model

    model = identify(seed_mlp_h5)
    assert honours_contract(model, ExportConfig())
    flagged = ExportConfig(conventions=ConventionFlags(ink="black-on-white"))
    assert not honours_contract(model, flagged)  # a flag given: its convention is resolved
    keras_model = load_keras_model(seed_mlp_h5)
    src = own_source(model, keras_model)
    assert not src.adapted and src.convention.is_contract and src.contract is DIGIT_CONTRACT
    assert src.record() == {} and src.metadata() == {} and src.progress("onnx") is None
    assert src.reference_label("3.1") == "keras (keras 3.1)"
    x, y = mnist.x_test[:300], mnist.y_test[:300]
    ref = src.reference(x.astype(np.float32))
    np.testing.assert_array_equal(ref, np.asarray(keras_model(x.astype(np.float32),
                                                              training=False)))
    assert src.test_accuracy(x, y) == _accuracy(ref, y)
    assert src.test_accuracy(x[:10], y[:10]) == _accuracy(ref, y)  # measured once, owned
    again = recorded_export_source(seed_mlp_h5, {"copy": "model.h5"})
    assert not again.adapted


def test_a_model_made_elsewhere_carries_its_adapter(zoo, mnist, tmp_path, monkeypatch):
    from digitkit.predictors.adapted import load_source

    monkeypatch.setenv("DIGITKIT_CACHE", str(tmp_path / "cache"))
    path = zoo.path("nchw-onnx-unit")  # TensorFlow-free: an ONNX source
    assert not honours_contract(identify(path), ExportConfig())
    said = []
    src = adapted_source(load_source(path), NO_FLAGS, mnist, said.append)
    assert said[0].startswith("detected: /255") and src.adapted and src.is_onnx
    assert src.model is None and src.contract is DIGIT_CONTRACT
    assert src.progress("onnx").startswith("adapter nodes added")
    assert src.progress("tflite") is None
    assert set(src.metadata()) == {CONVENTION_KEY, ADAPTER_KEY}
    record = src.record()
    assert list(record) == ["kind", "convention", "adapter", "detection", "test_accuracy"]
    accuracy = _accuracy(src.reference(mnist.x_test), mnist.y_test)
    assert record["test_accuracy"] == round(accuracy, 6) > 0.85  # measured when opened
    assert src.reference_label("3.1") == "source nchw_unit.onnx under /255"
    again = recorded_export_source(path, record)
    assert again.adapted and again.convention == src.convention
    assert again.detection.how == "declared"
    assert again.test_accuracy(mnist.x_test, mnist.y_test) == accuracy
