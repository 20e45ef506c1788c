"""The model layer: what a model file is, its contract, how it is loaded safely, and the
layout of an export directory. Nothing here imports TensorFlow at module level."""
