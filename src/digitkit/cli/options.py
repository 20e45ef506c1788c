"""Options more than one command takes, declared once."""

from __future__ import annotations

import click

#: export, infer and bench: the opt-in past digitkit.model.safety's rule for each format.
trust_model_option = click.option(
    "--trust-model", is_flag=True,
    help="Run a model that can do more than compute: a Keras file with Lambda or custom "
         "layers (they run Python code), a SavedModel whose graph reads or writes files or "
         "runs anything but tensor ops. Only for a model whose source you trust.")

#: bench and infer: where the runtimes that have one run (predictors.devices.DEVICES).
device_option = click.option(
    "--device", default="cpu", show_default=True, metavar="cpu|cuda[:N]|tensorrt[:N]|gpu[:N]",
    help="Where the model runs: ONNX Runtime's CUDA or TensorRT provider (onnxruntime-gpu; "
         "gpu means CUDA there), OpenVINO's GPU plugin (gpu). A device or provider that is "
         "missing is an error, never a quiet run on the CPU. LiteRT and TensorFlow run on "
         "the CPU.")
