"""What a bench run will measure: the model copies behind the MODEL arguments, the engines
that run on each, and the inputs they all share.

What a model file is comes from the model layer (`identify`, `read_export_dir`); which
engines exist comes from the predictor layer (`ENGINES`). This module only decides.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from digitkit import images
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
from digitkit.predictors import ENGINES

#: The engine that runs "when present" inside the onnxruntime group: an export made without
#: --quantize has no int8 copy, and that is normal, not worth an error or a note.
INT8_ENGINE = "onnxruntime-int8"
ORT_ENGINES = tuple(e.name for e in ENGINES.values() if e.runtime == "onnxruntime")
#: TensorFlow's own paths (the baseline of issue 5's targets).
TF_ENGINES = tuple(e.name for e in ENGINES.values() if e.runtime in ("tensorflow", "keras"))
#: Every other runtime running in fp32: what ONNX Runtime's float engine is held against.
FP32_PEERS = tuple(e.name for e in ENGINES.values()
                   if e.runtime != "onnxruntime" and e.precision == "fp32")

#: How a missing copy is named in messages: what the user would have to add.
_COPY_NAMES = {"onnx": f"ONNX ({ONNX_FILE})", "onnx_int8": f"int8 ONNX ({INT8_FILE})",
               "saved_model": f"SavedModel ({SAVEDMODEL_DIR}/)", "keras": f"Keras ({SOURCE_COPY})",
               "tflite": f"LiteRT ({TFLITE_FILE})"}


def runtime_groups() -> dict[str, list[str]]:
    """User-facing runtime group (--runtimes) -> its engines, in the engine table's order."""
    groups: dict[str, list[str]] = {}
    for e in ENGINES.values():
        groups.setdefault(e.runtime, []).append(e.name)
    return groups


def copy_for(model: ModelCopies, engine: str) -> Path | None:
    """The copy of `model` that `engine` loads (None when the model has none)."""
    return getattr(model, ENGINES[engine].copy)


def copy_size(path: Path) -> int:
    """Bytes on disk of one copy (a SavedModel directory counts every file in it)."""
    p = Path(path)
    if p.is_dir():
        return sum(q.stat().st_size for q in p.rglob("*") if q.is_file())
    return p.stat().st_size


def available_engines(engines: list[str]) -> tuple[list[str], dict[str, str]]:
    """(engines that can run here, {engine: why not} for the others).

    An engine whose optional runtime is not installed (or whose precision this CPU lacks) is
    listed as such in the results, never counted as a failure; only when nothing at all is
    left to run is that an error, naming what to install."""
    missing = {e: why for e in engines if (why := ENGINES[e].unavailable()) is not None}
    runnable = [e for e in engines if e not in missing]
    if not runnable:
        raise DependencyError("no requested runtime can run here: " + "; ".join(
            f"{e}: {why}" for e, why in missing.items()))
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


def plan_engines(models: list[ModelCopies], engines: list[str], required: set[str],
                 warn=lambda msg: None) -> dict[str, list[str]]:
    """Model name -> engines to run; a required engine without its copy is an error."""
    plan = {}
    for m in models:
        chosen = []
        for e in engines:
            if copy_for(m, e) is not None:
                chosen.append(e)
            elif e in required:
                raise ModelError(f"{m.name}: no {_COPY_NAMES[ENGINES[e].copy]} copy for "
                                 f"runtime {ENGINES[e].runtime} ({e})")
            elif e != INT8_ENGINE:
                warn(f"{m.name}: no {_COPY_NAMES[ENGINES[e].copy]} copy, skipping {e}")
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
    """(x_test uint8, y_test, source description): the inputs every engine is timed on."""
    d = load_mnist(data)
    return d.x_test, d.y_test, d.source
