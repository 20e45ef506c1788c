"""Crash and hang isolation: per-file work in worker processes that may die.

A native decoder can crash (a bad pointer or a failed assertion in libpng, libtiff, libwebp),
a file can send a decoder into an endless loop, and the kernel kills a worker that runs out of
memory. None of that may cost more than the file that caused it. `WorkerPool` runs chunks of
files in worker processes it watches itself (not concurrent.futures, whose pool breaks as a
whole and cannot say which task a dead worker held):

- Each worker has its own task pipe and result pipe and holds at most DEPTH chunks: the one
  it runs and the next, so it never waits for the main process between chunks. When a worker
  dies, the chunk it was running is known exactly; the one queued behind it never started
  and is simply sent again.
- The chunk it was running is retried with each file isolated (one file per task, on any
  worker). A file that kills a worker on its own is the culprit: it gets an error row naming
  what happened ("crashed: ..." or "timed out: ..."); every other file is classified. A
  worker stopped by the time limit names its culprit itself (`FileTimer.started`: the file it
  was on), which gets its row at once: a hang costs one time limit, not two.
- The dead worker is replaced by a fresh one; the others never stop.
- Per-file time limit: before each file a worker arms a real-time timer (setitimer) whose
  signal, SIGALRM, keeps its default action, so the kernel ends the worker when one decode
  overruns, even inside native code that never returns to Python. The main process sees a
  worker killed by SIGALRM and treats it like any other crash, naming the time limit.
- A worker that dies before it is ready (a broken install; a model that crashes ONNX Runtime
  as it loads) is no file's fault: the run stops with that error.
- Workers exit when the main process dies, however it dies (kill -9 included): each watches
  the main process's pidfd from a thread, and its task pipe reaches end-of-file. The
  forkserver exits by itself when the main process does.

The worker processes' own side (the per-file timer, their main loop) is
`digitkit.infer.pool.workers`.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import signal
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import count
from multiprocessing.connection import wait

import numpy as np

from digitkit.errors import DigitkitError
from digitkit.infer.pool.workers import (
    FileTimer,
    decode_worker,
    sigint_held,
    start_forkserver,
    worker_main,
)

#: Chunks a worker holds at once: the one it runs and the next.
DEPTH = 2
#: Seconds a worker that was asked to stop may take before it is killed.
_STOP_GRACE = 1.0


@dataclass(frozen=True)
class Crash:
    """What became of a file that took its worker down: its error row's reason."""

    reason: str


def crash_reason(exitcode: int | None, file_timeout: float | None) -> str:
    """The error reason for the file a worker died on, from the worker's exit code."""
    if exitcode == -signal.SIGALRM and file_timeout:
        return (f"timed out: decoding took longer than {file_timeout:g} s "
                "(the worker was stopped; see --file-timeout)")
    if exitcode is not None and exitcode < 0:
        sig = signal.Signals(-exitcode)
        if sig == signal.SIGKILL:
            return "crashed: the worker decoding it was killed (SIGKILL: out of memory?)"
        return f"crashed: the worker decoding it died of {sig.name} ({signal.strsignal(sig)})"
    return f"crashed: the worker decoding it exited with status {exitcode}"


Parts = list  # [(lo, hi, value)] in order, covering a chunk: work(paths[lo:hi]) or a Crash


class _Job:
    __slots__ = ("paths", "parts", "left", "error")

    def __init__(self, paths: list):
        self.paths = paths
        self.parts: dict = {}  # lo -> (hi, value)
        self.left = 1  # tasks still out
        self.error: BaseException | None = None


class _Worker:
    __slots__ = ("proc", "tasks", "results", "held", "ready", "capacity", "started")

    def __init__(self, proc, tasks, results, capacity: int, started):
        self.proc, self.tasks, self.results, self.capacity = proc, tasks, results, capacity
        self.started = started  # files begun in its current task (FileTimer.started)
        self.held: deque = deque()  # (key, (job, lo, hi)) sent, no result yet, oldest first
        self.ready = False


class WorkerPool:
    """`size` isolated workers running `setup(*setup_args)`'s work function (see the module
    docstring): `work(paths, timer) -> value`, where `timer` is the worker's FileTimer.
    `setup` runs once per worker, in the worker; both must be module-level functions.
    `context`: how workers start (multiprocessing's name): "forkserver", or "fork" for a
    caller that knows it holds no threads or sessions a copy could not live with."""

    def __init__(self, size: int, setup: Callable, setup_args: tuple,
                 file_timeout: float | None, context: str = "forkserver"):
        self._ctx = mp.get_context(context)
        self._args = (os.getpid(), setup, setup_args, file_timeout)
        self.file_timeout = file_timeout
        self._keys = count()
        self._queue: deque = deque()  # (job, lo, hi) waiting for a worker, oldest first
        self._workers: list[_Worker] = []
        for _ in range(size):
            self._workers.append(self._start())

    def _start(self) -> _Worker:
        task_r, task_w = self._ctx.Pipe(duplex=False)
        result_r, result_w = self._ctx.Pipe(duplex=False)
        capacity = _widen(task_w)
        _widen(result_r)
        # A forked worker inherits this process's ends of its own pipes: it must close them,
        # or its task pipe would never reach end-of-file.
        inherited = (task_w, result_r) if self._ctx.get_start_method() == "fork" else ()
        started = self._ctx.RawValue("l", 0)
        proc = self._ctx.Process(target=worker_main,
                                 args=(task_r, result_w, *self._args, inherited, started),
                                 daemon=True)
        with sigint_held():  # a Ctrl-C now is the main process's, not a traceback of the worker's
            proc.start()
        task_r.close()
        result_w.close()  # the worker holds the only write end: its death reads as EOF
        return _Worker(proc, task_w, result_r, capacity, started)

    def map(self, chunks: Iterable[list], window: int) -> Iterator[tuple[list, Parts]]:
        """(chunk, parts) for each chunk, in order, at most `window` chunks in flight."""
        chunks = iter(chunks)
        jobs: deque = deque()
        more = True
        while True:
            while more and len(jobs) < window:
                chunk = next(chunks, None)
                if chunk is None:
                    more = False
                else:
                    jobs.append(_Job(chunk))
                    self._queue.append((jobs[-1], 0, len(chunk)))
            while jobs and not jobs[0].left:
                job = jobs.popleft()
                if job.error is not None:
                    raise job.error
                yield job.paths, [(lo, hi, v) for lo, (hi, v) in sorted(job.parts.items())]
            if not jobs:
                if not more:
                    return
                continue
            self._dispatch()
            self._wait()

    def _dispatch(self) -> None:
        # Idle workers first, then a second chunk each, so no worker sits idle while
        # another holds a chunk it has not started.
        for depth in range(DEPTH):
            for w in self._workers:
                if self._queue and len(w.held) == depth:
                    self._send(w, self._queue.popleft())

    def _send(self, w: _Worker, task: tuple) -> None:
        job, lo, hi = task
        key = next(self._keys)
        payload = pickle.dumps((key, job.paths[lo:hi]), pickle.HIGHEST_PROTOCOL)
        if w.held and len(payload) > w.capacity // 2:
            # It might not fit the pipe beside the chunk queued there: a blocking send while
            # the worker blocks sending us its result would deadlock. Wait until it is idle.
            self._queue.appendleft(task)
            return
        try:
            w.tasks.send_bytes(payload)
        except OSError:  # it just died: its sentinel says so in _wait
            self._queue.appendleft(task)
            return
        w.held.append((key, task))

    def _wait(self) -> None:
        owners = {}
        for w in self._workers:
            owners[w.results] = w
            owners[w.proc.sentinel] = w
        for ready in wait(list(owners)):
            w = owners[ready]
            if w in self._workers and not self._drain(w):
                self._died(w)

    def _drain(self, w: _Worker) -> bool:
        """Take every whole message the worker has sent; False once it is gone."""
        try:
            while w.results.poll():
                self._handle(w, w.results.recv())
        except (EOFError, OSError, pickle.UnpicklingError):
            return False
        return w.proc.is_alive()

    def _handle(self, w: _Worker, msg) -> None:
        key, (status, value) = msg
        if key == "ready":
            w.ready = True
            return
        if key == "init":
            raise value  # the work cannot even start (a model that does not load)
        held_key, (job, lo, hi) = w.held.popleft()
        assert held_key == key, (held_key, key)
        if status == "ok":
            job.parts[lo] = (hi, value)
        elif job.error is None:
            job.error = value
        job.left -= 1

    def _died(self, w: _Worker) -> None:
        w.proc.join(5)
        code = w.proc.exitcode
        self._workers.remove(w)
        self._close_worker(w)
        if not w.ready:
            raise DigitkitError(f"a worker process died while starting "
                                f"({crash_reason(code, None).split(': ', 1)[1]})")
        retry = [task for _, task in w.held]
        if retry:
            job, lo, hi = retry[0]  # the chunk it was running; the rest never started
            culprit = (lo + w.started.value - 1
                       if code == -signal.SIGALRM and 0 < w.started.value <= hi - lo else None)
            if hi - lo > 1 and culprit is not None:  # timed out: the file it was on, now
                job.parts[culprit] = (culprit + 1,
                                      Crash(crash_reason(code, self.file_timeout)))
                job.left += hi - lo - 2
                retry[:1] = [(job, i, i + 1) for i in range(lo, hi) if i != culprit]
            elif hi - lo > 1:
                job.left += hi - lo - 1
                retry[:1] = [(job, i, i + 1) for i in range(lo, hi)]
            else:
                job.parts[lo] = (hi, Crash(crash_reason(code, self.file_timeout)))
                job.left -= 1
                del retry[0]
        self._queue.extendleft(reversed(retry))
        self._workers.append(self._start())

    def close(self) -> None:
        """Stop every worker now (busy ones too: this runs on Ctrl-C and errors as well)."""
        workers, self._workers = self._workers, []
        for w in workers:
            w.tasks.close()  # end-of-file: an idle worker returns at once
            if w.held:
                w.proc.terminate()
        deadline = time.monotonic() + _STOP_GRACE
        for w in workers:
            w.proc.join(max(0.0, deadline - time.monotonic()))
            if w.proc.is_alive():
                w.proc.kill()
                w.proc.join()
            self._close_worker(w)

    @staticmethod
    def _close_worker(w: _Worker) -> None:
        for conn in (w.tasks, w.results):
            conn.close()
        if w.proc.exitcode is not None:
            w.proc.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def join_decoded(parts: Parts, empty: np.ndarray | None = None) -> tuple[np.ndarray, list[str]]:
    """One chunk's `load_images` result from its parts: pixels of the good files in order,
    one reason per file (a crashed file's reason is its Crash's). `empty`: the pixels of no
    file, in the model's shape (digits' uint8 (0, 28, 28) by default)."""
    if len(parts) == 1 and not isinstance(parts[0][2], Crash):
        return parts[0][2]
    arrays, reasons = [], []
    for lo, hi, value in parts:
        if isinstance(value, Crash):
            reasons.extend([value.reason] * (hi - lo))
        else:
            arrays.append(value[0])
            reasons.extend(value[1])
    pixels = np.concatenate(arrays) if arrays else (
        np.zeros((0, 28, 28), np.uint8) if empty is None else empty)
    return pixels, reasons


#: Bytes a pipe between the main process and a worker holds: 256 KiB. A task of 1,024 paths
#: pickles to ~60 KB and its rows come back as ~90 KB of text; at Linux's default 64 KiB
#: every task would wait for an idle worker and every result reach the main process in
#: pieces, a wake-up each. Not more: pipe buffers count against a per-user quota
#: (/proc/sys/fs/pipe-user-pages-soft, 64 MiB by default) and past it the kernel gives that
#: user's new pipes, other programs' included, two pages; two 256 KiB pipes a worker reach it
#: at 128 workers (1 MiB pipes measured no faster). Where widening is refused the pipe keeps
#: its size and tasks wait for an idle worker (see WorkerPool._send).
PIPE_BYTES = 2**18


def _widen(conn) -> int:
    """Ask for a PIPE_BYTES pipe under `conn`; the bytes it holds now, as granted."""
    try:
        import fcntl
    except ImportError:
        return 4096  # POSIX's smallest: every task then waits for an idle worker
    try:
        fcntl.fcntl(conn.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    except (AttributeError, OSError):
        pass  # not Linux, or over this user's pipe-buffer quota: the default size
    try:
        return fcntl.fcntl(conn.fileno(), fcntl.F_GETPIPE_SZ)
    except (AttributeError, OSError):
        return 4096


__all__ = ["Crash", "FileTimer", "WorkerPool", "crash_reason", "decode_worker", "join_decoded",
           "start_forkserver"]
