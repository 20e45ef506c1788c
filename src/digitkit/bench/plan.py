"""What a bench run will measure: the model copies behind the MODEL arguments, the runtimes
that run on each, and the inputs they all share.

What a model file is comes from the model layer (`identify`, `read_export_dir`); which
runtimes exist comes from the predictor layer (`RUNTIMES`). This module only decides.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from digitkit import images
from digitkit.bench.config import INT8_RUNTIME
from digitkit.data import load_mnist
from digitkit.errors import DependencyError, ModelError, UsageError
from digitkit.model.files import (
    INT8_FILE,
    ONNX_FILE,
    SAVEDMODEL_DIR,
    SOURCE_COPY,
    TFLITE_FILE,
    ModelCopies,
    identify,
    is_export_dir,
    read_export_dir,
)
from digitkit.predictors import RUNTIMES

ORT_RUNTIMES = tuple(r.name for r in RUNTIMES.values() if r.group == "onnxruntime")
#: TensorFlow's own paths (the baseline of issue 5's targets).
TF_RUNTIMES = tuple(r.name for r in RUNTIMES.values() if r.group in ("tensorflow", "keras"))
#: Every other runtime running in fp32: what ONNX Runtime's float runtime is held against.
FP32_PEERS = tuple(r.name for r in RUNTIMES.values()
                   if r.group != "onnxruntime" and r.precision == "fp32")

#: How a missing copy is named in messages: what the user would have to add.
_COPY_NAMES = {"onnx": f"ONNX ({ONNX_FILE})", "onnx_int8": f"int8 ONNX ({INT8_FILE})",
               "saved_model": f"SavedModel ({SAVEDMODEL_DIR}/)", "keras": f"Keras ({SOURCE_COPY})",
               "tflite": f"LiteRT ({TFLITE_FILE})"}


def copy_for(model: ModelCopies, runtime: str) -> Path | None:
    """The copy of `model` that `runtime` loads (None when the model has none)."""
    return getattr(model, RUNTIMES[runtime].copy)


def copy_size(path: Path) -> int:
    """Bytes on disk of one copy (a SavedModel directory counts every file in it)."""
    p = Path(path)
    if p.is_dir():
        return sum(q.stat().st_size for q in p.rglob("*") if q.is_file())
    return p.stat().st_size


def available_runtimes(runtimes: list[str]) -> tuple[list[str], dict[str, str]]:
    """(runtimes that can run here, {runtime: why not} for the others).

    A runtime that is not installed (or whose precision this CPU lacks) is
    listed as such in the results, never counted as a failure; only when nothing at all is
    left to run is that an error, naming what to install."""
    missing = {r: why for r in runtimes if (why := RUNTIMES[r].unavailable()) is not None}
    runnable = [r for r in runtimes if r not in missing]
    if not runnable:
        raise DependencyError("no requested runtime can run here: " + "; ".join(
            f"{r}: {why}" for r, why in missing.items()))
    return runnable, missing


def resolve_models(paths: Iterable[str | os.PathLike]) -> list[ModelCopies]:
    """Each export directory is one model; individual files together form one more."""
    models: list[ModelCopies] = []
    loose = None
    for raw in paths:
        p = Path(raw)
        if is_export_dir(p):
            models.append(read_export_dir(p))
            continue
        model = identify(p)
        if loose is None:
            loose = ModelCopies(name=p.resolve().parent.name or "model")
            models.append(loose)
        loose.add(model)
    if not models:
        raise UsageError("no MODEL given")
    names = [m.name for m in models]
    for i, m in enumerate(models):  # two exports both called "export" still need labels
        if names.count(m.name) > 1:
            m.name = f"{m.name}#{i + 1}"
    return models


def plan_runtimes(models: list[ModelCopies], runtimes: list[str], required: set[str],
                  warn=lambda msg: None) -> dict[str, list[str]]:
    """Model name -> runtimes to run; a required runtime without its copy is an error."""
    plan = {}
    for m in models:
        chosen = []
        for e in runtimes:
            if copy_for(m, e) is not None:
                chosen.append(e)
            elif e in required:
                raise ModelError(f"{m.name}: no {_COPY_NAMES[RUNTIMES[e].copy]} copy for "
                                 f"runtime {RUNTIMES[e].group} ({e})")
            elif e != INT8_RUNTIME:
                warn(f"{m.name}: no {_COPY_NAMES[RUNTIMES[e].copy]} copy, skipping {e}")
        if not chosen:
            raise ModelError(f"{m.name}: no model copy for any requested runtime")
        plan[m.name] = chosen
    return plan


def find_images(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """The image files of --images, found as `digitkit infer` finds them."""
    paths = list(paths)
    found = list(images.find_images(paths))
    if not found:
        raise UsageError(f"--images: no images found in {', '.join(map(str, paths))}")
    return found


def mnist_test(data: str | os.PathLike | None):
    """(x_test uint8, y_test, source description): the inputs every runtime is timed on."""
    d = load_mnist(data)
    return d.x_test, d.y_test, d.source


#: Stand-in inputs of a general classifier benched without --calibration: enough distinct
#: images that no runtime times a cache-hot input, few enough that a 224x224x3 model's
#: stay small (150 MB).
STAND_IN_IMAGES = 256


def models_contract(models: list[ModelCopies]):
    """The one contract every model of a bench run is run under (its input shape, pipeline
    and class names: `predictors.runnable.model_contract`, read from what each carries);
    UsageError when they differ (they could not share inputs)."""
    from digitkit.predictors.runnable import model_contract

    found = {}
    for m in models:
        where = next(Path(getattr(m, c)) for c in m.COPIES if getattr(m, c) is not None)
        found.setdefault(model_contract(where), m.name)
    if len(found) > 1:
        raise UsageError("the models of one bench run share their inputs: "
                         + "; ".join(f"{name}: {c.input_text()}, {c.num_classes} classes"
                                     for c, name in found.items()))
    return next(iter(found))


def contract_inputs(contract, calibration, data):
    """(inputs, their labels or None, description): what every runtime is timed and checked
    on. A labelled folder when --calibration names one (decoded as infer decodes for this
    model, folders matched to its class names); else MNIST test images for digits, seeded
    random pixels of the contract's shape for any other classifier (no accuracy)."""
    import numpy as np

    if calibration is not None:
        from digitkit.images.labelled import load_labelled

        s = load_labelled(calibration, images.decoder_for(contract), contract.class_names)
        return (s.pixels, s.labels, f"{len(s):,} images of --calibration {calibration} "
                f"({contract.num_classes} classes)")
    if contract.is_digit:
        x, y, source = mnist_test(data)
        return x, y, f"MNIST test images ({len(x)}) from {source}"
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (STAND_IN_IMAGES, *contract.pixels_shape)).astype(np.float32)
    return x, None, (f"{STAND_IN_IMAGES} random pixel images {contract.shape_text()} (no "
                     "--calibration folder: no accuracy)")
