"""digitkit.bench.plan: MODEL arguments -> model copies -> the runtimes that run on each."""

from __future__ import annotations

import shutil

import pytest

from _cli import run_cli
from digitkit.bench.config import parse_runtimes
from digitkit.bench.plan import copy_for, plan_runtimes, resolve_models
from digitkit.errors import ModelError, UsageError
from digitkit.predictors import runtime_groups


def float_only(export_dir, dest):
    """`dest`/export: the float copies of the shared export (no int8), as links."""
    view = dest / "export"
    view.mkdir()
    for name in ("model.h5", "saved_model", "model.onnx", "export.json"):
        (view / name).symlink_to(export_dir / name)
    return view


def test_resolution_and_planning(export_dir, tmp_path):
    (m,) = resolve_models([float_only(export_dir, tmp_path)])
    assert m.onnx and m.saved_model and m.keras and m.onnx_int8 is None
    assert m.manifest  # export.json is read along with the copies
    int8 = tmp_path / "model.int8.onnx"
    shutil.copy(export_dir / "model.onnx", int8)
    (loose,) = resolve_models([export_dir / "model.onnx", int8, export_dir / "model.h5"])
    assert loose.onnx_int8 == int8 and loose.onnx == export_dir / "model.onnx"
    notes = []
    plan = plan_runtimes([m], *parse_runtimes(None), warn=notes.append)
    assert plan["export"] == ["onnxruntime", "openvino", "openvino-bf16", "tf-savedmodel",
                              "tf-function", "keras-predict"]
    # A missing int8 copy is normal, not worth a note; an export without LiteRT gets one.
    assert notes == ["export: no LiteRT (model.tflite) copy, skipping litert"]
    with pytest.raises(ModelError):
        plan_runtimes([loose], ["tf-savedmodel"], {"tf-savedmodel"})


def test_full_export_runs_int8_too(export_dir):
    (m,) = resolve_models([export_dir])
    assert copy_for(m, "onnxruntime-int8") == export_dir / "model.int8.onnx"
    assert copy_for(m, "tf-function") == copy_for(m, "keras-predict") == export_dir / "model.h5"
    assert copy_for(m, "litert") == export_dir / "model.tflite"
    assert copy_for(m, "openvino") == copy_for(m, "openvino-bf16") == export_dir / "model.onnx"
    plan = plan_runtimes([m], *parse_runtimes(None))
    assert plan["export"] == ["onnxruntime", "onnxruntime-int8", "openvino", "openvino-bf16",
                              "litert", "tf-savedmodel", "tf-function", "keras-predict"]


def test_missing_copies_are_noted_or_refused(export_dir):
    (loose,) = resolve_models([export_dir / "model.onnx"])
    notes = []
    assert plan_runtimes([loose], *parse_runtimes(None), warn=notes.append) == {
        "export": ["onnxruntime", "openvino", "openvino-bf16"]}
    assert notes == ["export: no LiteRT (model.tflite) copy, skipping litert",
                     "export: no SavedModel (saved_model/) copy, skipping tf-savedmodel",
                     "export: no Keras (model.h5) copy, skipping tf-function",
                     "export: no Keras (model.h5) copy, skipping keras-predict"]
    with pytest.raises(ModelError, match="no model copy for any requested runtime"):
        plan_runtimes([loose], ["tf-function"], set())


def test_two_exports_of_the_same_name_get_labels(export_dir, tmp_path):
    models = resolve_models([export_dir, float_only(export_dir, tmp_path)])
    assert [m.name for m in models] == ["export#1", "export#2"]
    with pytest.raises(UsageError, match="no MODEL given"):
        resolve_models([])
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(ModelError, match="unknown model type"):
        resolve_models([tmp_path / "notes.txt"])


def test_runtime_groups_follow_the_runtime_table():
    assert runtime_groups() == {"onnxruntime": ["onnxruntime", "onnxruntime-int8"],
                                "openvino": ["openvino", "openvino-bf16"],
                                "litert": ["litert"],
                                "tensorflow": ["tf-savedmodel"],
                                "keras": ["tf-function", "keras-predict"]}


def test_missing_model_copy_is_a_one_line_model_error(export_dir, tmp_path):
    r = run_cli("bench", export_dir / "model.onnx", "--runtimes", "tensorflow")
    assert r.exit_code == 1
    assert r.output.strip() == ("digitkit: error: export: no SavedModel (saved_model/) copy "
                                "for runtime tensorflow (tf-savedmodel)")
    r = run_cli("bench", export_dir / "model.onnx", "--runtimes", "onnxruntime-int8")
    assert r.exit_code == 1 and "no int8 ONNX (model.int8.onnx) copy" in r.output
    r = run_cli("bench", tmp_path / "nope.onnx")
    assert r.exit_code == 1 and "nope.onnx: no such file or directory" in r.output
    (tmp_path / "empty").mkdir()
    r = run_cli("bench", tmp_path / "empty")
    assert r.exit_code == 1 and "no model copy found" in r.output
