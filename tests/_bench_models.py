"""Export-directory builder for the bench tests (until/unless `digitkit.export` is used).

Writes the agreed layout: model.h5, saved_model/ (signature "serving_default": "pixels" ->
"probabilities"), model.onnx and, on request, model.int8.onnx.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np


def make_export_dir(keras_model_or_h5, out: Path, int8_calibration: np.ndarray | None = None,
                    onnx_only: bool = False) -> Path:
    import keras
    import tensorflow as tf
    import tf2onnx

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if isinstance(keras_model_or_h5, (str, Path)):
        model = keras.models.load_model(keras_model_or_h5, compile=False)
        if not onnx_only:
            shutil.copyfile(keras_model_or_h5, out / "model.h5")
    else:
        model = keras_model_or_h5
        if not onnx_only:
            model.save(out / "model.h5")

    @tf.function(input_signature=[tf.TensorSpec((None, 28, 28), tf.float32, name="pixels")])
    def serve(pixels):
        return {"probabilities": model(pixels, training=False)}

    if not onnx_only:
        module = tf.Module()
        module.model = model
        module.serve = serve
        tf.saved_model.save(module, str(out / "saved_model"), signatures={"serving_default": serve})
    tf2onnx.convert.from_function(serve, input_signature=serve.input_signature, opset=17,
                                  output_path=str(out / "model.onnx"))
    if int8_calibration is not None:
        from digitkit.quantize import quantize_int8

        quantize_int8(out / "model.onnx", out / "model.int8.onnx", int8_calibration)
    return out
