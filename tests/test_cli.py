"""digitkit.cli: how the command line reports a failure, in a real `python -m digitkit` process."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image


@pytest.fixture
def bad_model_run(tmp_path):
    """`digitkit infer` on a file that is not an ONNX model, with and without DIGITKIT_DEBUG."""
    (tmp_path / "bad.onnx").write_bytes(b"not an onnx model")
    (tmp_path / "images").mkdir()
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp_path / "images" / "0.png")

    def run(**env):
        return subprocess.run(
            [sys.executable, "-m", "digitkit", "infer", "bad.onnx", "images",
             "--output", "out.csv"],
            cwd=tmp_path, capture_output=True, text=True, timeout=120,
            env={k: v for k, v in os.environ.items() if k != "DIGITKIT_DEBUG"} | env)

    return run


def test_an_error_is_one_line_by_default(bad_model_run):
    proc = bad_model_run()
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr.startswith("digitkit: error: bad.onnx: not a usable ONNX model")
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


def test_digitkit_debug_adds_the_traceback_and_its_cause(bad_model_run):
    quiet = bad_model_run(DIGITKIT_DEBUG="0")
    assert quiet.returncode == 1 and "Traceback" not in quiet.stderr  # 0 means off

    proc = bad_model_run(DIGITKIT_DEBUG="1")
    assert proc.returncode == 1
    *trace, last = proc.stderr.rstrip("\n").split("\n")
    assert last + "\n" == quiet.stderr  # the same one line, last
    trace = "\n".join(trace)
    assert trace.startswith("Traceback (most recent call last):")
    # First the underlying failure (its type and message), then the ModelError raised from it.
    cause, sep, error = trace.partition(
        "The above exception was the direct cause of the following exception")
    assert sep, trace
    cause_type, cause_message = cause.strip().splitlines()[-1].split(": ", 1)
    assert not cause_type.startswith("digitkit.")  # e.g. google.protobuf.message.DecodeError
    assert f"({cause_message})" in last  # the one line quotes the cause's message
    assert "digitkit.errors.ModelError: bad.onnx: not a usable ONNX model" in error
