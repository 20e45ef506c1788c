"""Work functions for the WorkerPool tests (tests/test_infer_pool_isolation.py), in a module of
their own with nothing but the standard library to import: every worker the pool starts (and
restarts after each crash) imports it, and that should cost nothing."""

from __future__ import annotations

import os
import signal
import time


def echo_worker(tag: str):
    """Each path's fate is in its name: 'segv', 'abort', 'kill' crash the worker for real,
    'hang' sleeps (the time limit must stop it), anything else comes back as tag:path."""
    def work(paths, timer):
        out = []
        for p in paths:
            if timer.on_file is not None:
                timer.on_file()
            if p.startswith("segv"):
                os.kill(os.getpid(), signal.SIGSEGV)
            elif p.startswith("abort"):
                os.abort()
            elif p.startswith("kill"):
                os.kill(os.getpid(), signal.SIGKILL)
            elif p.startswith("hang"):
                time.sleep(3600)
            out.append(f"{tag}:{p}")
        return out

    return work


def failing_setup():
    from digitkit.errors import ModelError

    raise ModelError("model.onnx: not a usable ONNX model (test)")


def dying_setup():
    os.kill(os.getpid(), signal.SIGKILL)


def raising_worker():
    def work(paths, timer):
        raise ValueError(f"bad chunk {paths[0]}")

    return work
