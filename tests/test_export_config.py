"""digitkit.export.config: the options of an export, their defaults and their checks."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from digitkit.errors import UsageError
from digitkit.export.config import (
    DEFAULT_ATOL,
    DEFAULT_OPSET,
    FORMAT_CHOICES,
    GENERAL_ATOL,
    MAX_OPSET,
    MIN_OPSET,
    ExportConfig,
    default_atol,
)


def test_defaults_and_format_normalisation():
    cfg = ExportConfig()
    assert cfg.formats == ("savedmodel", "onnx", "tflite") and cfg.quantize is None
    assert MIN_OPSET <= cfg.opset == DEFAULT_OPSET <= MAX_OPSET
    assert cfg.atol is None and cfg.n_images == 1000 and cfg.max_accuracy_drop == 1.0
    # --atol not given: by the kind of model, resolved once its contract is known
    from digitkit.model.contract import DIGIT_CONTRACT, image_contract

    assert default_atol(DIGIT_CONTRACT) == DEFAULT_ATOL == 1e-5
    assert default_atol(image_contract(224, 224, 3, ("a", "b"))) == GENERAL_ATOL == 1e-4
    assert ExportConfig(formats="all").formats == ("savedmodel", "onnx", "tflite")
    assert ExportConfig(formats=("onnx", "savedmodel")).formats == ("savedmodel", "onnx")
    assert ExportConfig(formats="onnx", quantize="int8").formats == ("onnx",)
    assert ExportConfig(formats="tflite").formats == ("tflite",)
    assert FORMAT_CHOICES == ("onnx", "savedmodel", "tflite", "all")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.opset = 18


@pytest.mark.parametrize("options, message", [
    ({"formats": "coreml"},
     "unknown export format 'coreml'; choose from onnx, savedmodel, tflite, all"),
    ({"formats": ()}, "no export format given"),
    ({"opset": 9}, "--opset 9 is outside tf2onnx 1.17's range 13..18"),
    ({"atol": -1.0}, "--atol must be >= 0"),
    ({"atol": float("nan")}, "--atol must be >= 0"),
    ({"quantize": "int4"}, "--quantize 'int4': only 'int8' is supported"),
    ({"formats": "savedmodel", "quantize": "int8"},
     "--quantize int8 quantizes the ONNX copy: use --format onnx or all"),
    ({"n_images": 0}, "need at least one validation image"),
    ({"max_accuracy_drop": -0.5}, "maximum accuracy drop must be >= 0"),
])
def test_bad_options_are_refused_on_construction(options, message):
    with pytest.raises(UsageError) as e:
        ExportConfig(**options)
    assert message in str(e.value) and e.value.exit_code == 2


def test_config_and_cli_import_nothing_heavy():
    """The CLI reads its defaults from here for --help: that must stay instant."""
    code = ("import sys, digitkit.export.config, digitkit.cli.export; "
            "print(sorted(m for m in ('tensorflow', 'keras', 'onnx', 'onnxruntime', 'tf2onnx', "
            "'numpy', 'h5py') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_int8_calibration_is_capped_by_the_calibrators_memory():
    """ONNX Runtime's MinMax calibrator holds every intermediate output of every image: a
    digit model keeps its 1,000 images, a 224x224x3 model gets 32 (300 were killed at 23 GB)."""
    from digitkit.export.config import DEFAULT_CALIBRATION_IMAGES, calibration_cap

    assert calibration_cap(28 * 28) == DEFAULT_CALIBRATION_IMAGES == 1000
    assert calibration_cap(32 * 32 * 3) == 1000  # the test photo models: all of their images
    assert calibration_cap(224 * 224 * 3) == 32
    assert calibration_cap(4096 * 4096 * 3) == 1  # never none
