"""The worker side of `digitkit.infer.pool.isolation`: what runs inside each worker process.

A worker prepares itself (`_prepare_worker`: ignore Ctrl-C, which the main process handles;
leave SIGALRM at its default action, which the per-file time limit relies on; exit with the
main process), runs its setup once, says it is ready, then answers chunks from its task pipe
until the pipe closes. `FileTimer` is the per-file time limit; `decode_worker` the setup of
workers that only decode; `start_forkserver` starts the server workers are forked from.
"""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import pickle
import select
import signal
import threading
import time
import warnings
from collections.abc import Callable
from contextlib import contextmanager

from digitkit.errors import DigitkitError, one_line


class FileTimer:
    """The per-file time limit inside a worker: `on_file()` before each file (None when there
    is no limit, as load_images takes it), `stop()` once the files are decoded.

    Re-arming the kernel timer costs a system call, not small against reading and decoding
    a small file (BENCHMARKS.md, "`digitkit infer`: what each stage costs"), so it is re-armed
    only when `slack` seconds have passed since it last was, with `seconds + slack` on the
    clock. A file is thus stopped between `seconds` and `seconds + slack` after it started,
    never sooner, for one clock read per file (slack: a tenth of the limit, at most 1 s).

    `started` (shared with the main process) counts the files begun in the current task, so
    when the timer ends the worker the main process knows which file overran: the one begun
    last (a file stopped by the timer has run at least `seconds`, so it is the file it was
    on). That file gets its row at once, instead of hanging a second time when retried alone.
    """

    def __init__(self, seconds: float | None, started=None):
        self.seconds = seconds
        self.slack = min(1.0, seconds / 10) if seconds else 0.0
        self.armed_at = -1e9
        self.started = started if started is not None else ctypes.c_long()
        self.on_file = self._arm if seconds else None

    def _arm(self) -> None:
        self.started.value += 1
        now = time.monotonic()
        if now - self.armed_at >= self.slack:
            signal.setitimer(signal.ITIMER_REAL, self.seconds + self.slack)
            self.armed_at = now

    def stop(self) -> None:
        if self.seconds:
            signal.setitimer(signal.ITIMER_REAL, 0)
            self.armed_at = -1e9


def start_forkserver(preload: list[str]) -> None:
    """Start this process's forkserver now, with `preload` imported once for every worker,
    without waiting for it: its imports then overlap the caller's own start-up."""
    from multiprocessing import forkserver, resource_tracker

    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(preload)
    resource_tracker.ensure_running()  # first: starting it unblocks SIGINT when it is done
    with sigint_held():
        forkserver.ensure_running()


_HELD = {signal.SIGINT, signal.SIGTERM}


@contextmanager
def sigint_held():
    """Start processes inside this with SIGINT and SIGTERM blocked: they inherit the mask
    (through exec too), so a Ctrl-C while they start up and import (the forkserver's preload,
    a forked worker before `_prepare_worker`) stays pending until they ignore it, instead of
    printing their KeyboardInterrupt traceback; multiprocessing starts its resource tracker
    the same way. SIGTERM likewise: a worker forked from the main process inherits its
    SIGTERM handler (`kill` as Ctrl-C) until `_prepare_worker` restores the default, and the
    main process stopping its workers on a Ctrl-C must end one that is still starting, not
    make it print a traceback. Here a signal meanwhile is held, then handled as usual."""
    held = signal.pthread_sigmask(signal.SIG_BLOCK, _HELD)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


def decode_worker(max_file_size: int, decode: Callable | None = None) -> Callable:
    """A WorkerPool setup: workers that only decode, for engines that predict elsewhere (the
    local engine's TensorFlow path, the Ray actors). `decode`: the model's decoder
    (`digitkit.images.decoder_for`), the digit decoder `load_images` by default."""
    if decode is None:
        from digitkit.images import load_images as decode

    def work(paths: list, timer: FileTimer):
        return decode(paths, max_file_size, timer.on_file)

    return work


def worker_main(tasks, results, main_pid: int, setup: Callable, setup_args: tuple,
                file_timeout: float | None, inherited: tuple = (), started=None) -> None:
    for conn in inherited:  # the main process's ends, when this worker was forked from it
        conn.close()
    _prepare_worker(main_pid)
    try:
        work = setup(*setup_args)
    except BaseException as e:
        try:
            results.send(("init", ("error", _portable(e))))
        except OSError:
            pass
        return
    timer = FileTimer(file_timeout, started)
    try:
        results.send(("ready", ("ok", os.getpid())))
        while True:
            try:
                key, paths = pickle.loads(tasks.recv_bytes())
            except EOFError:
                return  # the main process closed the pipe: stop
            timer.started.value = 0
            try:
                out = ("ok", work(paths, timer))
            except Exception as e:
                out = ("error", _portable(e))
            finally:
                timer.stop()
            results.send((key, out))
    except OSError:
        return  # the main process is gone


def _prepare_worker(main_pid: int) -> None:
    # Ctrl-C goes to the whole process group; only the main process decides what to do.
    # SIGTERM: the default (a forked worker would inherit the main process's handler).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    # The time limit: an overrun ends this process (see the module docstring).
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    # Started with both held (sigint_held): a SIGTERM sent meanwhile ends the worker now.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _HELD)
    threading.Thread(target=_exit_with, args=(main_pid,), daemon=True).start()
    _die_with_parent()
    # Over-limit images become error rows (the decoder checks first); Pillow's own warning
    # for them would only repeat that on stderr.
    from PIL import Image

    warnings.simplefilter("ignore", Image.DecompressionBombWarning)


def _die_with_parent() -> None:
    """Linux: SIGKILL this worker when its parent (the forkserver, which exits with the main
    process) exits. Unlike the watcher thread it needs no GIL, so it also ends a worker stuck
    in native code that holds it."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the watcher thread alone


def _exit_with(pid: int) -> None:
    """End this worker when process `pid` ends. A worker may be deep in a decode when the
    main process is killed outright (SIGKILL, the OOM killer); nothing else would stop it."""
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


def _portable(e: BaseException) -> BaseException:
    """`e` if it survives the trip to the main process, else a DigitkitError with its text."""
    try:
        pickle.loads(pickle.dumps(e))
        return e
    except Exception:
        return DigitkitError(f"{type(e).__name__}: {one_line(e)}")
