"""digitkit.export.quantize: the int8 copy and the test accuracy it is held to."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from _cli import run_cli


@pytest.fixture(scope="module")
def bad_int8_export(tmp_path_factory, seed_mlp_h5, mnist_dir):
    """An export whose int8 copy is quantized badly on purpose: quantizing every op (the
    in-graph normalisation too) really wrecks accuracy. Also the run the table test reads."""
    import digitkit.export.quantize

    src = tmp_path_factory.mktemp("bad_int8") / "seed.h5"
    shutil.copyfile(seed_mlp_h5, src)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(digitkit.export.quantize, "QUANTIZED_OPS", None)
        result = run_cli("export", src, "--format", "onnx", "--quantize", "int8",
                         "--data", mnist_dir)
    return src.parent / "export", result


def test_int8_accuracy_gate_refuses_a_bad_quantization(bad_int8_export):
    out, result = bad_int8_export
    manifest = json.loads((out / "export.json").read_text())
    acc = manifest["artifacts"]["onnx-int8"]["accuracy"]
    assert acc["accuracy_drop_points"] > acc["max_accuracy_drop_points"]
    assert result.exit_code == 4, result.output
    assert "top-1 accuracy drops" in result.output
    assert (out / "model.int8.onnx.FAILED").is_file() and not (out / "model.int8.onnx").exists()
    assert (out / "model.onnx").is_file()  # the float copy passed and stays


def test_table_is_printed(bad_int8_export):
    _, result = bad_int8_export
    output = result.output
    assert re.search(r"^\[ref\]\s+keras \(keras 3", output, re.M)
    assert re.search(r"^\[ok\]\s+onnx \(onnxruntime ", output, re.M)
    assert 'output "probabilities" shape (1000, 10)' in output
    assert "top-1 agreement 1012/1012" in output
    assert "test accuracy int8" in output


def test_onnx_accuracy_matches_the_recorded_figures(export_dir, mnist_test):
    from digitkit.export.quantize import onnx_accuracy

    acc = json.loads((export_dir / "export.json").read_text())["artifacts"]["onnx-int8"]
    x, y = mnist_test
    assert round(onnx_accuracy(export_dir / "model.onnx", x, y), 6) == \
        acc["accuracy"]["float_accuracy"]
    assert round(onnx_accuracy(export_dir / "model.int8.onnx", x, y), 6) == \
        acc["accuracy"]["int8_accuracy"]
    assert acc["accuracy"]["calibration_images"] == 1000
    assert acc["validation"]["atol"] is None  # int8 differences are reported, not judged
