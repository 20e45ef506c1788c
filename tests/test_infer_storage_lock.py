"""digitkit.infer.storage.lock: one writer per output (issue 19, item 6). Two real `digitkit infer`
processes on one output: the second is refused in one line and the first one's file is
whole, one row per input, as if it had run alone."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from _infer_folders import class_folders
from digitkit.infer.storage.lock import OutputBusyError, lock_path, output_lock

CODE = "import sys; from digitkit.cli import main; main(sys.argv[1:])"


@pytest.fixture(scope="module")
def slow_folder(png_test_dir, tmp_path_factory):
    """Class folders and one file that hangs its decoder (the test-only hook), so a run is
    still going when the second one starts."""
    root = class_folders(png_test_dir, tmp_path_factory.mktemp("lock"), per_class=5)
    shutil.copy(next((root / "9").iterdir()), root / "9" / "hang.png")
    return root


def _start(model, folder, out, *extra, env=None):
    return subprocess.Popen([sys.executable, "-c", CODE, "infer", str(model), str(folder),
                             "-o", str(out), "-q", "--workers", "1", "--batch-size", "2",
                             "--file-timeout", "600", *extra], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("second", [["--force"], ["--resume"], []])
def test_a_second_run_on_the_same_output_is_refused(linear_onnx, slow_folder, tmp_path,
                                                    second):
    out = tmp_path / "f.csv"
    env = dict(os.environ, DIGITKIT_TEST_DECODER_FAULTS="sleep=hang*")
    a = _start(linear_onnx, slow_folder, out, env=env)
    try:
        while not out.exists():  # A holds the lock and has written its first rows
            assert a.poll() is None, a.stderr.read()
            time.sleep(0.05)
        b = subprocess.run([sys.executable, "-c", CODE, "infer", str(linear_onnx),
                            str(slow_folder / "3"), "-o", str(out), "-q", "--workers", "0",
                            *second], capture_output=True, text=True, timeout=300)
        assert b.returncode == 1, b.stderr
        assert b.stderr.count("\n") == 1 and "Traceback" not in b.stderr
        assert f"{out}: another digitkit run is writing it (pid {a.pid})" in b.stderr
        a.send_signal(signal.SIGINT)  # A stops at the hang, keeping its whole rows
        assert a.wait(timeout=120) == 130, a.stderr.read()
    finally:
        if a.poll() is None:
            a.kill()
    rows = list(csv.DictReader(out.open(newline="")))
    paths = [r["path"] for r in rows]
    assert len(paths) == len(set(paths)) >= 1  # no duplicate, no spliced row
    assert all(len(r) == 6 and r["top_k_labels"].count(" ") == 2 for r in rows)
    assert not lock_path(out).exists()  # A removed its lock when it stopped
    # Now that A is gone, its run can be finished.
    r = subprocess.run([sys.executable, "-c", CODE, "infer", str(linear_onnx),
                        str(slow_folder / "3"), "-o", str(out), "-q", "--workers", "0",
                        "--force"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr


def test_a_killed_holder_leaves_no_lock(tmp_path):
    """SIGKILL: the kernel drops the lock; the file left behind blocks nobody."""
    out = tmp_path / "r.csv"
    code = ("import sys, time\nfrom digitkit.infer.storage.lock import output_lock\n"
            "with output_lock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(600)\n")
    p = subprocess.Popen([sys.executable, "-c", code, str(out)], stdout=subprocess.PIPE,
                         text=True)
    try:
        assert p.stdout.readline() == "held\n"
        with pytest.raises(OutputBusyError, match=f"pid {p.pid}"):
            with output_lock(out):
                pass
        p.kill()
        p.wait(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert lock_path(out).exists()  # left by the killed process
    with output_lock(out) as held:
        assert held == lock_path(out)
    assert not lock_path(out).exists()
    # A shard directory's lock lies beside it.
    assert lock_path(str(tmp_path / "shards") + "/") == tmp_path / ".shards.lock"
