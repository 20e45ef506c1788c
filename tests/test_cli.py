"""digitkit.cli: how the command line reports a failure, in a real `python -m digitkit` process."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image


@pytest.fixture
def bad_model_run(tmp_path):
    """`digitkit infer` on a file that is not an ONNX model, with and without DIGITKIT_DEBUG."""
    (tmp_path / "bad.onnx").write_bytes(b"not an onnx model")
    (tmp_path / "images").mkdir()
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp_path / "images" / "0.png")

    def run(**env):
        return subprocess.run(
            [sys.executable, "-m", "digitkit", "infer", "bad.onnx", "images",
             "--output", "out.csv"],
            cwd=tmp_path, capture_output=True, text=True, timeout=120,
            env={k: v for k, v in os.environ.items() if k != "DIGITKIT_DEBUG"} | env)

    return run


def test_an_error_is_one_line_by_default(bad_model_run):
    proc = bad_model_run()
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr.startswith("digitkit: error: bad.onnx: not a usable ONNX model")
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


def test_digitkit_debug_adds_the_traceback_and_its_cause(bad_model_run):
    quiet = bad_model_run(DIGITKIT_DEBUG="0")
    assert quiet.returncode == 1 and "Traceback" not in quiet.stderr  # 0 means off

    proc = bad_model_run(DIGITKIT_DEBUG="1")
    assert proc.returncode == 1
    *trace, last = proc.stderr.rstrip("\n").split("\n")
    assert last + "\n" == quiet.stderr  # the same one line, last
    trace = "\n".join(trace)
    assert trace.startswith("Traceback (most recent call last):")
    # First the underlying failure (its type and message), then the ModelError raised from it.
    cause, sep, error = trace.partition(
        "The above exception was the direct cause of the following exception")
    assert sep, trace
    cause_type, cause_message = cause.strip().splitlines()[-1].split(": ", 1)
    assert not cause_type.startswith("digitkit.")  # e.g. google.protobuf.message.DecodeError
    assert f"({cause_message})" in last  # the one line quotes the cause's message
    assert "digitkit.errors.ModelError: bad.onnx: not a usable ONNX model" in error


# -- Ctrl-C from the first instant ------------------------------------------------------------

#: What the console script does before it imports digitkit (pip writes it: `import re`,
#: `import sys`), then a byte on the pipe: the moment the first line of digitkit runs.
_CONSOLE_SCRIPT = ("import re, sys, os; os.write(int(sys.argv.pop(1)), b'x'); "
                   "from digitkit.cli import main; main()")


def test_the_program_imports_nothing_before_its_interrupt_handler():
    """`from digitkit.cli import main` (the console script's line) loads only the signal
    module beside digitkit's two: no click, no command, no numpy. A Ctrl-C while the rest
    imports meets main's handler, not a KeyboardInterrupt traceback from inside click."""
    code = ("import re, sys; before = set(sys.modules); from digitkit.cli import main; "
            "print(' '.join(sorted(set(sys.modules) - before)))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=60, check=True)
    assert set(r.stdout.split()) == {"digitkit", "digitkit.cli", "signal"}, r.stdout


def _caught(pid: int) -> int:
    """The signals process `pid` has handlers for (/proc's SigCgt mask)."""
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1], 16) for line in f if line.startswith("SigCgt:"))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_ctrl_c_at_any_moment_of_start_up_is_one_line_and_130(tmp_path, png_test_dir,
                                                               linear_onnx):
    """Real Ctrl-Cs (SIGINT to the whole process group, as a terminal sends it) from the
    moment digitkit's first line runs (its handler for SIGTERM shows in /proc the instant it
    is installed, which is before anything else of digitkit is imported: see the test
    above), at delays across the imports, the option parsing, the model check and the
    worker pool's start: every time one line, "interrupted", exit 130 (never a traceback,
    never killed by the signal)."""
    import shutil
    import signal
    import time

    folder = tmp_path / "in"
    folder.mkdir()
    digit_png = shutil.copy(next((png_test_dir / "3").iterdir()), tmp_path / "a.png")
    for i in range(300):  # more than one task: the forkserver path
        os.link(digit_png, folder / f"{i:03d}.png")
    os.link(digit_png, folder / "hang.png")  # the run never ends by itself
    env = dict(os.environ, DIGITKIT_TEST_DECODER_FAULTS="sleep=*hang*")
    term = 1 << (signal.SIGTERM - 1)
    for delay in (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3):
        ready_r, ready_w = os.pipe()
        p = subprocess.Popen(
            [sys.executable, "-c", _CONSOLE_SCRIPT, str(ready_w), "infer", str(linear_onnx),
             str(folder), "--batch-size", "16", "--workers", "2", "-q", "-o",
             str(tmp_path / f"r{delay}.csv")],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            start_new_session=True, pass_fds=(ready_w,))
        os.close(ready_w)
        try:
            assert os.read(ready_r, 1) == b"x"
            while not _caught(p.pid) & term:  # digitkit's handler is in place
                time.sleep(0.0005)
            time.sleep(delay)
            os.killpg(p.pid, signal.SIGINT)
            _, err = p.communicate(timeout=120)
        finally:
            os.close(ready_r)
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        err = err.decode("utf-8", "replace")
        assert "Traceback" not in err and "KeyboardInterrupt" not in err, (delay, err)
        assert p.returncode == 130, (delay, p.returncode, err)
        assert err.splitlines() == ["digitkit: error: interrupted"], (delay, err)


def test_an_interrupt_inside_code_made_from_a_string_still_exits_130(tmp_path, linear_onnx):
    """CPython marks a KeyboardInterrupt that ends a string `exec` (a dataclass being made
    while a module imports: where a Ctrl-C at start-up often lands) as unhandled even when
    caught, and `python -m` then kills itself by SIGINT at exit: exit -2 after the line, the
    workers' Ctrl-C test's 1 run in 4. Here the interrupt is raised inside such an exec, as
    the signal's handler would, during a real `python -m digitkit infer`."""
    (tmp_path / "interrupted_in_exec.py").write_text(
        "import digitkit.infer\n"
        "def run_infer(*args, **kwargs):\n"
        "    exec('raise KeyboardInterrupt', {})\n"
        "digitkit.infer.run_infer = run_infer\n"
        "from digitkit.cli import main\n"
        "main()\n")
    (tmp_path / "a.png").write_bytes(b"not read")
    r = subprocess.run([sys.executable, "-m", "interrupted_in_exec", "infer", str(linear_onnx),
                        "a.png", "-q"], cwd=tmp_path, capture_output=True, text=True,
                       timeout=120)
    assert r.stderr == "digitkit: error: interrupted\n"
    assert r.returncode == 130  # not -2: killed by SIGINT on the way out


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a real SIGINT to itself")
def test_an_interrupt_inside_a_finalizer_is_not_lost_or_printed(tmp_path, linear_onnx):
    """A Ctrl-C landing while the garbage collector runs a `__del__` (a multiprocessing
    connection's, as infer's workers start: 1 CI run in 3) cannot propagate from it: Python
    printed "Exception ignored in ... KeyboardInterrupt" and the run went on. Here a real
    SIGINT arrives inside a real finalizer during `python -m digitkit infer`: one line, 130."""
    (tmp_path / "interrupted_in_del.py").write_text(
        "import os, signal, time\n"
        "import digitkit.infer\n"
        "class Finalized:\n"
        "    def __del__(self):\n"
        "        os.kill(os.getpid(), signal.SIGINT)\n"
        "        for _ in range(100_000):  # the handler runs at a bytecode boundary in here\n"
        "            pass\n"
        "def run_infer(*args, **kwargs):\n"
        "    Finalized()\n"
        "    time.sleep(30)\n"
        "    print('not interrupted')\n"
        "digitkit.infer.run_infer = run_infer\n"
        "from digitkit.cli import main\n"
        "main()\n")
    (tmp_path / "a.png").write_bytes(b"not read")
    r = subprocess.run([sys.executable, "-m", "interrupted_in_del", "infer", str(linear_onnx),
                        "a.png", "-q"], cwd=tmp_path, capture_output=True, text=True,
                       timeout=120)
    assert r.stderr == "digitkit: error: interrupted\n"
    assert r.returncode == 130 and "not interrupted" not in r.stdout
