"""The LiteRT (TensorFlow Lite) copy: TensorFlow's own converter, weights frozen, and its check.

Two traps this module exists to avoid, both found by the accuracy check:
- Resource variables. Converting the exported SavedModel (`from_saved_model`), or a concrete
  function with the model as its trackable object, keeps the weights as resource variables
  (VAR_HANDLE / READ_VARIABLE ops). The LiteRT interpreter reads them as zeros and the copy
  scores 8.5-10% on MNIST. The serving function is therefore frozen first
  (`convert_variables_to_constants_v2`: every weight becomes a constant in the graph) and
  the frozen graph is what the converter sees; a flatbuffer that still holds variable ops
  fails validation with that reason.
- XNNPACK's rsqrt. Keras's UnitNormalization (the seed MLP's L2 normalisation) computes
  `x * min(rsqrt(sum(x^2)), 1/eps)`; for an all-zero row that is rsqrt(0) = inf, clamped.
  XNNPACK, LiteRT's default CPU delegate, returns NaN for rsqrt(0), so every output turns to
  NaN. The copy is traced with `x * rsqrt(max(sum(x^2), eps^2))` instead: equal for every
  sum >= 0 (both are 1/max(norm, eps)), but it never forms rsqrt(0). Parity against the
  Keras model on real and edge inputs (all zeros included) proves the two agree.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from digitkit.model.contract import DIGIT_CONTRACT, ModelContract
from digitkit.model.loading import import_tensorflow

#: Keras's UnitNormalization epsilon (fixed in its call()).
UNIT_NORM_EPSILON = 1e-12


def convert_tflite(model, out_path: str | os.PathLike,
                   contract: ModelContract = DIGIT_CONTRACT) -> Path:
    """Write a float32 LiteRT flatbuffer of `model` (the contract's signature, frozen)."""
    tf = import_tensorflow("writing a LiteRT copy")
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    traced = xnnpack_safe(model)
    spec = tf.TensorSpec((None, *contract.input_shape), tf.float32, name=contract.input_name)
    output_name = contract.output_name

    @tf.function(input_signature=[spec])
    def serve(pixels):
        return {output_name: traced(pixels, training=False)}

    frozen = convert_variables_to_constants_v2(serve.get_concrete_function())

    # Re-wrapped so the signature keeps the contract's names: a frozen function returns a
    # flat list, and the converter would call its output "output_0".
    @tf.function(input_signature=[spec])
    def frozen_serve(pixels):
        return {output_name: frozen(pixels)[0]}

    # An empty trackable object: the frozen graph has nothing to track, and passing one
    # selects the converter's current path (it also writes the "serving_default" signature).
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [frozen_serve.get_concrete_function()], tf.Module())
    flatbuffer = converter.convert()
    out = Path(out_path)
    out.write_bytes(flatbuffer)
    return out


def xnnpack_safe(model):
    """`model` with each UnitNormalization traced as x * rsqrt(max(sum(x^2), eps^2)) (see the
    module docstring); every other layer is the original, weights shared. A model without
    one, or one Keras cannot clone (subclassed), is returned as it is."""
    import keras

    if not any(isinstance(layer, keras.layers.UnitNormalization) for layer in model.layers):
        return model

    class SafeUnitNormalization(keras.layers.Layer):
        def __init__(self, axis, **kwargs):
            super().__init__(**kwargs)
            self.axis = axis

        def call(self, x):
            ops = keras.ops
            square_sum = ops.sum(ops.square(x), axis=self.axis, keepdims=True)
            return x * ops.rsqrt(ops.maximum(square_sum, UNIT_NORM_EPSILON ** 2))

    def clone(layer):
        if isinstance(layer, keras.layers.UnitNormalization):
            return SafeUnitNormalization(layer.axis, name=layer.name)
        return layer  # the same layer object: same weights, nothing copied

    try:
        return keras.models.clone_model(model, clone_function=clone)
    except Exception:  # noqa: BLE001 - subclassed models cannot be cloned; validation judges
        return model


#: How far (percentage points) a float copy's test accuracy may sit from its source's. Float
#: rounding flips only near-ties, one image in 10,000 being 0.01 points; a broken copy (weights
#: read as zeros, NaN outputs) is tens of points off.
FLOAT_ACCURACY_TOLERANCE = 0.05


def predictor_accuracy(predictor, x: np.ndarray, y: np.ndarray, batch_size: int = 1000) -> float:
    """Top-1 accuracy (0..1) of any predictor over (x, y), in batches."""
    from digitkit.model.calls import in_calls

    preds = [predictor.predict(np.asarray(part, np.float32)).argmax(axis=1)
             for part in in_calls(x, batch_size)]
    return float(np.mean(np.concatenate(preds) == np.asarray(y))) if preds else 0.0


def accuracy_tolerance(n_images: int) -> float:
    """Points a float copy's accuracy may sit from its source's on `n_images`: the stated
    FLOAT_ACCURACY_TOLERANCE, or one image where a set is so small that one near-tie flip
    is more (a 200-image calibration folder: 0.5 points)."""
    return max(FLOAT_ACCURACY_TOLERANCE, 100.0 / n_images) if n_images else \
        FLOAT_ACCURACY_TOLERANCE


def check_tflite(path: Path, cases: list, atol: float, mnist, source_accuracy: float | None,
                 rtol: float = 0.0, contract: ModelContract = DIGIT_CONTRACT):
    """Validate a LiteRT copy: frozen weights, parity with the source on every case, and
    accuracy on the whole accuracy set (`mnist.x_test`: the MNIST test set, or a general
    model's calibration images; None: no accuracy check) against the source's."""
    from digitkit.errors import ModelError, one_line
    from digitkit.export.validate import ArtifactValidation, compare, human_size
    from digitkit.predictors.litert import VARIABLE_OPS, LiteRTPredictor, runtime_version

    runtime = runtime_version(allow_tensorflow=True)
    try:
        predictor = LiteRTPredictor(path, allow_tensorflow=True).load()
        variables = predictor.ops() & VARIABLE_OPS
        if variables:
            raise ModelError(f"weights left as resource variables ({', '.join(sorted(variables))}"
                             "): the interpreter reads them as zeros; convert a frozen graph")
    except Exception as e:  # noqa: BLE001 - any load failure is this copy's failure
        return ArtifactValidation("tflite", runtime, atol, error=one_line(e))
    res = compare("tflite", runtime, predictor.outputs, cases, atol, rtol, contract)
    size = human_size(path.stat().st_size)
    if mnist.x_test is None or source_accuracy is None:
        res.notes = f"size {size}; run on {runtime} with XNNPACK"
        return res
    n = len(mnist.x_test)
    allowed = accuracy_tolerance(n)
    acc = predictor_accuracy(predictor, mnist.x_test, mnist.y_test)
    diff = (acc - source_accuracy) * 100
    res.extra["accuracy"] = {
        "test_images": int(n),
        "accuracy": round(acc, 6),
        "source_accuracy": round(source_accuracy, 6),
        "difference_points": round(diff, 4),
        "max_difference_points": round(allowed, 4),
    }
    res.notes = (f"test accuracy {acc:.2%} vs Keras {source_accuracy:.2%} on "
                 f"{n} images; size {size}; run on {runtime} with XNNPACK")
    if abs(diff) > allowed:
        res.failure = (f"test accuracy {acc:.2%} differs from the source's "
                       f"{source_accuracy:.2%} by {diff:+.2f} points (allowed "
                       f"{allowed:g})")
    return res
