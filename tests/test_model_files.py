"""digitkit.model.files: the one answer to "what kind of model is this", and export layouts."""

from __future__ import annotations

import shutil

import pytest

from digitkit.errors import ModelError
from digitkit.model import files as mf


def test_identify_by_suffix_signature_and_directory(tmp_path, linear_onnx, seed_mlp_h5):
    assert mf.identify(linear_onnx).kind == mf.ONNX
    assert mf.identify(linear_onnx).runtime == "onnxruntime"
    assert mf.identify(seed_mlp_h5).kind == mf.KERAS_H5
    assert mf.identify(seed_mlp_h5).is_keras
    (tmp_path / "saved_model.pb").write_bytes(b"")
    assert mf.identify(tmp_path).kind == mf.SAVEDMODEL


@pytest.mark.parametrize("name, content, message", [
    ("missing.onnx", None, "no such file or directory"),
    ("notes.txt", b"x", "unknown model type ('.txt' files)"),
    ("noext", b"x", "unknown model type (files without an extension)"),
    ("fake.h5", b"just text", "not an HDF5 file"),
    ("fake.keras", b"just text", "not a Keras zip archive"),
])
def test_identify_refuses_with_the_reason(tmp_path, name, content, message):
    p = tmp_path / name
    if content is not None:
        p.write_bytes(content)
    with pytest.raises(ModelError, match=message.replace("(", r"\(").replace(")", r"\)")):
        mf.identify(p)


def test_a_plain_directory_is_not_a_model(tmp_path):
    with pytest.raises(ModelError, match="not a SavedModel"):
        mf.identify(tmp_path)


def test_read_export_dir_finds_every_copy(export_dir):
    copies = mf.read_export_dir(export_dir)
    assert copies.keras == export_dir / mf.SOURCE_COPY
    assert copies.saved_model == export_dir / mf.SAVEDMODEL_DIR
    assert copies.onnx == export_dir / mf.ONNX_FILE
    assert copies.onnx_int8 == export_dir / mf.INT8_FILE
    assert copies.manifest["artifacts"]
    assert mf.is_int8_onnx(copies.onnx_int8) and not mf.is_int8_onnx(copies.onnx)


def test_int8_copy_is_told_by_its_ops_whatever_its_name(export_dir, tmp_path):
    renamed = tmp_path / "quantized.onnx"
    shutil.copyfile(export_dir / mf.INT8_FILE, renamed)
    loose = mf.ModelCopies("loose")
    loose.add(mf.identify(renamed))
    assert loose.onnx_int8 == renamed and loose.onnx is None


def test_empty_export_dir_is_refused(tmp_path):
    with pytest.raises(ModelError, match="no model copy found"):
        mf.read_export_dir(tmp_path)
