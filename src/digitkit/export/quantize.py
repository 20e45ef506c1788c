"""Static int8 quantization of an ONNX model with onnxruntime.quantization, and the accuracy
check an int8 copy is held to.

Static (calibrated) rather than dynamic quantization: dynamic quantization leaves activations
in float and quantizes them per call, which on small dense models costs about as much as it
saves; static int8 with QDQ nodes lets ONNX Runtime fuse integer kernels end to end.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from digitkit.export.validate import ArtifactValidation, Case, human_size, validate_onnx
from digitkit.model.calls import in_calls
from digitkit.model.contract import DIGIT_CONTRACT, ModelContract
from digitkit.predictors.ort import OnnxPredictor

QUANTIZED_OPS = ("MatMul", "Gemm", "Conv")


def quantize_int8(float_onnx: str | os.PathLike, out_path: str | os.PathLike,
                  calibration_images: np.ndarray, batch_size: int = 100,
                  input_name: str = DIGIT_CONTRACT.input_name) -> Path:
    """Write an int8 (QDQ, per-channel weights) copy of `float_onnx` calibrated on the images
    (fed to its input `input_name`, the contract's)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    images = np.asarray(calibration_images, dtype=np.float32)

    class _Reader(CalibrationDataReader):
        def __init__(self):
            starts = range(0, len(images), batch_size)
            self._batches = iter(images[i:i + batch_size] for i in starts)

        def get_next(self):
            batch = next(self._batches, None)
            return None if batch is None else {input_name: batch}

    out = Path(out_path)
    # onnxruntime logs a "consider pre-processing" hint on the root logger on every call;
    # shape-inference pre-processing changes nothing for these small static graphs.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        quantize_static(
            str(float_onnx), str(out), _Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,  # per-channel weight scales keep Dense/Conv accuracy near float
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            # Only the weight-heavy ops: that is where the size and the integer kernels are.
            # Quantizing the in-graph normalisation (ReduceSum/Sqrt/Reciprocal on 0..255
            # input) squeezes its tiny outputs into a few int8 steps and wrecks accuracy.
            op_types_to_quantize=list(QUANTIZED_OPS) if QUANTIZED_OPS else None,
        )
    finally:
        root.setLevel(level)
    return out


def onnx_accuracy(path: str | os.PathLike, x: np.ndarray, y: np.ndarray,
                  batch_size: int = 1000) -> float:
    """Top-1 accuracy (0..1) of an ONNX model over (x, y), in batches."""
    predictor = OnnxPredictor(path)
    preds = [predictor.predict(part).argmax(axis=1) for part in in_calls(x, batch_size)]
    pred = np.concatenate(preds) if preds else np.zeros(0, np.int64)
    return float(np.mean(pred == np.asarray(y))) if len(pred) else 0.0


def check_int8(int8_onnx: Path, float_onnx: Path, cases: list[Case], mnist, max_drop: float,
               calibration_images: int,
               contract: ModelContract = DIGIT_CONTRACT) -> ArtifactValidation:
    """Validate an int8 copy: outputs on every case, then test accuracy against the float copy.

    int8 probabilities legitimately differ by ~1e-2: the copy is held to names, shapes and
    test accuracy (at most `max_drop` points below the float model on mnist.x_test); its
    differences are reported, not judged against atol. `calibration_images` (how many it was
    calibrated on) goes into the record.
    """
    res = validate_onnx(int8_onnx, cases, atol=None, name="onnx-int8", contract=contract)
    float_acc = onnx_accuracy(float_onnx, mnist.x_test, mnist.y_test)
    int8_acc = onnx_accuracy(int8_onnx, mnist.x_test, mnist.y_test)
    drop = (float_acc - int8_acc) * 100
    info = {
        "test_images": int(len(mnist.x_test)),
        "calibration_images": int(calibration_images),
        "float_accuracy": round(float_acc, 6),
        "int8_accuracy": round(int8_acc, 6),
        "accuracy_drop_points": round(drop, 4),
        "max_accuracy_drop_points": max_drop,
        "float_size_bytes": Path(float_onnx).stat().st_size,
        "int8_size_bytes": Path(int8_onnx).stat().st_size,
    }
    res.extra["accuracy"] = info
    res.notes = (f"test accuracy int8 {int8_acc:.2%} vs float {float_acc:.2%} "
                 f"(drop {drop:.2f} pt, allowed {max_drop:.2f}); size "
                 f"{human_size(info['int8_size_bytes'])} vs "
                 f"{human_size(info['float_size_bytes'])}")
    if drop > max_drop:
        res.failure = (f"top-1 accuracy drops {drop:.2f} points "
                       f"({float_acc:.2%} -> {int8_acc:.2%}), more than the allowed {max_drop}")
    return res
