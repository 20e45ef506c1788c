"""One batch-inference run around an engine: discovery, resume, the output file, warnings,
progress and the summary. What runs the files is the engine's business (`InferSpec.engine`);
everything here is the same for every engine. Rows going to one result file and shards
written by the workers into a directory (`digitkit.infer.storage.shards.ShardRun`) both pass
through `drive`, the one driver loop.

Nothing is written before the first chunk is classified: a model that does not load fails
before the output file exists.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Generator, Iterable
from dataclasses import replace
from itertools import chain
from pathlib import Path
from typing import TypeVar

from digitkit.errors import DigitkitError, UsageError
from digitkit.infer.results.formats import format_for, result_format
from digitkit.infer.results.provenance import check_resume, open_recorded, read_record, record_for
from digitkit.infer.results.textfile import DoneSet, check_new_output
from digitkit.infer.spec import InferSpec, get_engine
from digitkit.infer.storage.lock import lock_for
from digitkit.infer.storage.shards import ShardRun, is_shard_output
from digitkit.infer.summary import InferSummary

T = TypeVar("T")


def run_infer(spec: InferSpec, inputs: Iterable[str | os.PathLike],
              output: str | os.PathLike | None = None, *, resume: bool = False,
              force: bool = False, progress: bool = False,
              warn: Callable[[str], None] | None = None) -> InferSummary:
    """Classify every image under `inputs` as `spec` says, streaming rows to `output`
    (None or "-": stdout).

    Returns the summary; the caller decides what a failed file means (the CLI exits 3).
    The local engine's workers are started by multiprocessing's forkserver, so a script
    that calls this needs the usual `if __name__ == "__main__":` guard.
    """
    inputs = list(inputs)
    if resume and output in (None, "-"):
        raise UsageError("--resume needs an output file (-o)")
    with lock_for(output):  # one writer per output, for the whole run
        return _run_infer(spec, inputs, output, resume=resume, force=force, progress=progress,
                          warn=warn or (lambda msg: print(msg, file=sys.stderr)))


def _run_infer(spec, inputs, output, *, resume, force, progress, warn) -> InferSummary:
    # A model made elsewhere never runs on pixels it was not trained for: its convention is
    # resolved once, here, and every engine and worker runs the adapted copy.
    from digitkit.predictors.choice import AUTO, AutoRequest, choose
    from digitkit.predictors.runnable import runnable_model
    from digitkit.predictors.serving import check_device, serving_model

    # Which copy runs on which row of the runtime table: decided once, here, like the
    # convention below; every engine and worker opens that row on that copy.
    choice = None
    if spec.runtime == AUTO:  # the fastest row that passes the gate, chosen once, here
        request = AutoRequest(spec.batch_size, spec.precision, spec.workers, spec.device,
                              spec.trust_model, spec.data, spec.calibration)
        choice = choose(spec.model, request, spec.convention, say=warn)
        spec = replace(spec, runtime=choice.group, precision=choice.precision,
                       calibration=None)  # used: the row it chose takes no folder
    serving = serving_model(spec.model, spec.runtime, spec.precision)
    check_device(serving, spec.device)
    runnable = runnable_model(serving.path, spec.convention, spec.data,
                              trust_model=spec.trust_model, calibration=spec.calibration)
    if spec.calibration is not None and (runnable.contract.is_digit or not runnable.adapted):
        raise UsageError("--calibration is for a general image classifier: the labelled "
                         "images --runtime auto holds its copies to, or those its "
                         "preprocessing is detected on when it was made elsewhere")
    if runnable.line():
        warn(f"digitkit: {runnable.line()}")
    # What the rows are made with, recorded with them; a resume must match it.
    record = record_for(serving.path, runnable.convention, spec.top_k,
                        spec.limits.max_file_size, serving.name, serving.precision,
                        choice=choice and choice.record,
                        sha256=choice.sha256 if choice and choice.path == serving.path else None)
    spec = replace(spec, model=runnable.path, contract=runnable.contract)
    names = spec.names
    served = {"runtime": serving.name, "precision": serving.precision}
    eng = get_engine(spec.engine)
    eng.check(spec)  # a missing extra or a bad model fails before any work

    def find(paths):
        return eng.find(paths, lambda path, reason: warn(f"warning: {path}: {reason}"))

    if is_shard_output(output):  # a directory: the engine's workers write the rows there
        if not eng.writes_shards:
            raise UsageError(f"the {eng.name} engine writes one result file; a shard "
                             "directory (-o DIR/) is written by the workers of --engine ray")
        bar = _Progress(progress)
        with _sigterm_as_interrupt():
            shard_run = ShardRun(spec, inputs, output, resume=resume, force=force, find=find,
                                 record=record)
            shard_run.summary.seconds = drive(
                eng.write_shards(shard_run.spec, shard_run.job),
                lambda done: shard_run.add(done, warn), bar)
            summary = shard_run.finish()
            summary.runtime, summary.precision = served["runtime"], served["precision"]
            return summary

    out = None if output in (None, "-") else Path(output)
    fmt = result_format(spec.fmt or format_for(out))
    spec = replace(spec, fmt=fmt.name)
    if fmt.stdout_refused and out is None:
        raise UsageError(fmt.stdout_refused)
    summary = InferSummary(output=None if out is None else str(out), class_names=names,
                           **served)
    done = DoneSet()  # 16 bytes a row: resume over millions of rows stays small
    append_at = None
    if resume and out is not None and out.exists():
        def _seen(row):
            done.add(row.path)
            summary.add_resumed(row)
        found = read_record(out, fmt)
        if found is not None:  # a mismatch is refused before the (long) scan
            check_resume(out, found, record, has_rows=True)
        append_at = fmt.scan(out, _seen, names)
        check_resume(out, found, record, has_rows=bool(summary.total))

    paths = find(inputs)
    first = next(paths, None)  # fail before touching the output if there is nothing to do
    if first is None and not summary.total:
        raise DigitkitError(f"no images found in {', '.join(map(str, inputs))}")
    if first is not None:
        paths = chain((first,), paths)
    if done:
        paths = done.skip_done(paths)

    if append_at is None and out is not None:
        check_new_output(out, force)  # refuse before any work; the file comes later
    # The output file is created once the first chunk is classified: a model that cannot
    # load (it loads in the workers) leaves no file behind.
    bar = _Progress(progress)
    sink = _ResultFile(lambda: open_recorded(fmt, out, record, append_at=append_at,
                                             force=force))

    def take(batch) -> int:
        sink.write(batch.data)
        summary.add_batch(batch)
        for path, reason in batch.errors:
            warn(f"warning: {path}: {reason}")
        return batch.count

    with _sigterm_as_interrupt(), sink:
        summary.seconds = drive(eng.run(spec, paths), take, bar)
        sink.open()  # no rows at all (all resumed): the file is still made whole
    return summary


def drive(results: Generator[T, None, None], take: Callable[[T], int], bar) -> float:
    """The one driver loop: hand each result of an engine (a chunk of rows, or a finished
    shard) to `take`, which returns its files for the progress line; the engine's workers
    are stopped when it ends, also on Ctrl-C or an error. Returns the seconds it took."""
    start = time.monotonic()
    try:
        for item in results:
            bar.update(take(item))
    finally:
        results.close()  # stops the engine's workers now
        bar.close()
    return time.monotonic() - start


class _ResultFile:
    """The result file's writer, opened when the first rows arrive (`open`: a writer of
    the format), closed at the end, also on Ctrl-C or an error: the rows so far are whole."""

    def __init__(self, open_writer: Callable):
        self._open_writer = open_writer
        self._writer = None

    def open(self):
        if self._writer is None:
            self._writer = self._open_writer()
        return self._writer

    def write(self, data) -> None:
        self.open().write(data)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self._writer is not None:
            self._writer.close()


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


class _sigterm_as_interrupt:
    """`kill` stops a run like Ctrl-C: the batch in hand is written, the workers stopped."""

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
