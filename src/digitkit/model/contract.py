"""The one input/output contract every digitkit model and exported copy honours.

  input  "pixels":        float32, shape (N, 28, 28), values 0..255, white ink on black (MNIST)
  output "probabilities": float32, shape (N, 10), softmax over the digits 0..9

Preprocessing lives inside the graph, so Keras, the SavedModel and ONNX Runtime all see raw
pixels and nobody has to remember a normalisation constant.
"""

from __future__ import annotations

from digitkit import CLASS_NAMES
from digitkit.errors import ModelError

INPUT_NAME = "pixels"
OUTPUT_NAME = "probabilities"
INPUT_SHAPE = (28, 28)
NUM_CLASSES = len(CLASS_NAMES)

#: The contract as written into every exported copy (ONNX metadata_props, export.json).
INPUT_CONTRACT = {
    "name": INPUT_NAME,
    "shape": ["N", *INPUT_SHAPE],
    "dtype": "float32",
    "value_range": [0, 255],
    "ink_polarity": "white ink on black background (MNIST convention)",
    "preprocessing": "none: normalisation is inside the graph; feed raw pixel values",
}
OUTPUT_CONTRACT = {
    "name": OUTPUT_NAME,
    "shape": ["N", NUM_CLASSES],
    "dtype": "float32",
    "meaning": "softmax probabilities, column i is class_labels[i]",
}


def check_keras_contract(path, model) -> None:
    """Raise ModelError unless a loaded Keras model maps (None, 28, 28) to (None, 10)."""
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ModelError(f"{path}: expected one input and one output, got "
                         f"{len(model.inputs)} and {len(model.outputs)}")
    in_shape = tuple(model.inputs[0].shape)
    out_shape = tuple(model.outputs[0].shape)
    if in_shape[1:] != INPUT_SHAPE:
        raise ModelError(f"{path}: input shape {in_shape}, expected (None, 28, 28) raw pixels")
    if out_shape[1:] != (NUM_CLASSES,):
        raise ModelError(f"{path}: output shape {out_shape}, expected (None, {NUM_CLASSES})")
