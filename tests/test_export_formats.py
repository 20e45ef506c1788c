"""digitkit.export.formats: the one table of export formats, and the copies it builds.

The copies are checked on the shared, read-only `export_dir` (a real full export).
"""

from __future__ import annotations

import json

import numpy as np

from digitkit.export.formats import (
    EXPORT_FORMATS,
    FORMATS,
    QUANTIZE_CHOICES,
    BuildFailed,
    build_int8,
    selected,
)
from digitkit.model import files as mf
from digitkit.model.contract import DIGIT_CONTRACT


def test_the_table_drives_names_files_and_order():
    assert FORMATS == ("savedmodel", "onnx", "tflite")
    assert QUANTIZE_CHOICES == {"int8": "onnx-int8"}
    assert {name: f.file for name, f in EXPORT_FORMATS.items()} == {
        "savedmodel": mf.SAVEDMODEL_DIR, "onnx": mf.ONNX_FILE, "onnx-int8": mf.INT8_FILE,
        "tflite": mf.TFLITE_FILE}
    names = list(EXPORT_FORMATS)
    for f in EXPORT_FORMATS.values():
        assert callable(f.build) and callable(f.validate)
        if f.made_from:  # a derived copy is built after the copy it is made from
            assert names.index(f.made_from) < names.index(f.name)
    assert [f.name for f in selected(("onnx",), "int8")] == ["onnx", "onnx-int8"]
    assert [f.name for f in selected(("savedmodel", "onnx"), None)] == ["savedmodel", "onnx"]


def test_failed_quantization_is_a_failed_copy_not_an_error(tmp_path):
    class Ctx:
        contract = DIGIT_CONTRACT

        def path(self, name):
            return tmp_path / "not-there.onnx"

        def calibration_images(self):
            return np.zeros((4, 28, 28), np.float32)

    try:
        build_int8(Ctx(), tmp_path / "model.int8.onnx")
    except BuildFailed as e:
        res = e.result
    else:
        raise AssertionError("quantizing a missing model must fail")
    assert not res.ok and res.artifact == "onnx-int8"
    assert res.error.startswith("quantization failed: ")
    assert not (tmp_path / "model.int8.onnx").exists()


def test_onnx_contract_and_metadata(export_dir, mnist_test):
    import onnx
    import onnxruntime as ort

    out = export_dir
    manifest = json.loads((out / "export.json").read_text())
    model = onnx.load(out / "model.onnx")
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == 17
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta["class_labels"]) == [str(d) for d in range(10)]
    assert json.loads(meta["input_value_range"]) == [0, 255]
    assert "white ink on black" in meta["input_ink_polarity"]
    assert meta["input_dtype"] == "float32"
    assert meta["source_model_sha256"] == manifest["source"]["sha256"]
    assert meta["digitkit_version"] == manifest["digitkit_version"]
    (inp,), (outp,) = model.graph.input, model.graph.output
    assert (inp.name, outp.name) == ("pixels", "probabilities")
    assert inp.type.tensor_type.shape.dim[0].dim_param == "batch"
    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    x, y = mnist_test
    for n in (1, 3, 64):  # dynamic batch
        (probs,) = sess.run(None, {"pixels": x[:n].astype(np.float32)})
        assert probs.shape == (n, 10)
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_savedmodel_signature(export_dir):
    import tensorflow as tf

    from digitkit.model.loading import load_savedmodel

    sig = load_savedmodel(export_dir / "saved_model")  # keeps the variables alive
    fn = sig.loaded.signatures["serving_default"]
    spec = fn.structured_input_signature[1]["pixels"]
    assert spec.shape.as_list() == [None, 28, 28] and spec.dtype == tf.float32
    result = fn(pixels=tf.zeros((5, 28, 28)))
    assert list(result) == ["probabilities"] and result["probabilities"].shape == (5, 10)
    manifest = json.loads((export_dir / "export.json").read_text())
    assert manifest["artifacts"]["savedmodel"]["signature"]["name"] == "serving_default"
