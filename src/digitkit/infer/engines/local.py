"""The local engine: every per-file step in a pool of worker processes on this machine.

Design, for throughput at bounded memory:
- Every per-file step runs in a pool of worker processes, `workers` of them (default: one per
  usable core): decode + preprocess, inference on the worker's own predictor (ONNX Runtime,
  or the --runtime's row of the runtime table; one thread, no spinning), and the rows' text.
  The main process only walks the folders, hands out paths, and writes each chunk's text in
  order: it does little per file, so it does not hold the workers up (what each stage
  costs: BENCHMARKS.md, "`digitkit infer`: what each stage costs").
- Files travel in tasks of TASK_BATCHES x `batch_size` paths (one pickled list of paths
  out, one string of rows back); the worker predicts them `batch_size` at a time. A task
  costs the main process the same whatever its size (waking, polling, two pipe transfers),
  so larger tasks spread it over more images.
- At most 2 x workers + 2 tasks are in flight: enough to keep every worker busy while the
  main process writes, and memory stays constant however many files there are.
- No file can take the run down: the pool (`digitkit.infer.pool.isolation`) survives a worker
  that crashes, is killed or overruns the per-file time limit, retries that worker's chunk
  one file at a time, and gives the file that did it an error row. A run that fits in one
  chunk gets one worker, isolated all the same; only `workers=0` decodes in this process
  (no isolation, no time limit: for debugging).
- Workers that run the model are forked from the main process itself while it has loaded
  no runtime and runs no thread of ours: they start with its imports and add only the
  runtime and OpenCV. Otherwise they are forked from a forkserver that imported the decoder
  and ONNX Runtime once (imports paid once rather than once per worker).
- TensorFlow models (a SavedModel or Keras file, --runtime tensorflow) are predicted in the
  main process (TensorFlow in forked workers is asking for trouble); the workers then only
  decode.
- Results are consumed in submission order, so rows come out in input order.
- Files become the model's pixels by its contract (`spec.contract`, resolved once by
  `run_infer`): the MNIST digit decoder for digit models, the contract's pixel policy
  (`digitkit.images.pixels`) for any other classifier; rows carry its class names.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterable, Iterator
from itertools import chain, islice

import numpy as np

from digitkit.environment import usable_cpus
from digitkit.errors import UsageError
from digitkit.images import MAX_FILE_SIZE, decoder_for, iter_image_paths, no_pixels
from digitkit.infer.pool.isolation import (
    Crash,
    FileTimer,
    WorkerPool,
    decode_worker,
    join_decoded,
    start_forkserver,
)
from digitkit.infer.results.formats import DEFAULT_FORMAT, encode_predictions, join_encoded
from digitkit.infer.results.rows import row_names
from digitkit.infer.spec import DEFAULT_BATCH_SIZE, BatchEngine, EncodedRows, InferSpec
from digitkit.predictors import regime_settings
from digitkit.predictors.serving import forkable, open_in_worker, open_serving, serving_model

#: What the forkserver imports once for every worker: the worker code, the decoder (with
#: OpenCV) and ONNX Runtime (imports paid once instead of once per worker).
_WORKER_PRELOAD = ["digitkit.infer.engines.local", "digitkit.infer.pool.isolation",
                   "digitkit.images", "digitkit.predictors.ort", "cv2", "onnxruntime"]
#: Inference batches per worker task. Four (1,024 images at the default batch): the main
#: process's per-task cost is spread over four times the images, a task still outlasts the
#: main process's longest pause (sorting a large folder's names) so the task queued behind
#: it keeps the worker busy, and a worker crash retries at most 1,024 files one by one
#: (BENCHMARKS.md, "Tasks of four batches").
TASK_BATCHES = 4
#: Forking this process is safe on Linux before any ONNX Runtime session exists; elsewhere
#: fork is not (macOS) or not there (Windows).
_CAN_FORK = sys.platform.startswith("linux")


def check(spec: InferSpec) -> None:
    """Fail now, before any work, on what the run cannot do."""
    if spec.address is not None:
        raise UsageError("--address is for the ray engine (--engine ray)")
    serving = serving_model(spec.model, spec.runtime, spec.precision)
    open_serving(serving.path, serving.runtime, 1)  # the model's kind and file; loads nothing


def classify_encoded(predictor, paths: list, top_k: int, fmt: str,
                     max_file_size: int = MAX_FILE_SIZE, timer: FileTimer | None = None,
                     batch_size: int = DEFAULT_BATCH_SIZE, contract=None) -> EncodedRows:
    """Decode, classify and encode `paths` in this process; bad files get error rows.
    `contract`: the model's (decoder and class names; None: digits)."""
    pixels, reasons = decoder_for(contract)(paths, max_file_size, timer and timer.on_file)
    if timer is not None:
        timer.stop()  # the limit is for decoding; the batch's inference is not a file's
    return encode_predictions(paths, reasons, predict_batches(predictor, pixels, batch_size),
                              top_k, fmt, row_names(contract))


def predict_batches(predictor, pixels: np.ndarray, batch_size: int) -> np.ndarray | None:
    """Probabilities for `pixels` (digits' uint8, or float32), `batch_size` images per
    inference call."""
    if not len(pixels):
        return None
    x = pixels if pixels.dtype == np.float32 else pixels.astype(np.float32)
    if len(x) <= batch_size:
        return predictor.predict(x)
    return np.concatenate([predictor.predict(x[i:i + batch_size])
                           for i in range(0, len(x), batch_size)])


def local_engine(spec: InferSpec, paths: Iterable[str]) -> Iterator[EncodedRows]:
    """Yield each task's encoded rows, in input order. workers=0 does everything in this
    process; otherwise the model runs in the workers, TensorFlow here."""
    workers = usable_cpus() if spec.workers is None else spec.workers
    fmt, top_k, limits = spec.fmt or DEFAULT_FORMAT, spec.top_k, spec.limits
    contract = spec.resolved_contract
    names, decode, empty = row_names(contract), decoder_for(contract), no_pixels(contract)
    # The same rule `bench` measures: every core, spinning only for small batches (at chunk
    # sizes the decoders' cores are not spun on).
    serving = serving_model(spec.model, spec.runtime, spec.precision)
    predictor = open_serving(serving.path, serving.runtime, usable_cpus(),
                             settings=regime_settings(spec.batch_size, usable_cpus()),
                             trust_model=spec.trust_model, device=spec.device)
    in_workers = forkable(serving.runtime, serving.path)
    batch = spec.batch_size
    task = batch * TASK_BATCHES
    chunks = _chunks(paths, batch if workers == 0 else task)
    first = next(chunks, None)
    if first is None:
        return
    chunks = chain((first,), chunks)
    if workers == 0:  # everything here, as asked
        for chunk in chunks:
            yield classify_encoded(predictor, chunk, top_k, fmt, limits.max_file_size,
                                   batch_size=batch, contract=contract)
        return

    def predict_here(chunk, parts):  # workers that only decode: the model runs here
        pixels, reasons = join_decoded(parts, empty)
        return encode_predictions(chunk, reasons, predict_batches(predictor, pixels, batch),
                                  top_k, fmt, names)

    if len(first) < task and in_workers and _CAN_FORK:
        # All of it is one task: one worker, forked from this process (a fork is cheap; a
        # worker from the forkserver pays its imports first), that only decodes; the model runs
        # here. Nothing has loaded the runtime or started threads of ours yet.
        with WorkerPool(1, decode_worker, (limits.max_file_size, decode), limits.file_timeout,
                        context="fork") as pool:
            for chunk, parts in pool.map(chunks, 1):
                yield predict_here(chunk, parts)
        return
    if len(first) < task:
        workers = 1  # all of it is one task: more workers would only cost their start-up
    # Workers that run the model are forked from this process while it runs no thread of
    # ours and has loaded no runtime: they start with the modules it has imported already and
    # import only the runtime and OpenCV, each in parallel; a forkserver would first import
    # the whole stack again, on its own, while this process and the cores wait. Otherwise
    # (TensorFlow runs here, or a thread is running) they come from a clean forkserver that
    # preloaded the decoder, never from this process.
    context = "fork" if in_workers and _CAN_FORK and _single_threaded() else "forkserver"
    if context == "forkserver":
        start_workers_early()
    if in_workers:
        setup = (_classify_worker, (str(serving.path), serving.runtime, top_k, fmt,
                                    limits.max_file_size, batch, spec.device, contract))

        def finish(chunk, parts):
            return join_encoded([
                encode_predictions(chunk[lo:hi], [v.reason] * (hi - lo), None, top_k, fmt,
                                   names)
                if isinstance(v, Crash) else v for lo, hi, v in parts], fmt)
    else:
        setup, finish = (decode_worker, (limits.max_file_size, decode)), predict_here

    with WorkerPool(workers, *setup, limits.file_timeout, context=context) as pool:
        for chunk, parts in pool.map(chunks, 2 * workers + 2):
            yield finish(chunk, parts)


def _single_threaded() -> bool:
    """Whether this process runs no thread of ours but the main one (the native pools of
    numpy's BLAS, started at its import, take care of a fork themselves)."""
    return threading.active_count() == 1


def _chunks(it: Iterable, n: int) -> Iterator[list]:
    it = iter(it)
    while chunk := list(islice(it, n)):
        yield chunk


# -- the workers ----------------------------------------------------------------------------


def start_workers_early() -> None:
    """Start the forkserver now, without waiting for it: its imports then run while this
    process goes on with its own start-up (discovery, resume scan), instead of after."""
    start_forkserver(_WORKER_PRELOAD)


def _classify_worker(model_path: str, runtime: str | None, top_k: int, fmt: str,
                     max_file_size: int, batch_size: int, device: str = "cpu",
                     contract=None):
    """A WorkerPool setup: the worker's own predictor (`open_in_worker`: one core's regime,
    as `auto` calibrates), loaded once, before the worker reports ready (a model that does
    not load fails the run, not a file)."""
    predictor = open_in_worker(model_path, runtime, batch_size, device).load()

    def work(paths: list, timer: FileTimer) -> EncodedRows:
        return classify_encoded(predictor, paths, top_k, fmt, max_file_size, timer, batch_size,
                                contract)

    return work


class LocalEngine(BatchEngine):
    """Worker processes on this machine."""

    name = "local"
    check = staticmethod(check)
    find = staticmethod(iter_image_paths)
    run = staticmethod(local_engine)


ENGINE = LocalEngine()
