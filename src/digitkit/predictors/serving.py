"""Which copy of MODEL, on which row of the runtime table, serves `infer --runtime
--precision`; and the predictor that opens it in a process of a given size.

`serving_model` decides once, in the main process, before anything loads:
- no --runtime and a model file: the file's natural runtime, exactly as before
  (`open_predictor`: ONNX Runtime for .onnx, TensorFlow for a SavedModel or Keras file);
- otherwise the row of `RUNTIMES` whose group is the runtime and whose precision is
  --precision, on that row's copy: an export directory's own copy (`read_export_dir`), or
  the one file given, filed as the copy it is (`ModelCopies.add`).

The resolution is idempotent: the chosen copy, resolved again with the same --runtime and
--precision, gives the same row, so `run_infer` hands the engines the copy with the user's
request unchanged and each engine (and each Ray driver) resolves its row the same way.

A serving runtime is then opened through the table's own opener (`open_runtime`): the same
per-regime settings `bench` times, from one source, on `--device` (`check_device` refuses
one the row does not have, or that is not there, before any work).

A worker process (the local engine's workers) serves with one core's share of the machine:
`worker_regime` is the one rule for its threads and spinning, `open_in_worker` the opener, and
`auto`'s calibration times each candidate in that same regime when infer runs workers, so
what it measures is what a worker runs (a runtime's own settings, such as OpenVINO's pinning,
are its predictor's, the same for both).

`--runtime auto` is decided before all this, by `predictors.choice.choose`: it names the
row's group and precision, which then resolve here like any other request.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from digitkit.errors import DependencyError, ModelError, UsageError
from digitkit.model.files import (
    KERAS_H5,
    KERAS_V3,
    ModelCopies,
    identify,
    is_export_dir,
    read_export_dir,
)
from digitkit.predictors.devices import DEFAULT_DEVICE, device_kind
from digitkit.predictors.runtimes import RUNTIMES, Runtime

#: The default precision: the float model as exported.
DEFAULT_PRECISION = "fp32"
#: How an int8 ONNX file is named (`digitkit export --quantize int8`).
INT8_FILE_SUFFIX = ".int8.onnx"
#: The natural runtime name that is no row: TensorFlow on a Keras file (the table's Keras rows
#: are benchmark harnesses, tf.function and model.predict, not how infer serves one).
_TENSORFLOW = "tensorflow"
#: How a refusal names the copy a model file is.
_DESCRIBED = {"keras": "Keras/SavedModel model", "saved_model": "Keras/SavedModel model",
              "onnx": ".onnx model", "onnx_int8": "int8 .onnx model", "tflite": ".tflite model"}
#: Groups of the table that are not infer runtimes: the Keras harnesses (see above).
_NOT_SERVING = ("keras",)


def serving_runtimes() -> tuple[str, ...]:
    """What `infer --runtime` takes: the table's groups, in its order."""
    return tuple(dict.fromkeys(r.group for r in RUNTIMES.values()
                               if r.group not in _NOT_SERVING))


def precisions() -> tuple[str, ...]:
    """What `infer --precision` takes: the table's precisions, fp32 first."""
    return tuple(dict.fromkeys([DEFAULT_PRECISION, *(r.precision for r in RUNTIMES.values())]))


def serving_row(runtime: str, precision: str = DEFAULT_PRECISION) -> Runtime:
    """The table's row for `runtime` (a group) at `precision`; UsageError when it has none."""
    if runtime not in serving_runtimes():
        raise UsageError(f"unknown runtime {runtime!r}; choose from "
                         f"{', '.join(serving_runtimes())}")
    rows = [r for r in RUNTIMES.values() if r.group == runtime]
    for r in rows:
        if r.precision == precision:
            return r
    raise UsageError(f"--runtime {runtime} has no {precision} row; it runs "
                     f"{', '.join(r.precision for r in rows)}")


@dataclass(frozen=True)
class Serving:
    """path: the file the runtime opens. runtime: the RUNTIMES row's name, or None for the
    model file's natural runtime (`open_predictor`). precision: what it computes in."""

    path: Path
    runtime: str | None
    precision: str = DEFAULT_PRECISION
    #: what serves it, as the summary states it: the row's name (TensorFlow on a Keras file,
    #: which has no row: "tensorflow")
    name: str = _TENSORFLOW


def serving_model(model: str | os.PathLike, runtime: str | None = None,
                  precision: str = DEFAULT_PRECISION) -> Serving:
    """What serves `model` on `runtime` at `precision` (see the module docstring).
    UsageError: a runtime/precision pair the table has no row for, or a file that is not that
    row's copy. ModelError: an export directory without the row's copy. DependencyError: the
    row's extra is not installed or this CPU cannot run it."""
    if precision not in precisions():
        raise UsageError(f"--precision {precision} is for --runtime auto; a named runtime "
                         f"runs {', '.join(precisions())}")
    p = Path(model)
    if is_export_dir(p):
        copies = read_export_dir(p)
        row = serving_row(runtime or "onnxruntime", precision)
        path = getattr(copies, row.copy)
        if path is None:
            raise ModelError(f"{p}: no {row.copy} copy for --runtime {row.group} "
                             f"--precision {row.precision} (the export directory holds "
                             f"{', '.join(c for c in copies.COPIES if getattr(copies, c))})")
        return _serving(identify(path), row)
    file = identify(p)
    if runtime is None and precision == DEFAULT_PRECISION:
        return _natural(file)  # no flags: the file's natural runtime, unchanged
    runtime = runtime or file.runtime
    if runtime == _TENSORFLOW and file.kind in (KERAS_H5, KERAS_V3):
        if precision != DEFAULT_PRECISION:
            serving_row(runtime, precision)  # the table's own refusal
        return Serving(file.path, None)  # Keras on TensorFlow, as before
    row = serving_row(runtime, precision)
    copies = ModelCopies(name=file.path.name)
    copies.add(file)
    if getattr(copies, row.copy) is None:
        held = _DESCRIBED[next(c for c in copies.COPIES if getattr(copies, c))]
        if row.group != file.runtime:
            raise UsageError(f"{file.path}: a {held} runs on {file.runtime}, not {row.group}")
        raise UsageError(f"{file.path}: a {held}, not the {row.copy} copy --precision "
                         f"{row.precision} runs; give that file or the export directory")
    return _serving(file, row)


def _natural(file) -> Serving:
    """A model file on its natural runtime, named by its row (an int8 file by its name)."""
    if file.kind in (KERAS_H5, KERAS_V3):
        return Serving(file.path, None)
    row = serving_row(file.runtime, DEFAULT_PRECISION)
    if file.path.name.endswith(INT8_FILE_SUFFIX):
        row = serving_row(file.runtime, "int8")
    return Serving(file.path, None, row.precision, row.name)


def _serving(file, row: Runtime) -> Serving:
    """`row` on `file`; the file's natural runtime at fp32 is opened as it always was."""
    if row.group == file.runtime and row.precision == DEFAULT_PRECISION:
        return Serving(file.path, None, name=row.name)
    why = row.unavailable()
    if why is not None:
        raise DependencyError(f"--runtime {row.group} --precision {row.precision} "
                              f"({row.name}): {why}")
    return Serving(file.path, row.name, row.precision, row.name)


def check_device(serving: Serving, device: str) -> None:
    """Refuse `device` for what serves (see `Runtime.check_device`): one line, before any
    work. TensorFlow on a Keras file, which has no row, runs on the CPU."""
    row = RUNTIMES.get(serving.name)
    if row is None:
        if device_kind(device) != DEFAULT_DEVICE:
            raise UsageError(f"--device {device}: {serving.name} runs on cpu")
        return
    row.check_device(device)


def open_serving(model: str | os.PathLike, runtime: str | None, threads: int | None,
                 spinning: bool | None = None, settings=None, trust_model: bool = False,
                 device: str = DEFAULT_DEVICE):
    """The predictor serving `model` (already resolved by `serving_model`) on `runtime` (a
    row name, or None: the natural runtime with ONNX Runtime `settings`), in a process of
    `threads` threads, on `device`; `spinning` None: per regime, as bench times it;
    `trust_model`: run a model the safety rule (model.safety) refuses."""
    if runtime is None:
        from dataclasses import replace

        from digitkit.predictors import open_predictor
        from digitkit.predictors.ort import DEFAULT_SETTINGS

        if device != DEFAULT_DEVICE:
            settings = replace(settings or DEFAULT_SETTINGS, device=device)
        return open_predictor(model, None, settings, trust_model=trust_model)
    return RUNTIMES[runtime].open(model, threads, spinning, trust_model, device)


#: How many cores a worker process's runtime takes: one, the workers fill every core between
#: them (one per usable core by default) and decode on the same cores.
WORKER_CORES = 1


def worker_regime(batch: int) -> tuple[int, bool]:
    """(threads, spinning) of a worker's runtime running batches of `batch`: ONNX Runtime's
    `regime_settings` for one core, which every runtime's threads follow."""
    from digitkit.predictors.ort import regime_settings

    settings = regime_settings(batch, WORKER_CORES)
    return settings.threads, settings.spinning


def open_in_worker(model: str | os.PathLike, runtime: str | None, batch: int,
                   device: str = DEFAULT_DEVICE, trust_model: bool = False):
    """The predictor a worker process serves `model` with (see `open_serving`), in
    `worker_regime(batch)`: what `auto`'s calibration times for a run with workers."""
    from digitkit.predictors.ort import regime_settings

    threads, spinning = worker_regime(batch)
    return open_serving(model, runtime, threads, spinning,
                        settings=regime_settings(batch, WORKER_CORES),
                        trust_model=trust_model, device=device)


def forkable(runtime: str | None, model: str | os.PathLike) -> bool:
    """Whether worker processes may run this runtime: every one but TensorFlow, which is
    asking for trouble in forked processes (it runs in the main process instead)."""
    if runtime is None:
        return identify(model).runtime != _TENSORFLOW
    return RUNTIMES[runtime].extra != RUNTIMES["tf-savedmodel"].extra


__all__ = ["DEFAULT_PRECISION", "WORKER_CORES", "Serving", "check_device", "forkable",
           "open_in_worker", "open_serving", "precisions", "serving_model", "serving_row",
           "serving_runtimes", "worker_regime"]
