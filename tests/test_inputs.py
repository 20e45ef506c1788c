"""digitkit.inputs, the one rule for what is read (issue 19): a model or a result file that is
not a regular file (a link to /dev/zero, a FIFO) is refused in one line, exit 1, by every
command that reads one, never read without bound and never waited on. Real FIFOs and device
links, the real command in a real process (with a time limit and a memory cap, so the old
behaviour fails the test instead of hanging or swapping the machine)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from digitkit.errors import DataError, ModelError

#: Seconds a refused command may take on a loaded machine (it is refused before any model
#: loads; blocking on a FIFO would be forever).
BOUND_S = 60
#: Address space of the command: ample for a refusal, far short of /dev/zero read whole.
MEMORY_CAP = 3 * 2**30


def _digitkit(*args, cwd=None) -> subprocess.CompletedProcess:
    def cap():
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))

    return subprocess.run([sys.executable, "-m", "digitkit", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=BOUND_S, preexec_fn=cap)


@pytest.fixture
def odd_models(tmp_path):
    zero = tmp_path / "zero.onnx"
    os.symlink("/dev/zero", zero)
    fifo = tmp_path / "fifo.onnx"
    os.mkfifo(fifo)
    return {"character device": zero, "FIFO": fifo}


def _refused(r, path, kind):
    assert r.returncode == 1, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1] == \
        f"digitkit: error: {path}: not a regular file ({kind})", r.stderr


@pytest.mark.parametrize("command", ["infer", "bench", "view", "export"])
def test_a_model_that_is_not_a_regular_file_is_refused_by_every_command(command, odd_models,
                                                                        tmp_path, mnist_test):
    from PIL import Image

    image = tmp_path / "a.png"
    Image.fromarray(mnist_test[0][0]).save(image)
    extra = {"infer": [image], "bench": [], "view": ["--no-browser"],
             "export": ["--out", tmp_path / "exp"]}[command]
    for kind, model in odd_models.items():
        _refused(_digitkit(command, model, *extra), model, kind)


@pytest.mark.parametrize(("flag", "suffix"), [("--resume", ".csv"), ("--force", ".csv"),
                                              ("--resume", ".parquet"), ("--force", ".jsonl")])
def test_an_output_that_is_not_a_regular_file_is_refused(flag, suffix, linear_onnx, tmp_path,
                                                         mnist_test):
    from PIL import Image

    image = tmp_path / "a.png"
    Image.fromarray(mnist_test[0][0]).save(image)
    zero, fifo = tmp_path / f"zero{suffix}", tmp_path / f"fifo{suffix}"
    os.symlink("/dev/zero", zero)
    os.mkfifo(fifo)
    for kind, out in (("character device", zero), ("FIFO", fifo)):
        _refused(_digitkit("infer", linear_onnx, image, "-o", out, flag, "-q"), out, kind)


def test_the_rule_itself(tmp_path):
    """Regular files pass, open as ordinary files; everything else is refused by reason."""
    from digitkit.inputs import check_regular, open_regular

    good = tmp_path / "m.onnx"
    good.write_bytes(b"abc")
    assert check_regular(good).st_size == 3
    with open_regular(good) as f:
        assert f.read() == b"abc"
    with pytest.raises(DataError, match=r"file too large \(3 bytes, over the 2-byte limit\)"):
        open_regular(good, 2)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    os.symlink("/dev/zero", tmp_path / "zero")
    os.symlink(tmp_path / "gone", tmp_path / "dangling")
    for name, reason in {"fifo": "not a regular file (FIFO)",
                         "zero": "not a regular file (character device)",
                         "dangling": "broken symbolic link", "missing": "no such file",
                         ".": "is a directory"}.items():
        for fn in (check_regular, open_regular):
            with pytest.raises(DataError) as e:
                fn(tmp_path / name)
            assert e.value.reason == reason, (name, fn)


def test_a_model_file_over_the_cap_is_refused_before_it_is_read(tmp_path):
    from digitkit.model.files import MAX_MODEL_SIZE, identify

    big = tmp_path / "big.onnx"
    with open(big, "wb") as f:
        f.truncate(MAX_MODEL_SIZE + 1)  # sparse: no disk used
    with pytest.raises(ModelError, match=r"big.onnx: file too large \("):
        identify(big)
