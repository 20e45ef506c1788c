"""digitkit.export.tflite: the LiteRT copy (weights frozen, XNNPACK-safe) and its check.

The copy in the shared `export_dir` is the one `digitkit export` (format "all") made.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from _cli import run_cli
from digitkit.artifacts import sha256_file

pytest.importorskip("ai_edge_litert", reason="the 'runtimes' extra is not installed")


def test_the_export_validates_and_records_the_lite_copy(export_dir):
    manifest = json.loads((export_dir / "export.json").read_text())
    rec = manifest["artifacts"]["tflite"]
    path = export_dir / "model.tflite"
    assert rec["path"] == "model.tflite" and rec["status"] == "passed"
    assert rec["sha256"] == sha256_file(path) and rec["size_bytes"] == path.stat().st_size
    assert rec["precision"] == "fp32" and rec["signature"] == "serving_default"
    v = rec["validation"]
    assert v["status"] == "passed" and v["max_abs_diff"] <= 1e-5
    assert v["runtime"].startswith("ai-edge-litert ")
    cases = {c["case"]: c for c in v["cases"]}
    assert cases["all_zeros"]["ok"] and cases["odd_batch_7"]["shape"] == [7, 10]
    acc = rec["accuracy"]
    # The whole test set, and the same accuracy as the Keras source: the column that catches
    # a copy whose weights were read as zeros.
    assert acc["test_images"] == 10000 and acc["accuracy"] > 0.85
    assert abs(acc["difference_points"]) <= acc["max_difference_points"] == 0.05


def test_unfrozen_conversion_is_caught(export_dir, mnist_dir, tmp_path):
    """The trap of the issue: TFLiteConverter.from_saved_model on the exported SavedModel
    keeps resource variables, which the interpreter reads as zeros."""
    import tensorflow as tf

    from digitkit.data import load_mnist
    from digitkit.export.tflite import check_tflite
    from digitkit.export.validate import fill_reference, make_cases
    from digitkit.model.loading import load_keras_model

    bad = tmp_path / "unfrozen.tflite"
    bad.write_bytes(tf.lite.TFLiteConverter.from_saved_model(
        str(export_dir / "saved_model")).convert())
    mnist = load_mnist(mnist_dir)
    cases = make_cases(mnist.x_test, 50)
    fill_reference(load_keras_model(export_dir / "model.h5", False), cases)
    res = check_tflite(bad, cases, 1e-5, mnist, source_accuracy=0.9)
    assert not res.ok
    assert "resource variables" in res.error and "READ_VARIABLE" in res.error


def test_xnnpack_safe_normalisation_equals_keras(seed_mlp_h5, mnist_test):
    import keras

    from digitkit.export.tflite import xnnpack_safe
    from digitkit.model.loading import load_keras_model

    model = load_keras_model(seed_mlp_h5, False)
    safe = xnnpack_safe(model)
    assert safe is not model
    assert not any(isinstance(la, keras.layers.UnitNormalization) for la in safe.layers)
    assert any(isinstance(la, keras.layers.UnitNormalization) for la in model.layers)
    x = np.concatenate([np.zeros((2, 28, 28), np.float32),
                        mnist_test[0][:30].astype(np.float32)])
    np.testing.assert_allclose(np.asarray(safe(x)), np.asarray(model(x)), atol=1e-7)
    plain = keras.Sequential([keras.Input((28, 28)), keras.layers.Flatten(),
                              keras.layers.Dense(10)])
    assert xnnpack_safe(plain) is plain  # nothing to replace: the model itself


def test_format_tflite_alone(seed_mlp_h5, mnist_dir, tmp_path):
    out = tmp_path / "lite"
    r = run_cli("export", seed_mlp_h5, "--format", "tflite", "--out", out, "--data", mnist_dir,
                "--images", "100")
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.iterdir()) == ["export.json", "model.h5", "model.tflite"]
    manifest = json.loads((out / "export.json").read_text())
    assert manifest["config"]["formats"] == ["tflite"] and manifest["status"] == "passed"
    assert "tflite (ai-edge-litert" in r.output and "test accuracy" in r.output
