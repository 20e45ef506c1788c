"""digitkit.predictors.litert: the LiteRT interpreter (XNNPACK) on the exported .tflite copy."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from digitkit.errors import DependencyError
from digitkit.model.contract import OUTPUT_NAME
from digitkit.predictors.litert import VARIABLE_OPS, LiteRTPredictor, import_litert
from digitkit.predictors.ort import OnnxPredictor

pytest.importorskip("ai_edge_litert", reason="the 'runtimes' extra is not installed")


def test_matches_the_onnx_copy_at_every_batch_size(export_dir, mnist_test):
    x = mnist_test[0][:64].astype(np.float32)
    ref = OnnxPredictor(export_dir / "model.onnx").predict(x)
    p = LiteRTPredictor(export_dir / "model.tflite", threads=1)
    assert p.runtime == "litert" and p.threads == 1
    for n in (1, 7, 64, 7):  # resized for each new batch, including back to an earlier one
        out = p.predict(x[:n])
        assert out.shape == (n, 10) and out.dtype == np.float32
        assert np.abs(out - ref[:n]).max() < 1e-5
    assert p.output_names == [OUTPUT_NAME]  # the signature's name, not the converter's
    assert set(p.outputs(x[:2])) == {OUTPUT_NAME}
    assert "DELEGATE" in p.ops()  # XNNPACK took the graph
    assert not p.ops() & VARIABLE_OPS  # weights frozen
    # Edge inputs: an all-black image is where XNNPACK's rsqrt(0) gave NaN.
    assert np.isfinite(p.predict(np.zeros((2, 28, 28), np.float32))).all()


def test_without_the_extra_export_validation_falls_back_to_tensorflow(monkeypatch, export_dir):
    """Without ai-edge-litert, bench's row says "not installed" (the contract suite); export
    validation may use TensorFlow's copy of the interpreter instead, and only when it asks."""
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)  # import now raises ImportError
    with pytest.raises(DependencyError, match=r"pip install 'digitkit\[runtimes\]'"):
        import_litert()
    p = LiteRTPredictor(export_dir / "model.tflite", threads=1, allow_tensorflow=True).load()
    assert p.runtime_name == "tensorflow-lite"
    assert p.predict(np.zeros((3, 28, 28), np.float32)).shape == (3, 10)


def test_a_tflite_file_is_a_model_kind_of_its_own(export_dir):
    from digitkit.model.files import TFLITE, identify, read_export_dir
    from digitkit.predictors import open_predictor

    model = identify(export_dir / "model.tflite")
    assert model.kind == TFLITE and model.runtime == "litert"
    assert read_export_dir(export_dir).tflite == export_dir / "model.tflite"
    p = open_predictor(export_dir / "model.tflite")
    assert isinstance(p, LiteRTPredictor)
    assert p.predict(np.zeros((2, 28, 28), np.float32)).shape == (2, 10)
