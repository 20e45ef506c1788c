"""digitkit export: real TensorFlow, tf2onnx, ONNX Runtime and MNIST; no mocks."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from digitkit.outputs import sha256_file, sha256_tree
from digitkit.cli import cli


def _run(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result


@pytest.fixture(scope="module")
def exported(tmp_path_factory, seed_mlp_h5, mnist_dir):
    """One full export (all formats + int8) shared by the read-only assertions below."""
    src = tmp_path_factory.mktemp("export_src") / "seed.h5"
    shutil.copyfile(seed_mlp_h5, src)
    result = _run("export", src, "--data", mnist_dir, "--quantize", "int8")
    assert result.exit_code == 0, result.output
    out = src.parent / "export"
    return out, json.loads((out / "export.json").read_text()), result.output


@pytest.fixture
def src_h5(tmp_path, seed_mlp_h5):
    src = tmp_path / "seed.h5"
    shutil.copyfile(seed_mlp_h5, src)
    return src


def test_default_layout_and_manifest(exported, seed_mlp_h5):
    out, manifest, _ = exported
    assert (out / "model.h5").read_bytes() == seed_mlp_h5.read_bytes()
    assert (out / "saved_model" / "saved_model.pb").is_file()
    assert (out / "model.onnx").is_file() and (out / "model.int8.onnx").is_file()
    assert not list(out.glob(".export-*")), "staging directory left behind"
    assert manifest["status"] == "passed"
    assert manifest["source"]["sha256"] == sha256_file(seed_mlp_h5)
    cfg = manifest["config"]
    assert cfg["opset"] == 17 and cfg["atol"] == 1e-5 and cfg["versions"]["onnxruntime"]
    arts = manifest["artifacts"]
    assert set(arts) == {"keras", "savedmodel", "onnx", "onnx-int8"}
    for rec in arts.values():
        p = out / rec["path"]
        assert rec["sha256"] == (sha256_tree(p) if p.is_dir() else sha256_file(p))
        assert rec["size_bytes"] > 0
    for fmt in ("savedmodel", "onnx"):
        v = arts[fmt]["validation"]
        assert v["status"] == "passed"
        assert v["max_abs_diff"] <= 1e-5
        agree, total = v["top1_agreement"]
        assert agree == total >= 1000 + 2 + 2 + 1 + 7
        cases = {c["case"]: c for c in v["cases"]}
        assert {"all_zeros", "all_255", "batch_of_1", "odd_batch_7"} <= set(cases)
        assert cases["odd_batch_7"]["shape"] == [7, 10]
    acc = arts["onnx-int8"]["accuracy"]
    assert acc["test_images"] == 10000
    assert acc["int8_size_bytes"] < acc["float_size_bytes"] / 2
    assert acc["accuracy_drop_points"] <= acc["max_accuracy_drop_points"]


def test_table_is_printed(exported):
    _, _, output = exported
    assert re.search(r"^\[ref\]\s+keras \(keras 3", output, re.M)
    assert re.search(r"^\[ok\]\s+onnx \(onnxruntime ", output, re.M)
    assert 'output "probabilities" shape (1000, 10)' in output
    assert "top-1 agreement 1012/1012" in output
    assert "test accuracy int8" in output


def test_onnx_contract_and_metadata(exported, mnist_test):
    import onnx
    import onnxruntime as ort

    out, manifest, _ = exported
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


def test_savedmodel_signature(exported):
    import tensorflow as tf

    out, _, _ = exported
    fn = tf.saved_model.load(str(out / "saved_model")).signatures["serving_default"]
    spec = fn.structured_input_signature[1]["pixels"]
    assert spec.shape.as_list() == [None, 28, 28] and spec.dtype == tf.float32
    result = fn(pixels=tf.zeros((5, 28, 28)))
    assert list(result) == ["probabilities"] and result["probabilities"].shape == (5, 10)


def test_validate_export_dir_on_its_own(exported, mnist_dir):
    from digitkit.export import validate_export_dir

    out, _, _ = exported
    results = validate_export_dir(out, data=mnist_dir, n_images=100)
    assert [r.artifact for r in results] == ["savedmodel", "onnx"]
    assert all(r.ok for r in results)


def test_corrupted_onnx_fails_validation(exported, tmp_path, mnist_test):
    """A deliberately damaged copy must fail the same check the export runs."""
    import keras
    import onnx
    from onnx import numpy_helper

    from digitkit.validate import fill_reference, format_table, make_cases, validate_onnx

    out, _, _ = exported
    model = onnx.load(out / "model.onnx")
    biggest = max(model.graph.initializer, key=lambda t: np.prod(t.dims))
    w = numpy_helper.to_array(biggest).copy()
    w.flat[::50] += 0.5  # small, plausible-looking damage to one weight matrix
    biggest.CopyFrom(numpy_helper.from_array(w, biggest.name))
    bad = tmp_path / "bad.onnx"
    onnx.save(model, bad)

    cases = make_cases(mnist_test[0], 200)
    fill_reference(keras.models.load_model(out / "model.h5", compile=False), cases)
    res = validate_onnx(bad, cases, atol=1e-5)
    assert not res.ok and res.max_abs_diff > 1e-5
    assert "[FAILED] onnx" in format_table([res])

    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes((out / "model.onnx").read_bytes()[:1000])
    res = validate_onnx(truncated, cases)
    assert not res.ok and res.error


def test_impossible_atol_fails_and_moves_copy_aside(src_h5, mnist_dir):
    result = _run("export", src_h5, "--format", "onnx", "--atol", "0", "--data", mnist_dir)
    out = src_h5.parent / "export"
    manifest = json.loads((out / "export.json").read_text())
    onnx_rec = manifest["artifacts"]["onnx"]
    # ONNX Runtime's kernels differ from TensorFlow's in the last bits: the diff is real.
    assert onnx_rec["validation"]["max_abs_diff"] > 0
    assert result.exit_code == 4, result.output
    assert "validation failed for onnx" in result.output
    assert "[FAILED] onnx" in result.output
    assert not (out / "model.onnx").exists()
    assert (out / "model.onnx.FAILED").is_file()
    assert manifest["status"] == "failed" and onnx_rec["status"] == "failed"
    assert onnx_rec["path"] == "model.onnx.FAILED"
    assert not (out / "saved_model").exists()


def test_int8_accuracy_gate_refuses_a_bad_quantization(src_h5, mnist_dir, monkeypatch):
    """Quantizing every op (the in-graph normalisation too) really wrecks accuracy."""
    import digitkit.quantize

    monkeypatch.setattr(digitkit.quantize, "QUANTIZED_OPS", None)
    result = _run("export", src_h5, "--format", "onnx", "--quantize", "int8",
                  "--data", mnist_dir)
    out = src_h5.parent / "export"
    manifest = json.loads((out / "export.json").read_text())
    acc = manifest["artifacts"]["onnx-int8"]["accuracy"]
    assert acc["accuracy_drop_points"] > acc["max_accuracy_drop_points"]
    assert result.exit_code == 4, result.output
    assert "top-1 accuracy drops" in result.output
    assert (out / "model.int8.onnx.FAILED").is_file() and not (out / "model.int8.onnx").exists()
    assert (out / "model.onnx").is_file()  # the float copy passed and stays


def test_overwrite_needs_force_and_force_leaves_a_consistent_dir(src_h5, mnist_dir, tmp_path):
    out = tmp_path / "out"
    assert _run("export", src_h5, "--out", out, "--data", mnist_dir,
                "--images", 100).exit_code == 0
    again = _run("export", src_h5, "--out", out, "--data", mnist_dir)
    assert again.exit_code == 1
    assert again.output.strip().splitlines()[-1].endswith("already exists; pass --force to "
                                                          "overwrite")
    forced = _run("export", src_h5, "--out", out, "--data", mnist_dir, "--format", "onnx",
                  "--images", 100, "--force")
    assert forced.exit_code == 0, forced.output
    manifest = json.loads((out / "export.json").read_text())
    assert set(manifest["artifacts"]) == {"keras", "onnx"}
    assert not (out / "saved_model").exists()  # nothing left that the manifest does not list


def _lambda_h5(path):
    import keras

    inp = keras.Input(shape=(28, 28), name="pixels")
    x = keras.layers.Lambda(lambda t: t / 255.0, name="scale")(inp)
    x = keras.layers.Flatten()(x)
    out = keras.layers.Dense(10, activation="softmax", name="probabilities")(x)
    keras.Model(inp, out).save(path)
    return path


def test_lambda_model_refused_unless_trusted(tmp_path, mnist_dir):
    src = _lambda_h5(tmp_path / "lambda.h5")
    refused = _run("export", src, "--data", mnist_dir)
    assert refused.exit_code == 1
    line = refused.output.strip()
    assert line.startswith("digitkit: error: ") and "\n" not in line
    assert "Lambda layer 'scale'" in line and "--trust-model" in line
    assert not (tmp_path / "export").exists()
    trusted = _run("export", src, "--data", mnist_dir, "--format", "onnx", "--images", 100,
                   "--trust-model")
    assert trusted.exit_code == 0, trusted.output


def test_unsafe_parts_finds_custom_code():
    from digitkit.export import unsafe_parts

    config = {"class_name": "Functional", "config": {"layers": [
        {"class_name": "Dense", "config": {"name": "d"}},
        {"class_name": "MyLayer", "module": "mypkg.layers", "config": {"name": "m"}},
        {"class_name": "Other", "config": {"name": "o"}},
    ]}}
    found = unsafe_parts(config, is_known_layer=lambda c: c == "Dense")
    assert any("mypkg.layers" in f for f in found)
    assert any("'o'" in f and "not a Keras layer" in f for f in found)
    assert not any("'d'" in f for f in found)


@pytest.mark.parametrize("make, message", [
    (lambda d: d / "missing.h5", "no such file"),
    (lambda d: (d / "notes.txt").write_text("x") and d / "notes.txt", "expected a Keras HDF5"),
    (lambda d: (d / "fake.h5").write_text("not hdf5") and d / "fake.h5", "not an HDF5 file"),
    (lambda d: d, "is a directory"),
])
def test_bad_model_files_give_one_line_errors(tmp_path, make, message):
    result = _run("export", make(tmp_path))
    assert result.exit_code == 1
    line = result.output.strip()
    assert "\n" not in line and line.startswith("digitkit: error: ") and message in line


def test_unwritable_output_is_one_line(src_h5, tmp_path, mnist_dir):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = _run("export", src_h5, "--out", blocker / "export", "--data", mnist_dir)
    assert result.exit_code == 1
    line = result.output.strip()
    assert "\n" not in line and "cannot create directory" in line


def test_bad_options_are_usage_errors(src_h5):
    assert _run("export", src_h5, "--opset", "9").exit_code == 2
    assert _run("export", src_h5, "--format", "savedmodel", "--quantize", "int8").exit_code == 2
    assert _run("export", src_h5, "--format", "tflite").exit_code == 2


def test_cli_default_opset_matches_library():
    from digitkit.cli.export import _DEFAULT_OPSET
    from digitkit.export import DEFAULT_OPSET, MAX_OPSET

    assert _DEFAULT_OPSET == DEFAULT_OPSET <= MAX_OPSET
