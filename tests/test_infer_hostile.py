"""Issues 11 and 19: no file can stop, hang or corrupt a batch run. A generated hostile corpus
(tests/_hostile.py) through the real command in a real process: every entry gets exactly one
row, every good file is classified correctly, the run ends with exit 3 in bounded time and
never prints a traceback; odd names round-trip through --resume; the Ray engine gives the
same rows. Real crashes and hangs come from the test-only decoder hook
(DIGITKIT_TEST_DECODER_FAULTS, see digitkit.images.faults).

Round 2 (issue 19): formats digitkit does not read, behind image suffixes, with a logging
`gs` first on PATH (it must never run); folders past the path limit; folders that cannot be
listed or searched (the run obeys permissions although the tests run as root:
`_hostile.obey_permissions`); carriage returns in names, read back by standard readers;
resumed files with rows of the wrong types; limits spelled "inf"; Ctrl-C while the workers
start; a hang that costs one time limit; libpng's own warnings."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from _hostile import (
    NOT_UTF8,
    fake_ghostscript,
    make_corpus,
    obey_permissions,
    permissions_can_be_obeyed,
    unlock,
)
from _onnx_model import predict_numpy
from digitkit.infer.results.provenance import sidecar
from digitkit.infer.results.rows import COLUMNS, path_bytes, unescape_path

FAULTS = "segv=crash-segv*,abort=crash-abort*,kill=crash-kill*,sleep=hang*"
#: The per-file time limit of these runs: the hang costs this, not an hour.
FILE_TIMEOUT = 2
#: Whole run, hang included, on a loaded 2-core machine.
BOUND_S = 90


def _confident_digits(x, y, w, b, n=4) -> list[int]:
    """n digits of different classes the linear model gets right with > 98% confidence, so
    lossy containers (JPEG) cannot flip them: "classified correctly" is then a sharp test."""
    logits = x[:500].reshape(500, -1).astype(np.float32) @ w + b
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    chosen, labels = [], set()
    for i in np.flatnonzero((p.argmax(1) == y[:500]) & (p.max(1) > 0.98)):
        if int(y[i]) not in labels:
            chosen.append(int(i))
            labels.add(int(y[i]))
        if len(chosen) == n:
            break
    assert (predict_numpy(w, b, x[chosen]) == y[chosen]).all()
    return chosen


@pytest.fixture(scope="module")
def ghostscript(tmp_path_factory):
    """A logging `gs` for the runs' PATH: the log exists once anything has started it."""
    d = tmp_path_factory.mktemp("gs")
    fake_ghostscript(d / "bin", d / "gs.log")
    return d / "bin", d / "gs.log"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, mnist_test, linear_model):
    x, y = mnist_test
    _, w, b = linear_model
    locked = permissions_can_be_obeyed(tmp_path_factory.mktemp("probe"))
    c = make_corpus(tmp_path_factory.mktemp("hostile") / "in", x, y,
                    _confident_digits(x, y, w, b), faults=True, locked=locked)
    yield c
    unlock(c.root / "locked")


def _cli(args, env_extra=None, timeout=BOUND_S * 2, gs_bin=None):
    env = dict(os.environ, DIGITKIT_TEST_DECODER_FAULTS=FAULTS)
    env.update(env_extra or {})
    if gs_bin is not None:
        env["PATH"] = f"{gs_bin}{os.pathsep}{env['PATH']}"
    code = "import sys; from digitkit.cli import main; main(sys.argv[1:])"
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-c", code, "infer", *map(str, args)], env=env,
                       capture_output=True, timeout=timeout, preexec_fn=_prepare_child)
    return r, time.monotonic() - t0


def _prepare_child():
    import resource

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # the hook's crashes are deliberate
    obey_permissions()  # root too: the locked folders are locked for the run


def _args(corpus, linear_onnx, out):
    # 16-file chunks over 2 workers: crashes land in chunks that must be split and retried
    # while other chunks are in flight.
    return [linear_onnx, corpus.root, "-o", out, "--workers", "2", "--batch-size", "16",
            "--file-timeout", FILE_TIMEOUT]


@pytest.fixture(scope="module")
def local_run(corpus, linear_onnx, tmp_path_factory, ghostscript):
    out = tmp_path_factory.mktemp("hostile-out") / "out.csv"
    r, seconds = _cli(_args(corpus, linear_onnx, out), gs_bin=ghostscript[0])
    return r, seconds, out


def _rows(path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_exit_3_in_bounded_time_and_no_traceback(local_run, corpus):
    r, seconds, out = local_run
    stderr = r.stderr.decode("utf-8", "replace")
    assert r.returncode == 3, stderr
    assert seconds < BOUND_S
    assert "Traceback" not in stderr
    n_bad = len(corpus.entries) - len(corpus.labels)
    assert stderr.splitlines()[-1].startswith("digitkit: error: ")
    assert f"of {len(corpus.entries)} files could not be classified" in stderr
    assert len([line for line in stderr.splitlines() if line.startswith("warning: ")]) >= \
        n_bad - 15  # damaged files may still decode (a flipped run in a text chunk)


def test_every_entry_gets_exactly_one_row_and_good_files_are_right(local_run, corpus):
    rows = _rows(local_run[2])
    paths = [unescape_path(r["path"]) for r in rows]
    assert len(paths) == len(set(paths))  # no entry twice
    assert sorted(paths) == sorted(corpus.entries)  # and none left out
    by_path = dict(zip(paths, rows, strict=True))
    for path, label in corpus.labels.items():
        row = by_path[path]
        assert row["error"] == "" and int(row["label"]) == label, (path, row)
    for path, reason in corpus.reasons.items():
        row = by_path[path]
        assert row["error"].startswith(reason) and row["label"] == "", (path, row)
    # Damaged and lying files: an error row or a label, never anything else.
    for path in set(corpus.entries) - set(corpus.labels) - set(corpus.reasons):
        row = by_path[path]
        assert (row["error"] != "") != (row["label"] != ""), (path, row)


def test_no_image_started_a_program(local_run, corpus, ghostscript):
    """The PostScript file named x.png (and every other unsupported format) got its row with
    a logging `gs` first on PATH, and nothing ran it."""
    rows = {unescape_path(r["path"]): r for r in _rows(local_run[2])}
    ps = str(corpus.root / "unsupported" / "x.png")
    assert rows[ps]["error"].startswith("unsupported format (EPS"), rows[ps]
    assert not ghostscript[1].exists(), ghostscript[1].read_text()


def test_standard_readers_read_the_rows_back(local_run, corpus):
    """Carriage returns, newlines and quotes in names: Python's csv module and DuckDB read
    every row back, with its path whole."""
    duckdb = pytest.importorskip("duckdb")
    want = sorted(corpus.entries)
    got = duckdb.sql(f"SELECT path, error FROM read_csv('{local_run[2]}', header=true, "
                     "quote='\"', escape='\"', all_varchar=true)").fetchall()
    assert sorted(unescape_path(p) for p, _ in got) == want
    assert any("\r" in p for p, _ in got) and any("\r\n" in p for p, _ in got)
    with open(local_run[2], newline="", encoding="utf-8") as f:
        assert sorted(unescape_path(r[0]) for r in list(csv.reader(f))[1:]) == want


def test_a_name_that_is_not_utf8_maps_back_to_its_bytes(local_run, corpus):
    rows = _rows(local_run[2])
    odd = [r["path"] for r in rows if r["path"].endswith(".png") and "\\x" in r["path"]]
    assert len(odd) == 1 and odd[0].endswith("caf\\xe9-\\xff.png")
    assert os.path.basename(path_bytes(odd[0])) == NOT_UTF8
    assert os.path.exists(path_bytes(odd[0]))
    assert any(r["path"].endswith("back\\\\slash.png") for r in rows)


def test_resume_after_a_cut_inside_an_odd_name_finishes_identically(local_run, corpus,
                                                                   linear_onnx, tmp_path):
    full = local_run[2].read_bytes()
    cut = full.index(b"new\nline.png") + 4  # inside the quoted field, after its newline
    part = tmp_path / "part.csv"
    part.write_bytes(full[:cut])
    shutil.copy(sidecar(local_run[2]), sidecar(part))  # what made its rows
    r, seconds = _cli(_args(corpus, linear_onnx, part) + ["--resume", "-q"])
    assert r.returncode == 3, r.stderr.decode()
    assert "Traceback" not in r.stderr.decode("utf-8", "replace")
    assert part.read_bytes() == full
    # The same after a cut just past a carriage return inside a name (quoted: a row, not
    # a line end, for every reader).
    cut = full.index(b"carriage\rreturn.png") + len(b"carriage\r")
    part.write_bytes(full[:cut])
    r, _ = _cli(_args(corpus, linear_onnx, part) + ["--resume", "-q"])
    assert r.returncode == 3 and b"Traceback" not in r.stderr, r.stderr.decode()
    assert part.read_bytes() == full


def test_new_options_are_checked(linear_onnx, corpus, tmp_path):
    out = tmp_path / "o.csv"
    r, _ = _cli([linear_onnx, corpus.root / "good" / "7", "-o", out, "--max-file-size", "100",
                 "-q"])
    assert r.returncode == 3
    assert all(x["error"].startswith("file too large") for x in _rows(out))
    r, _ = _cli([linear_onnx, corpus.root, "--max-file-size", "lots"])
    assert r.returncode == 2 and b"is not a size" in r.stderr
    r, _ = _cli([linear_onnx, corpus.root, "--file-timeout", "-1"])
    assert r.returncode == 2


# -- the Ray engine: the same rows -----------------------------------------------------------


@pytest.fixture(scope="module")
def ray_runtime_env() -> dict:
    """The actors (and their decoding processes) get the decoder hook through the job's env."""
    return {"env_vars": {"DIGITKIT_TEST_DECODER_FAULTS": FAULTS}}


def test_ray_engine_gives_the_same_rows(ray_local, local_run, corpus, linear_onnx,
                                        tmp_path):
    from digitkit.infer import InferSpec, run_infer
    from digitkit.infer.spec import InputLimits

    out = tmp_path / "ray.csv"
    spec = InferSpec(linear_onnx, engine="ray", workers=2, batch_size=16,
                     limits=InputLimits(file_timeout=FILE_TIMEOUT))
    summary = run_infer(spec, [corpus.root], out, warn=lambda msg: None)
    # The Ray run is this process (root, permissions overridden): the locked folders are
    # open to it, so they are compared elsewhere (the local run's rows).
    locked = str(corpus.root / "locked") + os.sep
    local = [r for r in _rows(local_run[2]) if not unescape_path(r["path"]).startswith(locked)]
    ray = [r for r in _rows(out) if not unescape_path(r["path"]).startswith(locked)]
    assert len(local) == len([e for e in corpus.entries if not e.startswith(locked)])
    assert summary.total == len(_rows(out))
    assert [r["path"] for r in ray] == [r["path"] for r in local]
    for a, b in zip(ray, local, strict=True):
        for col in COLUMNS:
            if col in ("confidence", "top_k_probs") and a[col] != b[col]:
                # The two engines batch differently: a 6th decimal may round the other way.
                assert all(abs(float(u) - float(v)) <= 2e-6
                           for u, v in zip(a[col].split(), b[col].split(), strict=True))
            else:
                assert a[col] == b[col], (col, a, b)


def test_a_run_of_one_chunk_is_isolated_too(corpus, linear_onnx, tmp_path):
    """Fewer files than a batch: one worker forked from the main process (no forkserver),
    with the same crash and time-limit handling."""
    out = tmp_path / "small.csv"
    r, seconds = _cli([linear_onnx, corpus.root / "faults", corpus.root / "good" / "7", "-o",
                       out, "--file-timeout", FILE_TIMEOUT, "-q"])
    assert r.returncode == 3 and b"Traceback" not in r.stderr, r.stderr
    rows = {unescape_path(x["path"]): x for x in _rows(out)}
    for path, reason in corpus.reasons.items():
        if "/faults/" in path:
            assert rows[path]["error"].startswith(reason), rows[path]
    good = [p for p in corpus.labels if "/good/7/" in p]
    assert good and all(int(rows[p]["label"]) == 7 for p in good)
    assert len(rows) == 4 + len(good) and seconds < BOUND_S


# -- round 2 (issue 19): errors as promised --------------------------------------------------


@pytest.fixture
def digit_png(tmp_path, mnist_test):
    from PIL import Image

    path = tmp_path / "in" / "7" / "a.png"
    path.parent.mkdir(parents=True)
    Image.fromarray(mnist_test[0][0]).save(path)
    return path


@pytest.mark.parametrize(("suffix", "bad"), [
    (".jsonl", '{"path": 123}'),
    (".jsonl", '{"path": "p", "label": "x"}'),
    (".jsonl", '{"path": "p", "label": 3, "error": 5}'),
    (".csv", "p,\u00b2,0.5,2,0.5,"),
])
def test_a_resumed_row_of_the_wrong_types_refuses_the_resume_in_one_line(suffix, bad, tmp_path,
                                                                        digit_png, linear_onnx):
    from _cli import run_cli

    out = tmp_path / f"out{suffix}"
    good = (json.dumps({"path": "q", "label": 1, "confidence": 0.9, "top_k_labels": [1],
                        "top_k_probs": [0.9], "error": ""}) if suffix == ".jsonl"
            else "q,1,0.900000,1,0.900000,")
    head = "" if suffix == ".jsonl" else "path,label,confidence,top_k_labels,top_k_probs,error\n"
    out.write_text(f"{head}{bad}\n{good}\n", encoding="utf-8")
    before = out.read_bytes()
    r = run_cli("infer", linear_onnx, digit_png, "-o", out, "--resume", "--workers", "0", "-q")
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit), r.exception
    assert "cannot resume: malformed row at byte" in r.output, r.output
    assert out.read_bytes() == before  # nothing the user has is touched


@pytest.mark.parametrize(("option", "value"), [
    ("--max-file-size", "inf"), ("--max-file-size", "1e400"), ("--max-file-size", "1e30"),
    ("--file-timeout", "inf"), ("--file-timeout", "1e12"), ("--file-timeout", "nan")])
def test_limits_beyond_any_meaning_are_usage_errors(option, value, digit_png, linear_onnx):
    """"No limit" is spelled --file-timeout 0; a size has none. inf, nan or absurd values:
    exit 2, one line."""
    from _cli import run_cli

    r = run_cli("infer", linear_onnx, digit_png, option, value, "--workers", "0", "-q")
    assert r.exit_code == 2 and isinstance(r.exception, SystemExit), (r.exception, r.output)
    assert r.output.strip().splitlines()[-1].startswith("digitkit: error: ")
    r = run_cli("infer", linear_onnx, digit_png, "--file-timeout", "0", "--workers", "0", "-q")
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize("delay", [0.0, 0.1, 0.3])
def test_ctrl_c_while_the_workers_start_prints_no_traceback(delay, tmp_path, digit_png,
                                                           linear_onnx):
    """A real Ctrl-C (SIGINT to the whole process group, as a terminal sends it) just after the
    run starts its workers, while they import: one line, exit 130."""
    import signal

    import psutil

    folder = tmp_path / "many"
    folder.mkdir()
    # More than one task (workers forked from the main process), and enough that the run
    # is still going at the longest delay now that forked workers start in a few ms.
    for i in range(10_000):
        os.link(digit_png, folder / f"{i:05d}.png")
    env = dict(os.environ)
    p = subprocess.Popen([sys.executable, "-m", "digitkit", "infer", linear_onnx, folder,
                          "--batch-size", "16", "--workers", "2", "-q"], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         start_new_session=True)
    try:
        main = psutil.Process(p.pid)
        while p.poll() is None and not _children(main):
            time.sleep(0.005)
        assert p.poll() is None, "the run ended before its workers started"
        time.sleep(delay)
        os.killpg(p.pid, signal.SIGINT)
        _, err = p.communicate(timeout=BOUND_S)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    err = err.decode("utf-8", "replace")
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert p.returncode == 130, (p.returncode, err)  # never killed by the signal itself
    assert err.strip().splitlines()[-1] == "digitkit: error: interrupted"


def _children(proc):
    import psutil

    try:
        return proc.children()
    except psutil.Error:
        return []


def test_a_hanging_file_costs_one_time_limit_not_two(tmp_path, digit_png, linear_onnx):
    """A hang in a chunk of many files: the worker's timer names the file it stopped, which
    gets its row at once; the others are retried alone (crash isolation kept). The decoder
    hook logs each try: the hanging file is tried once (it used to be tried again alone)."""
    from PIL import Image

    folder = tmp_path / "chunk"
    folder.mkdir()
    for i in range(12):
        os.link(digit_png, folder / f"{i:02d}.png")
    Image.open(digit_png).save(folder / "05b-hang.png")
    Image.open(digit_png).save(folder / "09b-segv.png")  # after it: retried alone, isolated
    log = tmp_path / "faults.log"
    out = tmp_path / "out.csv"
    r, _ = _cli([linear_onnx, folder, "-o", out, "--workers", "1", "--batch-size", "16",
                 "--file-timeout", "1", "-q"],
                env_extra={"DIGITKIT_TEST_DECODER_FAULTS": "sleep=*hang*,segv=*segv*",
                           "DIGITKIT_TEST_DECODER_FAULT_LOG": str(log)})
    assert r.returncode == 3, r.stderr.decode()
    tries = log.read_text().splitlines()
    assert tries.count("sleep 05b-hang.png") == 1, tries
    rows = {os.path.basename(x["path"]): x for x in _rows(out)}
    assert rows["05b-hang.png"]["error"].startswith("timed out")
    assert rows["09b-segv.png"]["error"].startswith("crashed")  # still isolated
    assert all(rows[f"{i:02d}.png"]["label"] == "7" for i in range(12))


def test_libpng_warnings_do_not_reach_stderr(tmp_path, mnist_test, linear_onnx):
    """A gray PNG whose ancillary chunk libpng warns about (an invalid bKGD) decodes on the
    fast path; libpng's own "libpng warning: ..." line, which names no file, is not printed."""
    import io
    import struct
    import zlib

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(mnist_test[0][0]).save(buf, format="PNG")
    data = buf.getvalue()
    body = b"bKGD" + b"\xff\xff"
    chunk = struct.pack(">I", 2) + body + struct.pack(">I", zlib.crc32(body))
    folder = tmp_path / "7"
    folder.mkdir()
    (folder / "odd-chunk.png").write_bytes(data[:33] + chunk + data[33:])
    r, _ = _cli([linear_onnx, folder, "-o", tmp_path / "out.csv", "-q"])
    assert r.returncode == 0, r.stderr.decode()
    assert b"libpng" not in r.stderr, r.stderr.decode()
    assert _rows(tmp_path / "out.csv")[0]["label"] == "7"
