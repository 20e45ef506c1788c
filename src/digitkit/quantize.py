"""Static int8 quantization of an ONNX model with onnxruntime.quantization.

Static (calibrated) rather than dynamic quantization: dynamic quantization leaves activations
in float and quantizes them per call, which on small dense models costs about as much as it
saves; static int8 with QDQ nodes lets ONNX Runtime fuse integer kernels end to end.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from digitkit.architectures import INPUT_NAME, OUTPUT_NAME

#: Training images used to calibrate activation ranges. 1,000 images (100 per class on
#: average) give stable MinMax ranges; more only adds calibration time.
DEFAULT_CALIBRATION_IMAGES = 1000

#: Largest acceptable drop in top-1 test accuracy (in percentage points) of the int8 copy
#: against the float ONNX model: beyond one point the size saving is not worth the errors.
DEFAULT_MAX_ACCURACY_DROP = 1.0

QUANTIZED_OPS = ("MatMul", "Gemm", "Conv")


def quantize_int8(float_onnx: str | os.PathLike, out_path: str | os.PathLike,
                  calibration_images: np.ndarray, batch_size: int = 100) -> Path:
    """Write an int8 (QDQ, per-channel weights) copy of `float_onnx` calibrated on the images."""
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
            return None if batch is None else {INPUT_NAME: batch}

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
                  batch_size: int = 1000) -> tuple[float, np.ndarray]:
    """Top-1 accuracy (0..1) and predictions of an ONNX model over (x, y), in batches."""
    from digitkit.validate import _ort_session

    sess = _ort_session(path)
    preds = []
    for i in range(0, len(x), batch_size):
        batch = np.asarray(x[i:i + batch_size], dtype=np.float32)
        (probs,) = sess.run([OUTPUT_NAME], {INPUT_NAME: batch})
        preds.append(probs.argmax(axis=1))
    pred = np.concatenate(preds) if preds else np.zeros(0, np.int64)
    acc = float(np.mean(pred == np.asarray(y))) if len(pred) else 0.0
    return acc, pred
