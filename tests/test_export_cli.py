"""`digitkit export` on the command line: one-line errors and exit codes for what cannot run.

Real TensorFlow, tf2onnx, ONNX Runtime and MNIST throughout; no mocks.
"""

from __future__ import annotations

import shutil

import pytest

from conftest import run_cli


@pytest.fixture
def src_h5(tmp_path, seed_mlp_h5):
    src = tmp_path / "seed.h5"
    shutil.copyfile(seed_mlp_h5, src)
    return src


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


def test_bad_options_are_usage_errors(src_h5):
    assert run_cli("export", src_h5, "--opset", "9").exit_code == 2
    assert run_cli("export", src_h5, "--format", "savedmodel", "--quantize",
                   "int8").exit_code == 2
    assert run_cli("export", src_h5, "--format", "coreml").exit_code == 2  # not a format


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
        MAX_OPSET,
        MIN_OPSET,
    )

    result = run_cli("export", "--help")
    assert result.exit_code == 0
    text = " ".join(result.output.split())  # click wraps help text
    assert f"ONNX opset ({MIN_OPSET}..{MAX_OPSET}). {DEFAULT_OPSET}:" in text
    assert f"[default: {DEFAULT_OPSET}]" in text
    assert f"[default: {DEFAULT_ATOL}]" in text
    assert f"[default: {DEFAULT_N_IMAGES}]" in text
    assert f"[default: {DEFAULT_MAX_ACCURACY_DROP}]" in text
    from digitkit.export.config import FORMAT_CHOICES

    assert f"[{'|'.join(FORMAT_CHOICES)}]" in text  # the choices come from the format table
