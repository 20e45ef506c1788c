"""Batch inference: files in, one result row per file out, streamed in input order.

Engine-independent pieces (reused by the Ray engine): `decode_files` (decode + preprocess,
errors as values), `make_rows` (probabilities -> rows), `classify_batch` (both plus a
predictor) and `encode_predictions` (probabilities -> the output file's text, without Row
objects). `run_infer` owns everything around an engine: discovery, resume, the output file,
warnings, progress, and the accuracy summary.

The local engine (design, for throughput at bounded memory):
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
- Nothing is written before the first chunk is classified: a model that does not load fails
  before the output file exists.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import re
import signal
import sys
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

import numpy as np

from digitkit.errors import DigitkitError, UsageError
from digitkit.files import class_label_of, iter_image_paths
from digitkit.results import (
    PROB_DECIMALS,
    Row,
    RowWriter,
    check_new_output,
    encode_rows,
    format_for,
    scan_existing,
)

ENGINES = ("local", "ray")
#: 256 images per batch: large enough that per-batch costs (IPC, an inference call, one
#: write) vanish per image, small enough that rows stream out steadily and a Ctrl-C loses
#: little work.
DEFAULT_BATCH_SIZE = 256
#: Three labels show the runner-ups of a doubtful prediction without bloating every row.
DEFAULT_TOP_K = 3


#: Characters that make csv.writer quote a field (QUOTE_MINIMAL, "\\n" line terminator).
_CSV_SPECIAL = re.compile(r'[,"\r\n]')


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


# -- engine-independent pieces --------------------------------------------------------------


def decode_files(paths: list) -> tuple[np.ndarray, list[str]]:
    """Decode and preprocess `paths`. Returns (uint8 (n_ok, 28, 28) of the good files in
    order, a reason per path: "" for a good file)."""
    # Imported here: the main process of a pooled run never decodes (Pillow, OpenCV).
    from digitkit.preprocess import load_images

    return load_images([str(p) for p in paths])


def make_rows(paths: list, reasons: list[str], probs: np.ndarray | None, top_k: int) -> list[Row]:
    """Rows for `paths`; `probs` holds one (10,) row per good path, in order."""
    rows = []
    if probs is not None and len(probs):
        k = min(top_k, probs.shape[1])
        order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        top_p = np.take_along_axis(probs, order, axis=1)
        order_l, top_l = order.tolist(), top_p.tolist()
    j = 0
    for p, reason in zip(paths, reasons, strict=True):
        if reason:
            rows.append(Row(str(p), error=reason))
        else:
            rows.append(Row(str(p), order_l[j][0], top_l[j][0], tuple(order_l[j]),
                            tuple(top_l[j])))
            j += 1
    return rows


def predict_rows(predictor, paths: list, pixels: np.ndarray, reasons: list[str],
                 top_k: int) -> list[Row]:
    probs = predictor.predict(pixels.astype(np.float32)) if len(pixels) else None
    return make_rows(paths, reasons, probs, top_k)


def classify_batch(predictor, paths: list, top_k: int = DEFAULT_TOP_K) -> list[Row]:
    """Decode, preprocess and classify `paths` in this process; bad files get error rows."""
    pixels, reasons = decode_files(paths)
    return predict_rows(predictor, paths, pixels, reasons, top_k)


@dataclass(slots=True)
class EncodedRows:
    """A chunk of rows as the output file's text, with what the summary needs from them."""

    text: str
    count: int
    errors: list  # (path, reason) of each failed file, in order
    confusion: np.ndarray | None  # (10, 10) [true, predicted] over files in class folders


def encode_predictions(paths: list, reasons: list[str], probs: np.ndarray | None, top_k: int,
                       fmt: str) -> EncodedRows:
    """`encode_rows(make_rows(...), fmt)` plus the summary's counts, without a Row object
    per file: CSV rows are %-formatted straight from the top-k arrays (the same text
    csv.writer gives: paths that csv would quote take csv's way)."""
    errors = [(str(p), r) for p, r in zip(paths, reasons, strict=True) if r]
    if probs is None or not len(probs):
        probs = np.zeros((0, 10), np.float32)
    k = min(top_k, probs.shape[1])
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    top = np.take_along_axis(probs, order, axis=1)
    good = [str(p) for p, r in zip(paths, reasons, strict=True) if not r]
    confusion = _confusion(good, order[:, 0])
    if fmt != "csv" or errors:
        # JSON Lines, and chunks holding failures: the general (slower) encoder.
        text = encode_rows(make_rows(paths, reasons, probs, top_k), fmt)
        return EncodedRows(text, len(paths), errors, confusion)
    d = PROB_DECIMALS
    template = (f"%s,%d,%.{d}f," + " ".join(["%d"] * k) + ","
                + " ".join([f"%.{d}f"] * k) + ",\n")
    lines = [template % (p, o[0], t[0], *o, *t)
             for p, o, t in zip(good, order.tolist(), top.tolist(), strict=True)]
    for i, p in enumerate(good):
        if _CSV_SPECIAL.search(p):
            lines[i] = encode_rows(make_rows([p], [""], probs[i:i + 1], top_k), "csv")
    return EncodedRows("".join(lines), len(paths), errors, confusion)


def _confusion(good_paths: list[str], predicted: np.ndarray) -> np.ndarray | None:
    truth = _true_labels(good_paths)
    keep = (truth >= 0) & (predicted < 10)
    if not keep.any():
        return None
    return np.bincount(truth[keep] * 10 + predicted[keep], minlength=100).reshape(10, 10)


def _true_labels(paths: list[str]) -> np.ndarray:
    """`class_label_of` of each path (-1: none), computed once per run of paths that share
    their folder (a chunk's files mostly do): it costs more than the rest of a row."""
    out = np.empty(len(paths), np.int64)
    head, label = None, -1
    for i, p in enumerate(paths):
        h = p[:p.rfind(os.sep) + 1]
        if h != head:
            head = h
            found = class_label_of(p)
            label = -1 if found is None else found
        out[i] = label
    return out


def _encode_rows_batch(rows: list[Row], fmt: str) -> EncodedRows:
    """EncodedRows from Row objects (the Ray engine's batches)."""
    errors = [(r.path, r.error) for r in rows if r.error]
    good = [r for r in rows if not r.error and r.label is not None]
    confusion = _confusion([r.path for r in good], np.array([r.label for r in good], np.int64))
    return EncodedRows(encode_rows(rows, fmt), len(rows), errors, confusion)


def classify_encoded(predictor, paths: list, top_k: int, fmt: str) -> EncodedRows:
    """Decode, classify and encode `paths` in this process."""
    pixels, reasons = decode_files(paths)
    probs = predictor.predict(pixels.astype(np.float32)) if len(pixels) else None
    return encode_predictions(paths, reasons, probs, top_k, fmt)


# -- the local engine -----------------------------------------------------------------------


#: What the forkserver imports once for every worker: the decoder (with OpenCV) and ONNX
#: Runtime (~0.6 s of imports, paid once instead of once per worker).
_WORKER_PRELOAD = ["digitkit.infer", "digitkit.preprocess", "digitkit.runtimes", "cv2",
                   "onnxruntime"]


def start_workers_early() -> None:
    """Start the forkserver now, without waiting for it: its imports then run while this
    process goes on with its own start-up (discovery, resume scan), instead of after."""
    from multiprocessing import forkserver

    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(_WORKER_PRELOAD)
    forkserver.ensure_running()


def _worker_init():
    # Ctrl-C goes to the whole process group; only the main process decides what to do.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Over-limit images become error rows (load_image checks first); Pillow's own warning for
    # them would only repeat that on stderr.
    from PIL import Image

    warnings.simplefilter("ignore", Image.DecompressionBombWarning)


#: Each worker's ONNX Runtime sessions, by model path: loaded on its first chunk, kept.
_WORKER_PREDICTORS: dict = {}


def _classify_in_worker(paths: list, model_path: str, top_k: int, fmt: str) -> EncodedRows:
    predictor = _WORKER_PREDICTORS.get(model_path)
    if predictor is None:
        from digitkit.runtimes import OnnxPredictor

        # One thread each, no spinning: the workers already fill every core.
        predictor = OnnxPredictor(model_path, threads=1, spin=False).load()
        _WORKER_PREDICTORS[model_path] = predictor
    return classify_encoded(predictor, paths, top_k, fmt)


def _chunks(it: Iterable, n: int) -> Iterator[list]:
    it = iter(it)
    while chunk := list(islice(it, n)):
        yield chunk


def local_engine(predictor, paths: Iterable, *, batch_size: int, workers: int,
                 top_k: int, fmt: str = "csv") -> Iterator[EncodedRows]:
    """Yield chunks of encoded rows, in input order. workers=0 does everything in this
    process; otherwise ONNX models run in the workers, other runtimes here."""
    chunks = _chunks(paths, batch_size)
    first = next(chunks, None)
    if workers == 0 or first is None or len(first) < batch_size:
        # Everything here: asked for, or all of it fits in one chunk, where starting the
        # workers would cost more than it saves (a 1-file run: 0.2 s instead of 0.4 s).
        for chunk in _prepend(first, chunks):
            yield classify_encoded(predictor, chunk, top_k, fmt)
        return
    # forkserver: workers are forked from a clean server that preloaded the decoder, never
    # from this process (which may hold ONNX Runtime or TensorFlow threads by then).
    start_workers_early()  # before the pool object: its imports overlap the setup below
    in_workers = getattr(predictor, "runtime", None) == "onnxruntime"
    max_in_flight = 2 * workers + 2
    pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("forkserver"),
                               initializer=_worker_init)
    if in_workers:
        model = str(predictor.model_path)

        def submit(chunk):
            return pool.submit(_classify_in_worker, chunk, model, top_k, fmt)

        def finish(chunk, future):
            return future.result()
    else:
        def submit(chunk):
            return pool.submit(decode_files, chunk)

        def finish(chunk, future):
            pixels, reasons = future.result()
            probs = predictor.predict(pixels.astype(np.float32)) if len(pixels) else None
            return encode_predictions(chunk, reasons, probs, top_k, fmt)

    pending: deque = deque()
    try:
        for chunk in _prepend(first, chunks):
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


_ENGINE_FUNCS = {"local": local_engine}


def _engine_session(engine: str, address: str | None, workers: int | None):
    """A context yielding the engine's row generator. Ray is imported only when asked for
    (an optional extra), and connected before the output file is created."""
    if engine == "ray":
        from digitkit.ray_engine import session

        return session(address, workers)
    if address is not None:
        raise UsageError("--address is for the ray engine (--engine ray)")
    from contextlib import nullcontext

    return nullcontext(_ENGINE_FUNCS[engine])


# -- the run --------------------------------------------------------------------------------


@dataclass
class InferSummary:
    output: str | None = None
    written: int = 0  # rows written by this run
    resumed: int = 0  # rows already in the file before this run
    failed: int = 0  # error rows, this run and resumed ones
    seconds: float = 0.0
    #: confusion counts over files in class-named folders: [true, predicted]
    confusion: np.ndarray = field(default_factory=lambda: np.zeros((10, 10), np.int64))
    unlabelled_or_failed: int = 0

    @property
    def total(self) -> int:
        return self.written + self.resumed

    @property
    def labelled(self) -> int:
        return int(self.confusion.sum())

    @property
    def accuracy(self) -> float | None:
        n = self.labelled
        return float(np.trace(self.confusion)) / n if n else None

    @property
    def images_per_second(self) -> float:
        return self.written / self.seconds if self.seconds > 0 else 0.0

    def add_batch(self, batch: EncodedRows) -> None:
        self.written += batch.count
        self.failed += len(batch.errors)
        if batch.confusion is not None:
            self.confusion += batch.confusion

    def add(self, row: Row, resumed: bool = False) -> None:
        if resumed:
            self.resumed += 1
        else:
            self.written += 1
        if row.error:
            self.failed += 1
            return
        truth = class_label_of(row.path)
        if truth is not None and row.label is not None and 0 <= row.label < 10:
            self.confusion[truth, row.label] += 1


class _Progress:
    """A one-line `\\r` progress display on stderr; silent unless enabled."""

    def __init__(self, enabled: bool, stream=None, every: float = 0.25):
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.every = every
        self.start = self.last = time.monotonic()
        self.count = 0

    def update(self, n: int) -> None:
        self.count += n
        now = time.monotonic()
        if self.enabled and now - self.last >= self.every:
            self.last = now
            self._show(now)

    def _show(self, now: float) -> None:
        rate = self.count / max(now - self.start, 1e-9)
        self.stream.write(f"\r{self.count:,} images  {rate:,.0f} images/s ")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.count:
            self._show(time.monotonic())
            self.stream.write("\n")
            self.stream.flush()


def run_infer(model: str | os.PathLike, inputs: Iterable[str | os.PathLike],
              output: str | os.PathLike | None = None, *, runtime: str | None = None,
              batch_size: int = DEFAULT_BATCH_SIZE, workers: int | None = None,
              top_k: int = DEFAULT_TOP_K, resume: bool = False, force: bool = False,
              progress: bool = False, engine: str = "local", address: str | None = None,
              warn: Callable[[str], None] | None = None) -> InferSummary:
    """Classify every image under `inputs` with `model`, streaming rows to `output`.

    Returns the summary; the caller decides what a failed file means (the CLI exits 3).
    With workers > 0 the decoders are started by multiprocessing's forkserver, so a script
    that calls this needs the usual `if __name__ == "__main__":` guard.
    """
    from digitkit.runtimes import open_predictor

    if engine not in ENGINES:
        raise UsageError(f"unknown engine {engine!r}; choose from {', '.join(ENGINES)}")
    if engine == "ray":
        from digitkit.ray_engine import import_ray

        import_ray()  # the one-line install hint before any work
    if batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {batch_size}")
    if top_k < 1 or top_k > 10:
        raise UsageError(f"--top-k must be between 1 and 10, got {top_k}")
    # The ray engine's workers are actors on the cluster: None means one per cluster CPU.
    if engine == "local":
        workers = usable_cpus() if workers is None else workers
    if workers is not None and workers < 0:
        raise UsageError(f"--workers must be 0 (decode in-process) or more, got {workers}")
    if resume and output in (None, "-"):
        raise UsageError("--resume needs an output file (-o)")
    warn = warn or (lambda msg: print(msg, file=sys.stderr))

    out = None if output in (None, "-") else Path(output)
    fmt = format_for(out)
    # With decoders on every core, ONNX Runtime gets the cores too but must not spin-wait
    # on them: a heavy model (the CNN) then uses the cores the decoders leave idle.
    predictor = open_predictor(model, runtime, threads=usable_cpus(), spin=workers == 0)
    summary = InferSummary(output=None if out is None else str(out))
    done: set[str] = set()
    append_at = None
    if resume and out is not None and out.exists():
        def _seen(row: Row):
            done.add(row.path)
            summary.add(row, resumed=True)
        append_at = scan_existing(out, fmt, _seen)

    def _dir_error(path, reason):
        warn(f"warning: {path}: {reason}")

    if engine == "ray":
        from digitkit.ray_engine import find_inputs  # also lists s3:// and other URIs

        paths = iter(find_inputs(inputs, on_error=_dir_error))
    else:
        paths = iter_image_paths(inputs, on_error=_dir_error)
    first = next(paths, None)  # fail before touching the output if there is nothing to do
    if first is None and not summary.total:
        raise DigitkitError(f"no images found in {', '.join(map(str, inputs))}")
    pending_paths = _prepend(first, paths)
    if done:
        pending_paths = (p for p in pending_paths if p not in done)

    if append_at is None and out is not None:
        check_new_output(out, force)  # refuse before any work; the file comes later
    engine_kw = {"fmt": fmt} if engine == "local" else {}
    bar = _Progress(progress)
    start = time.monotonic()
    with _engine_session(engine, address, workers) as engine_func, _sigterm_as_interrupt():
        batches = engine_func(predictor, pending_paths, batch_size=batch_size,
                              workers=workers, top_k=top_k, **engine_kw)
        try:
            # The output file is created once the first chunk is classified: a model that
            # cannot load (it loads in the workers) leaves no file behind.
            first_batch = next(batches, None)
            with RowWriter(out, fmt, append_at=append_at, force=force) as writer:
                for batch in _prepend(first_batch, batches):
                    if not isinstance(batch, EncodedRows):  # the Ray engine's Row lists
                        batch = _encode_rows_batch(batch, fmt)
                    writer.write_text(batch.text)
                    summary.add_batch(batch)
                    for path, reason in batch.errors:
                        warn(f"warning: {path}: {reason}")
                    bar.update(batch.count)
        finally:
            batches.close()  # shuts the pool down now, also on Ctrl-C or an error
            summary.seconds = time.monotonic() - start
            bar.close()
    return summary


def _prepend(first, rest):
    if first is not None:
        yield first
    yield from rest


class _sigterm_as_interrupt:
    """`kill` stops a run like Ctrl-C: the batch in hand is written, the pool shut down."""

    def __enter__(self):
        self._old = None
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGTERM, self._raise)
        return self

    @staticmethod
    def _raise(signum, frame):
        raise KeyboardInterrupt

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)


# -- the summary ----------------------------------------------------------------------------


def format_summary(summary: InferSummary) -> str:
    lines = []
    total = summary.total
    what = f"{summary.written:,} classified in {summary.seconds:.1f} s " \
           f"({summary.images_per_second:,.0f} images/s)"
    if summary.resumed:
        what += f", {summary.resumed:,} already done (resumed)"
    lines.append(f"{total:,} files: {what}; {summary.failed:,} failed")
    if summary.labelled:
        lines.append(f"accuracy over {summary.labelled:,} files in class folders: "
                     f"{summary.accuracy:.4f}")
        lines.append("")
        lines.append(classification_report_from_confusion(summary.confusion))
    return "\n".join(lines)


def classification_report_from_confusion(cm: np.ndarray) -> str:
    """Per-class precision/recall/F1 from confusion counts (memory independent of N)."""
    y_true = np.repeat(np.repeat(np.arange(10), 10), cm.ravel())
    y_pred = np.repeat(np.tile(np.arange(10), 10), cm.ravel())
    try:
        from digitkit.reports import classification_report
    except ImportError:
        return _simple_report(cm)
    return classification_report(y_true, y_pred)


def _simple_report(cm: np.ndarray) -> str:
    rows = ["              precision    recall  f1-score   support", ""]
    for c in range(10):
        tp, support, predicted = cm[c, c], cm[c].sum(), cm[:, c].sum()
        if not support and not predicted:
            continue
        p = tp / predicted if predicted else 0.0
        r = tp / support if support else 0.0
        f = 2 * p * r / (p + r) if p + r else 0.0
        rows.append(f"{c:>12} {p:>11.4f} {r:>9.4f} {f:>9.4f} {support:>9}")
    n = cm.sum()
    rows += ["", f"{'accuracy':>12} {'':>11} {'':>9} {np.trace(cm) / n:>9.4f} {n:>9}"]
    return "\n".join(rows)


def save_confusion(summary: InferSummary, path: str | os.PathLike, force: bool = False) -> Path:
    """Write the confusion matrix: .csv as counts, anything else as a PNG figure."""
    from digitkit.outputs import atomic_path, guard_output

    p = Path(path)
    guard_output(p, force)
    cm = summary.confusion
    if p.suffix.lower() == ".csv":
        text = "true\\pred," + ",".join(map(str, range(10))) + "\n" + "".join(
            f"{t}," + ",".join(map(str, cm[t])) + "\n" for t in range(10))
        with atomic_path(p) as tmp:
            tmp.write_text(text)
        return p
    from digitkit.reports import save_confusion_matrix_png

    with atomic_path(p) as tmp:
        save_confusion_matrix_png(cm, tmp, f"Confusion matrix ({summary.labelled:,} images)")
    return p
