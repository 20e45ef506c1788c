"""digitkit.export.validate: parity of exported copies with the Keras model, and the table."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from digitkit.export.validate import (
    Case,
    compare,
    fill_reference,
    format_table,
    make_cases,
    validate_onnx,
)


def test_validate_export_dir_on_its_own(export_dir, mnist_dir):
    from digitkit.export import validate_export_dir

    results = validate_export_dir(export_dir, data=mnist_dir, n_images=100)
    assert [r.artifact for r in results] == ["savedmodel", "onnx", "tflite"]
    assert all(r.ok for r in results)


def test_corrupted_onnx_fails_validation(export_dir, tmp_path, mnist_test):
    """A deliberately damaged copy must fail the same check the export runs."""
    import keras
    import onnx
    from onnx import numpy_helper

    out = export_dir
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
    res = validate_onnx(truncated, cases, atol=1e-5)
    assert not res.ok and res.error


def _cases():
    ref = np.eye(10, dtype=np.float32)[[3, 1, 4]]
    return [Case("three", np.zeros((3, 28, 28), np.float32), ref)]


def test_compare_judges_names_shapes_finiteness_and_atol():
    """Each way a copy can disagree, without any runtime: `run` stands in for a copy."""
    ref = _cases()[0].reference

    def judged(run, atol=1e-5):
        return compare("copy", "test", run, _cases(), atol)

    ok = judged(lambda x: {"probabilities": ref + 1e-6})
    assert ok.ok and ok.top1 == (3, 3) and 0 < ok.max_abs_diff <= 1e-5
    renamed = judged(lambda x: {"output_0": ref})
    assert not renamed.ok and 'no output named "probabilities"' in renamed.cases[0].problem
    flat = judged(lambda x: {"probabilities": ref[:, :5]})
    assert not flat.ok and "shape (3, 5), expected (3, 10)" in flat.cases[0].problem
    nan = judged(lambda x: {"probabilities": np.full_like(ref, np.nan)})
    assert not nan.ok and nan.cases[0].problem == "non-finite outputs"
    off = judged(lambda x: {"probabilities": ref[::-1]})
    assert not off.ok and off.top1 == (1, 3) and "exceeds atol" in off.cases[0].problem
    assert judged(lambda x: {"probabilities": ref[::-1]}, atol=None).ok  # reported only

    def crash(x):
        raise RuntimeError("kernel exploded\nsecond line")

    crashed = judged(crash)
    assert not crashed.ok and crashed.cases[0].problem == "run failed: kernel exploded"
    table = format_table([ok, crashed], reference="keras")
    assert table.splitlines()[0].startswith("[ref]")
    assert "[ok]" in table and "[FAILED] copy (test)" in table
    assert "  - three (batch 3): run failed: kernel exploded" in table


def test_no_session_options_or_savedmodel_loading_in_export():
    """Copies run only through the predictor layer (one session builder, one loader)."""
    import digitkit.export

    for path in Path(digitkit.export.__file__).parent.glob("*.py"):
        text = path.read_text()
        assert "SessionOptions" not in text and "saved_model.load" not in text, path.name
