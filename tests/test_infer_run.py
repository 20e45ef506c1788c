"""digitkit.infer.run: run_infer as a library call, around the local engine."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from _infer_folders import numpy_answers
from digitkit.errors import DataError, DigitkitError, UsageError
from digitkit.infer import InferSpec, run_infer
from digitkit.infer.run import _Progress


def test_run_infer_library_call(linear_model, mixed_folder, tmp_path, mnist_test):
    model, w, b = linear_model
    warnings = []
    out = tmp_path / "o.jsonl"
    s = run_infer(InferSpec(model, workers=0), [mixed_folder], out, warn=warnings.append)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert (s.written, s.resumed, s.total, s.failed) == (303, 0, 303, 3)
    assert s.output == str(out) and s.seconds > 0
    assert [w_.split(":")[0] for w_ in warnings] == ["warning"] * 3
    assert {r["path"] for r in rows if r["error"]} == \
        {str(mixed_folder / "bad" / n) for n in ("empty.png", "text.png", "truncated.png")}
    # The accuracy the linear model gets on these files, computed with numpy from w and b.
    good = [r["path"] for r in rows if not r["error"]]
    predicted, truth = numpy_answers(good, mnist_test, w, b)
    assert s.labelled == 300
    assert s.accuracy == float(np.mean(predicted == truth))
    expected = np.zeros((10, 10), np.int64)
    np.add.at(expected, (truth, predicted), 1)
    assert (s.confusion == expected).all()


def test_fmt_comes_from_the_output_name_unless_given(linear_onnx, mixed_folder, tmp_path):
    one = [mixed_folder / "5"]
    run_infer(InferSpec(linear_onnx, workers=0), one, tmp_path / "a.ndjson")
    run_infer(InferSpec(linear_onnx, workers=0, fmt="jsonl"), one, tmp_path / "b.csv")
    run_infer(InferSpec(linear_onnx, workers=0), one, tmp_path / "c.csv")
    assert (tmp_path / "a.ndjson").read_text() == (tmp_path / "b.csv").read_text()
    assert (tmp_path / "c.csv").read_text().startswith("path,label,")


def test_resume_counts_the_rows_already_written(linear_onnx, mixed_folder, tmp_path):
    out = tmp_path / "o.csv"
    full = run_infer(InferSpec(linear_onnx, workers=0), [mixed_folder], out, warn=lambda m: None)
    data = out.read_bytes()
    lines = data.splitlines(keepends=True)
    out.write_bytes(b"".join(lines[:1 + 150]))  # the header and 150 rows
    again = run_infer(InferSpec(linear_onnx, workers=0), [mixed_folder], out, resume=True,
                      warn=lambda m: None)
    assert out.read_bytes() == data
    assert (again.resumed, again.written, again.failed) == (150, 153, 3)
    assert (again.confusion == full.confusion).all()


def test_runs_that_cannot_start(linear_onnx, mixed_folder, tmp_path):
    spec = InferSpec(linear_onnx, workers=0)
    with pytest.raises(UsageError, match="--resume needs an output file"):
        run_infer(spec, [mixed_folder], None, resume=True)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DigitkitError, match="no images found in"):
        run_infer(spec, [empty], tmp_path / "o.csv")
    with pytest.raises(DataError, match="no such file or directory"):
        run_infer(spec, [tmp_path / "nope"], tmp_path / "o.csv")
    assert not (tmp_path / "o.csv").exists()


def test_progress_line_only_when_enabled():
    s = io.StringIO()
    p = _Progress(True, stream=s, every=0.0)
    p.update(256)
    p.update(256)
    p.close()
    assert s.getvalue().startswith("\r256 images") and "images/s" in s.getvalue()
    assert s.getvalue().endswith("\n") and "\r512 images" in s.getvalue()
    quiet = io.StringIO()
    p = _Progress(False, stream=quiet, every=0.0)
    p.update(10)
    p.close()
    assert quiet.getvalue() == ""
