"""`digitkit export` on the command line: one-line errors and exit codes for what cannot run.

Real TensorFlow, tf2onnx, ONNX Runtime and MNIST throughout; no mocks.
"""

from __future__ import annotations

import pytest

from _cli import run_cli
from digitkit.export.config import FORMAT_CHOICES, MAX_OPSET, MIN_OPSET


@pytest.mark.parametrize("make, message", [
    (lambda d: d / "missing.h5", "no such file"),
    (lambda d: (d / "notes.txt").write_text("x") and d / "notes.txt", "expected a Keras HDF5"),
    (lambda d: (d / "fake.h5").write_text("not hdf5") and d / "fake.h5", "not an HDF5 file"),
    (lambda d: d, "is a directory"),
])
def test_bad_model_files_give_one_line_errors(tmp_path, make, message):
    result = run_cli("export", make(tmp_path))
    assert result.exit_code == 1
    line = result.output.strip()
    assert "\n" not in line and line.startswith("digitkit: error: ") and message in line


@pytest.mark.parametrize("args, message", [
    (["--opset", "9"], f"--opset 9 is outside tf2onnx 1.17's range {MIN_OPSET}..{MAX_OPSET}"),
    (["--format", "savedmodel", "--quantize", "int8"],
     "--quantize int8 quantizes the ONNX copy: use --format onnx or all"),
    (["--format", "coreml"], "Invalid value for '--format': 'coreml' is not one of "
     + ", ".join(f"'{f}'" for f in FORMAT_CHOICES) + " (see 'digitkit export --help')"),
])
def test_bad_options_are_usage_errors(src_h5, args, message):
    result = run_cli("export", src_h5, *args)
    assert result.exit_code == 2
    assert result.output == f"digitkit: error: {message}\n"  # this error, on one line
    assert not (src_h5.parent / "export").exists()  # refused before anything was written


def test_view_needs_the_onnx_copy(src_h5):
    result = run_cli("export", src_h5, "--format", "savedmodel", "--view")
    assert result.exit_code == 2
    assert "--view opens the ONNX result" in result.output
    assert not (src_h5.parent / "export").exists()


def test_unwritable_output_is_one_line(src_h5, tmp_path, mnist_dir):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = run_cli("export", src_h5, "--out", blocker / "export", "--data", mnist_dir)
    assert result.exit_code == 1
    line = result.output.strip()
    assert "\n" not in line and "cannot create directory" in line


def test_help_reads_the_library_defaults():
    from digitkit.export.config import (
        DEFAULT_ATOL,
        DEFAULT_MAX_ACCURACY_DROP,
        DEFAULT_N_IMAGES,
        DEFAULT_OPSET,
        GENERAL_ATOL,
        MAX_OPSET,
        MIN_OPSET,
    )

    result = run_cli("export", "--help")
    assert result.exit_code == 0
    text = " ".join(result.output.split())  # click wraps help text
    assert f"ONNX opset ({MIN_OPSET}..{MAX_OPSET}). {DEFAULT_OPSET}:" in text
    assert f"[default: {DEFAULT_OPSET}]" in text
    assert f"[default: {DEFAULT_ATOL} for a digit model, {GENERAL_ATOL} for any other" in text
    assert f"[default: {DEFAULT_N_IMAGES}]" in text
    assert f"[default: {DEFAULT_MAX_ACCURACY_DROP}]" in text
    from digitkit.export.config import FORMAT_CHOICES

    assert f"[{'|'.join(FORMAT_CHOICES)}]" in text  # the choices come from the format table
