"""digitkit.infer.pool.isolation (and its worker side, digitkit.infer.pool.workers): real worker
processes that really crash (SIGSEGV, SIGABRT, SIGKILL), really hang, and a real run killed
with SIGKILL that must leave no process behind. No mocks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest

from _pool_work import dying_setup, echo_worker, failing_setup, raising_worker
from digitkit.errors import DigitkitError, ModelError
from digitkit.infer.engines.local import TASK_BATCHES
from digitkit.infer.pool.isolation import (
    Crash,
    FileTimer,
    WorkerPool,
    crash_reason,
    decode_worker,
    join_decoded,
)


def _parts_text(parts):
    """A chunk's parts as one list: each good path's echo, or the crash reason."""
    out = []
    for lo, hi, v in parts:
        out.extend([v.reason] * (hi - lo) if isinstance(v, Crash) else v)
    return out


def _no_core_files():
    import resource

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


@pytest.fixture(scope="module", autouse=True)
def _forkserver():
    # What the local engine preloads, plus the test's work functions: every (re)started
    # worker then forks ready instead of importing them (unless a forkserver runs already).
    from digitkit.infer.engines.local import _WORKER_PRELOAD
    from digitkit.infer.pool.isolation import start_forkserver

    start_forkserver([*_WORKER_PRELOAD, "_pool_work"])


@pytest.fixture(autouse=True)
def _no_cores():
    # Real SIGSEGV/SIGABRT in the workers: no core files in the working directory.
    import resource

    old = resource.getrlimit(resource.RLIMIT_CORE)
    resource.setrlimit(resource.RLIMIT_CORE, (0, old[1]))
    yield
    resource.setrlimit(resource.RLIMIT_CORE, old)


def test_every_crash_costs_only_its_file_and_order_is_kept():
    chunks = [[f"a{i}", f"b{i}", f"c{i}"] for i in range(6)]
    chunks[1][1] = "segv-1"
    chunks[3][0] = "abort-3"
    chunks[3][2] = "kill-3"
    chunks[4] = ["segv-4"]  # a chunk of one file that crashes
    with WorkerPool(2, echo_worker, ("w",), file_timeout=None) as pool:
        got = list(pool.map(iter(chunks), window=4))
        # The pool goes on working after all that, with its workers replaced.
        again = list(pool.map(iter([["x", "y"]]), window=1))
    assert [c for c, _ in got] == chunks
    texts = [_parts_text(parts) for _, parts in got]
    for chunk, text in zip(chunks, texts, strict=True):
        for p, t in zip(chunk, text, strict=True):
            if p.startswith(("segv", "abort", "kill")):
                assert t.startswith("crashed: "), (p, t)
            else:
                assert t == f"w:{p}"
    assert texts[1][1] == "crashed: the worker decoding it died of SIGSEGV (Segmentation fault)"
    assert "SIGABRT" in texts[3][0]
    assert texts[3][2] == "crashed: the worker decoding it was killed (SIGKILL: out of memory?)"
    # A chunk without a crash stays one part (no retry); a crashed chunk is split per file.
    assert len(got[0][1]) == 1 and len(got[1][1]) == 3
    assert _parts_text(again[0][1]) == ["w:x", "w:y"]


def test_a_hang_is_stopped_by_the_time_limit():
    t0 = time.monotonic()
    with WorkerPool(1, echo_worker, ("w",), file_timeout=1.0) as pool:
        (chunk, parts), = pool.map(iter([["a", "hang", "b"]]), window=2)
    took = time.monotonic() - t0
    assert _parts_text(parts) == [
        "w:a", "timed out: decoding took longer than 1 s (the worker was stopped; see "
        "--file-timeout)", "w:b"]
    assert took < 20, took  # one limit (plus slack and a restart), not an hour


def test_exceptions_reach_the_caller_in_order_and_setup_failures_stop_the_run():
    with WorkerPool(1, raising_worker, (), file_timeout=None) as pool:
        with pytest.raises(ValueError, match="bad chunk p"):
            list(pool.map(iter([["p"]]), window=1))
    with pytest.raises(ModelError, match="not a usable ONNX model"):
        with WorkerPool(1, failing_setup, (), file_timeout=None) as pool:
            list(pool.map(iter([["p"]]), window=1))
    # A worker that dies before it is ready is no file's fault: the run stops.
    with pytest.raises(DigitkitError, match="died while starting"):
        with WorkerPool(1, dying_setup, (), file_timeout=None) as pool:
            list(pool.map(iter([["p"]]), window=1))


def test_close_stops_busy_workers_at_once():
    pool = WorkerPool(2, echo_worker, ("w",), file_timeout=None)
    procs = [w.proc.pid for w in pool._workers]
    gen = pool.map(iter([["hang"], ["hang2"], ["a"]]), window=3)
    pool._dispatch()  # both hang now
    t0 = time.monotonic()
    gen.close()
    pool.close()
    assert time.monotonic() - t0 < 10
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
                   for p in procs)


def test_decode_workers_and_join_decoded(tmp_path, mnist_test):
    from PIL import Image

    x, _ = mnist_test
    paths = []
    for i in range(3):
        Image.fromarray(x[i]).save(tmp_path / f"{i}.png")
        paths.append(str(tmp_path / f"{i}.png"))
    paths.insert(1, str(tmp_path / "missing.png"))
    with WorkerPool(1, decode_worker, (1 << 20,), file_timeout=5.0) as pool:
        (_, parts), = pool.map(iter([paths]), window=1)
    pixels, reasons = join_decoded(parts)
    assert reasons == ["", "no such file", "", ""]
    assert np.array_equal(pixels, x[:3])
    # Parts with a crash in the middle: its reason in place, no pixels for it.
    split = [(0, 1, (x[:1], [""])), (1, 2, Crash("crashed: test")), (2, 3, (x[1:2], [""]))]
    pixels, reasons = join_decoded(split)
    assert reasons == ["", "crashed: test", ""] and np.array_equal(pixels, x[:2])


def test_file_timer_rearms_with_slack_not_per_file():
    timer = FileTimer(2.0)
    try:
        timer.on_file()
        first = signal.getitimer(signal.ITIMER_REAL)[0]
        timer.on_file()  # within the slack: not re-armed
        assert 2.0 < first <= 2.2
        assert signal.getitimer(signal.ITIMER_REAL)[0] <= first
    finally:
        timer.stop()
    assert signal.getitimer(signal.ITIMER_REAL)[0] == 0
    assert FileTimer(None).on_file is None


def test_crash_reasons():
    assert crash_reason(-signal.SIGALRM, 60.0).startswith("timed out: decoding took longer "
                                                          "than 60 s")
    assert crash_reason(-signal.SIGBUS, 60.0).startswith("crashed: ") and "SIGBUS" in \
        crash_reason(-signal.SIGBUS, 60.0)
    assert crash_reason(3, 60.0) == "crashed: the worker decoding it exited with status 3"


def test_a_killed_run_leaves_no_process_behind(linear_onnx, png_test_dir, tmp_path):
    """kill -9 of a real `digitkit infer` with its workers busy (one of them hung in a
    decode): every worker (and a forkserver and the resource tracker, where the run has
    them) must be gone soon."""
    out = tmp_path / "out.csv"
    env = dict(os.environ, DIGITKIT_TEST_DECODER_FAULTS="sleep=*-hang.png")
    # Two tasks' worth of files, then one that hangs its worker (no time limit), then 10,000
    # more: rows stop at the hung task (rows are written in order) while the other worker
    # keeps busy.
    (tmp_path / "in" / "0").mkdir(parents=True)
    for f in sorted((png_test_dir / "0").iterdir())[:2 * 16 * TASK_BATCHES]:
        (tmp_path / "in" / "0" / f.name).write_bytes(f.read_bytes())
    (tmp_path / "in" / "1-hang.png").write_bytes(b"x")
    os.symlink(png_test_dir, tmp_path / "in" / "pngs")
    code = "import sys; from digitkit.cli import main; main(sys.argv[1:])"
    proc = psutil.Popen([sys.executable, "-c", code, "infer", str(linear_onnx),
                         str(tmp_path / "in"), "-o", str(out), "--batch-size", "16",
                         "--workers", "2", "--file-timeout", "0"],
                        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                        preexec_fn=_no_core_files)
    deadline = time.monotonic() + 60
    while not (out.exists() and out.stat().st_size > 1000):
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline, "no rows appeared"
        time.sleep(0.02)
    time.sleep(0.5)  # the hang has begun
    family = proc.children(recursive=True)
    # its two workers, forked from it (a run whose workers come from a forkserver: that
    # server and the resource tracker too)
    assert len(family) >= 2
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        alive = [p for p in family if _alive(p)]
        if not alive:
            break
        time.sleep(0.1)
    assert not alive, [(p.pid, p.cmdline()[-1][:60]) for p in alive]


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
