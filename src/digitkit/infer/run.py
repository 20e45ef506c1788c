"""One batch-inference run around an engine: discovery, resume, the output file, warnings,
progress and the summary. What runs the files is the engine's business (`InferSpec.engine`);
everything here is the same for every engine.

Nothing is written before the first chunk is classified: a model that does not load fails
before the output file exists.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from itertools import chain
from pathlib import Path

from digitkit.errors import DigitkitError, UsageError
from digitkit.infer.lock import lock_for
from digitkit.infer.output import DoneSet, RowWriter, check_new_output, scan_existing
from digitkit.infer.parquet import (
    STDOUT_REFUSED,
    ParquetRowWriter,
    remove_stale_temporaries,
    scan_parquet,
)
from digitkit.infer.provenance import (
    check_resume,
    parquet_metadata,
    read_record,
    record_for,
    write_sidecar,
)
from digitkit.infer.rows import format_for
from digitkit.infer.shards import is_shard_output, write_shard_dir
from digitkit.infer.spec import InferSpec, get_engine
from digitkit.infer.summary import InferSummary


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
    from digitkit.predictors.runnable import runnable_model

    runnable = runnable_model(spec.model, spec.convention, spec.data)
    if runnable.line():
        warn(f"digitkit: {runnable.line()}")
    # What the rows are made with, recorded with them; a resume must match it.
    record = record_for(spec.model, runnable.convention, spec.top_k, spec.limits.max_file_size)
    spec = replace(spec, model=runnable.path)
    eng = get_engine(spec.engine)
    eng.check(spec)  # a missing extra or a bad model fails before any work
    if is_shard_output(output):  # a directory: the engine's workers write the rows there
        with _sigterm_as_interrupt():
            return write_shard_dir(eng, spec, inputs, output, resume=resume, force=force,
                                   bar=_Progress(progress), warn=warn, record=record)
    out = None if output in (None, "-") else Path(output)
    spec = replace(spec, fmt=spec.fmt or format_for(out))
    if spec.fmt == "parquet" and out is None:
        raise UsageError(STDOUT_REFUSED)
    parquet = spec.fmt == "parquet"
    summary = InferSummary(output=None if out is None else str(out))
    done = DoneSet()  # 16 bytes a row: resume over millions of rows stays small
    append_at = None
    if resume and out is not None and out.exists():
        def _seen(row):
            done.add(row.path)
            summary.add_resumed(row)
        found = read_record(out, spec.fmt)
        if found is not None:  # a mismatch is refused before the (long) scan
            check_resume(out, found, record, has_rows=True)
        append_at = (scan_parquet if parquet else scan_existing)(out, spec.fmt, _seen)
        check_resume(out, found, record, has_rows=bool(summary.total))

    paths = eng.find(inputs, lambda path, reason: warn(f"warning: {path}: {reason}"))
    first = next(paths, None)  # fail before touching the output if there is nothing to do
    if first is None and not summary.total:
        raise DigitkitError(f"no images found in {', '.join(map(str, inputs))}")
    if first is not None:
        paths = chain((first,), paths)
    if done:
        paths = done.skip_done(paths)

    if append_at is None and out is not None:
        check_new_output(out, force)  # refuse before any work; the file comes later
    if parquet:
        remove_stale_temporaries(out)  # a killed run's; this run holds the output's lock
    bar = _Progress(progress)
    start = time.monotonic()
    batches = eng.run(spec, paths)
    with _sigterm_as_interrupt():
        try:
            # The output file is created once the first chunk is classified: a model that
            # cannot load (it loads in the workers) leaves no file behind.
            first_batch = next(batches, None)
            if parquet:
                writer = ParquetRowWriter(out, spec.fmt, append_at=append_at, force=force,
                                          metadata=parquet_metadata(record))
            else:
                if out is not None:
                    write_sidecar(out, record)  # before the file: never a file without it
                writer = RowWriter(out, spec.fmt, append_at=append_at, force=force)
            with writer:
                rest = batches if first_batch is None else chain((first_batch,), batches)
                for batch in rest:
                    if parquet:
                        writer.write_table(batch.table)
                    else:
                        writer.write_text(batch.text)
                    summary.add_batch(batch)
                    for path, reason in batch.errors:
                        warn(f"warning: {path}: {reason}")
                    bar.update(batch.count)
        finally:
            batches.close()  # stops the engine's workers now, also on Ctrl-C or an error
            summary.seconds = time.monotonic() - start
            bar.close()
    return summary


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
