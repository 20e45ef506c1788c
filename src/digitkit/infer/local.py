"""The local engine: every per-file step in a pool of worker processes on this machine.

Design, for throughput at bounded memory:
- Every per-file step runs in a process pool, `workers` processes (default: one per usable
  core): decode + preprocess (~20 us per small PNG), inference on the worker's own ONNX
  Runtime session (one thread, no spinning: ~1 us per image for the MLP), and the rows'
  text. The main process only walks the folders, hands out paths, and writes each chunk's
  text in order: its per-file cost is a few microseconds, so it never holds the workers up.
- Files travel in chunks of `batch_size` paths per task (amortises inter-process overhead:
  one pickled list of paths out, one string of rows back) and each chunk is one inference
  batch.
- At most 2 x workers + 2 chunks are in flight: enough to keep every worker busy while the
  main process writes, and memory stays constant however many files there are.
- The workers are forked from a forkserver that imported the decoder and ONNX Runtime once
  (~0.25 s of imports, paid once rather than once per worker). A run that fits in one chunk
  never starts it: it is classified in the main process, which is faster for a few files.
- TensorFlow models (--runtime tensorflow) are predicted in the main process (TensorFlow in
  forked workers is asking for trouble); the workers then only decode.
- Results are consumed in submission order, so rows come out in input order.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import select
import signal
import threading
import time
import warnings
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from itertools import chain, islice

import numpy as np

from digitkit.environment import usable_cpus
from digitkit.errors import DigitkitError, UsageError
from digitkit.images import iter_image_paths, load_images
from digitkit.infer.rows import encode_predictions
from digitkit.infer.spec import EncodedRows, Engine, InferSpec
from digitkit.predictors import OnnxPredictor, OrtSettings, open_predictor

#: What the forkserver imports once for every worker: this module, the decoder (with
#: OpenCV) and ONNX Runtime (~0.6 s of imports, paid once instead of once per worker).
_WORKER_PRELOAD = ["digitkit.infer.local", "digitkit.images", "digitkit.predictors.ort",
                   "cv2", "onnxruntime"]
#: Each worker's own sessions: one thread, no spinning, because the workers already fill
#: every core.
_WORKER_ORT = OrtSettings(threads=1, spinning=False)


def check(spec: InferSpec) -> None:
    """Fail now, before any work, on what the run cannot do."""
    if spec.address is not None:
        raise UsageError("--address is for the ray engine (--engine ray)")
    open_predictor(spec.model, spec.runtime)  # the model's kind and file; loads nothing


def classify_encoded(predictor, paths: list, top_k: int, fmt: str) -> EncodedRows:
    """Decode, classify and encode `paths` in this process; bad files get error rows."""
    pixels, reasons = load_images(paths)
    probs = predictor.predict(pixels.astype(np.float32)) if len(pixels) else None
    return encode_predictions(paths, reasons, probs, top_k, fmt)


def local_engine(spec: InferSpec, paths: Iterable[str]) -> Iterator[EncodedRows]:
    """Yield chunks of encoded rows, in input order. workers=0 does everything in this
    process; otherwise ONNX models run in the workers, other runtimes here."""
    workers = usable_cpus() if spec.workers is None else spec.workers
    fmt, top_k = spec.fmt or "csv", spec.top_k
    # With decoders on every core, ONNX Runtime gets the cores too but must not spin-wait
    # on them: a heavy model (the CNN) then uses the cores the decoders leave idle.
    predictor = open_predictor(spec.model, spec.runtime,
                               OrtSettings(threads=usable_cpus(), spinning=workers == 0))
    chunks = _chunks(paths, spec.batch_size)
    first = next(chunks, None)
    if first is None:
        return
    chunks = chain((first,), chunks)
    if workers == 0 or len(first) < spec.batch_size:
        # Everything here: asked for, or all of it fits in one chunk, where starting the
        # workers would cost more than it saves (a 1-file run: 0.2 s instead of 0.4 s).
        for chunk in chunks:
            yield classify_encoded(predictor, chunk, top_k, fmt)
        return
    # forkserver: workers are forked from a clean server that preloaded the decoder, never
    # from this process (which may hold ONNX Runtime or TensorFlow threads by then).
    start_workers_early()  # before the pool object: its imports overlap the setup below
    max_in_flight = 2 * workers + 2
    pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("forkserver"),
                               initializer=_worker_init, initargs=(os.getpid(),))
    if predictor.runtime == "onnxruntime":
        model = str(predictor.model_path)

        def submit(chunk):
            return pool.submit(_classify_in_worker, chunk, model, top_k, fmt)

        def finish(chunk, future):
            return future.result()
    else:
        def submit(chunk):
            return pool.submit(load_images, chunk)

        def finish(chunk, future):
            pixels, reasons = future.result()
            probs = predictor.predict(pixels.astype(np.float32)) if len(pixels) else None
            return encode_predictions(chunk, reasons, probs, top_k, fmt)

    pending: deque = deque()
    try:
        for chunk in chunks:
            pending.append((chunk, submit(chunk)))
            if len(pending) >= max_in_flight:
                yield finish(*pending.popleft())
        while pending:
            yield finish(*pending.popleft())
    except BrokenProcessPool:
        raise DigitkitError("a worker process died (out of memory, or a crash in the image "
                            "library); the rows so far are written: rerun with --resume "
                            "and fewer --workers") from None
    finally:
        for _, fut in pending:
            fut.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


def _chunks(it: Iterable, n: int) -> Iterator[list]:
    it = iter(it)
    while chunk := list(islice(it, n)):
        yield chunk


# -- the workers ----------------------------------------------------------------------------


def start_workers_early() -> None:
    """Start the forkserver now, without waiting for it: its imports then run while this
    process goes on with its own start-up (discovery, resume scan), instead of after."""
    from multiprocessing import forkserver

    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(_WORKER_PRELOAD)
    forkserver.ensure_running()


def _worker_init(main_pid: int):
    # Ctrl-C goes to the whole process group; only the main process decides what to do.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_with, args=(main_pid,), daemon=True).start()
    # Over-limit images become error rows (load_image checks first); Pillow's own warning for
    # them would only repeat that on stderr.
    from PIL import Image

    warnings.simplefilter("ignore", Image.DecompressionBombWarning)


def _exit_with(pid: int) -> None:
    """End this worker when process `pid` ends. A worker waits for tasks on a pipe whose
    write end it holds too, so a main process killed outright (SIGKILL, the OOM killer)
    would leave it, and the forkserver, waiting forever."""
    try:
        fd = os.pidfd_open(pid)  # Linux: readable once the process is gone, no polling
        select.select([fd], [], [])
    except ProcessLookupError:
        pass  # gone already
    except (AttributeError, OSError):  # no pidfd here: look once a second
        while True:
            time.sleep(1)
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            except PermissionError:
                pass  # alive, under another user (a recycled pid): keep waiting
    os._exit(1)


#: Each worker's ONNX Runtime sessions, by model path: loaded on its first chunk, kept.
_WORKER_PREDICTORS: dict = {}


def _classify_in_worker(paths: list, model_path: str, top_k: int, fmt: str) -> EncodedRows:
    predictor = _WORKER_PREDICTORS.get(model_path)
    if predictor is None:
        predictor = OnnxPredictor(model_path, _WORKER_ORT).load()
        _WORKER_PREDICTORS[model_path] = predictor
    return classify_encoded(predictor, paths, top_k, fmt)


ENGINE = Engine("local", check=check, find=iter_image_paths, run=local_engine)
