"""Parquet result files under hostile conditions (issue 19, item 9): the file's mode follows
the umask like CSV's; a real file-size limit (RLIMIT_FSIZE in the child) is one line naming
the file; the row groups written before it are kept, whole, and `--resume` finishes the file
as an uninterrupted run would have written it; a killed run's temporary file is removed by the
next run. Real processes, real signals, real limits."""

from __future__ import annotations

import os
import resource
import shutil
import signal
import stat
import subprocess
import sys
import time

import pytest

pq = pytest.importorskip("pyarrow.parquet")

from _infer_folders import class_folders  # noqa: E402

CODE = "import sys; from digitkit.cli import main; main(sys.argv[1:])"
#: The same command with row groups of 16 rows, so that 150 files make ten of them (a real run
#: makes one every 65,536 rows).
SMALL_GROUPS = ("import sys; from digitkit.infer.results import parquet; "
                "parquet.ROW_GROUP_ROWS = 16; from digitkit.cli import main; main(sys.argv[1:])")


@pytest.fixture(scope="module")
def folder(png_test_dir, tmp_path_factory):
    return class_folders(png_test_dir, tmp_path_factory.mktemp("pq"), per_class=15)


def _run(model, inputs, out, *extra, fsize=None, env=None, code=CODE):
    def child():
        os.umask(0o022)
        if fsize:
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    return subprocess.run([sys.executable, "-c", code, "infer", str(model),
                           *map(str, inputs), "-o", str(out), "-q", "--workers", "0", *extra],
                          capture_output=True, text=True, timeout=300, preexec_fn=child,
                          env=env)


def _hidden(d):
    return sorted(n for n in os.listdir(d) if n.startswith("."))


def test_mode_follows_the_umask_like_csv(linear_onnx, folder, tmp_path):
    for name in ("r.csv", "r.parquet"):
        r = _run(linear_onnx, [folder / "3"], tmp_path / name)
        assert r.returncode == 0, r.stderr
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name


def test_a_file_size_limit_names_the_file_and_keeps_the_rows_it_had(linear_onnx, folder,
                                                                     tmp_path):
    whole = tmp_path / "whole.parquet"
    assert _run(linear_onnx, [folder], whole).returncode == 0
    out = tmp_path / "r.parquet"
    r = _run(linear_onnx, [folder], out, fsize=3000)  # the whole file needs more
    assert r.returncode == 1, r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert f"{out}: cannot write (File too large)" in r.stderr
    assert not out.exists() and _hidden(tmp_path) == []
    # A resume under the limit: the rows the file had are still there, untouched.
    assert _run(linear_onnx, [folder / "3", folder / "4"], out).returncode == 0
    before = out.read_bytes()
    r = _run(linear_onnx, [folder], out, "--resume", fsize=len(before) + 500)
    assert r.returncode == 1 and f"{out}: cannot write (File too large)" in r.stderr, r.stderr
    assert "it holds the rows it held before this run" in r.stderr
    assert out.read_bytes() == before and _hidden(tmp_path) == []
    r = _run(linear_onnx, [folder], out, "--resume")
    assert r.returncode == 0, r.stderr
    got, want = pq.read_table(out), pq.read_table(whole)
    assert sorted(got.column("path").to_pylist()) == sorted(want.column("path").to_pylist())
    assert got.num_rows == want.num_rows == 150


def test_a_file_size_limit_keeps_the_whole_row_groups_and_resume_finishes_them(
        linear_onnx, folder, tmp_path):
    """Issue 19, item 9: the rows of the run that hit the limit are not lost. The file keeps
    every row group that is whole on the disk (with a footer naming only those), like CSV
    keeps its whole rows; a resume under a higher limit adds more, and one without a limit
    finishes it: the same table an uninterrupted run writes."""
    whole = tmp_path / "whole.parquet"
    assert _run(linear_onnx, [folder], whole, code=SMALL_GROUPS).returncode == 0
    want = pq.read_table(whole)
    assert pq.ParquetFile(whole).metadata.num_row_groups == 10
    out = tmp_path / "r.parquet"
    kept = []
    for fsize in (whole.stat().st_size // 2, whole.stat().st_size * 3 // 4):
        r = _run(linear_onnx, [folder], out, *(["--resume"] if kept else []), fsize=fsize,
                 code=SMALL_GROUPS)
        assert r.returncode == 1, r.stderr
        assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
        assert r.stderr.startswith(f"digitkit: error: {out}: cannot write (File too large); "
                                   "it holds the "), r.stderr
        got = pq.read_table(out)  # a complete file, readable by anyone
        assert f"it holds the {got.num_rows} rows written so far" in r.stderr
        assert got.equals(want.slice(0, got.num_rows))  # the first rows, whole
        assert _hidden(tmp_path) == []
        kept.append(got.num_rows)
    assert 0 < kept[0] < kept[1] < want.num_rows and all(n % 16 == 0 for n in kept)
    duckdb = pytest.importorskip("duckdb")
    assert duckdb.sql(f"SELECT count(*) FROM read_parquet('{out}')").fetchall() == [(kept[1],)]
    r = _run(linear_onnx, [folder], out, "--resume", code=SMALL_GROUPS)
    assert r.returncode == 0, r.stderr
    got = pq.read_table(out)
    assert got.equals(want) and got.schema.metadata == want.schema.metadata


def test_a_killed_runs_temporary_file_is_removed_by_the_next_run(linear_onnx, folder,
                                                                 tmp_path):
    slow = tmp_path / "in"
    shutil.copytree(folder / "3", slow / "3")
    shutil.copy(next((folder / "3").iterdir()), slow / "3" / "hang.png")
    out = tmp_path / "out" / "r.parquet"
    out.parent.mkdir()
    env = dict(os.environ, DIGITKIT_TEST_DECODER_FAULTS="sleep=hang*")
    p = subprocess.Popen([sys.executable, "-c", CODE, "infer", str(linear_onnx), str(slow),
                          "-o", str(out), "-q", "--workers", "1", "--batch-size", "2",
                          "--file-timeout", "600"], env=env, stderr=subprocess.PIPE)
    try:
        while not [n for n in _hidden(out.parent) if n.endswith(".tmp")]:
            assert p.poll() is None, p.stderr.read()
            time.sleep(0.05)
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    left = _hidden(out.parent)
    assert [n for n in left if n.endswith(".tmp")] and not out.exists()
    r = _run(linear_onnx, [folder / "3"], out, "--resume")
    assert r.returncode == 0, r.stderr
    assert _hidden(out.parent) == [] and pq.read_table(out).num_rows == 15


_SWEEP = r'''
import json, os, resource, sys
import pyarrow as pa, pyarrow.parquet as pq
from digitkit.errors import DigitkitError
from digitkit.infer.results import parquet
from digitkit.infer.results.formats import encode_predictions

parquet.ROW_GROUP_ROWS = 8
out = sys.argv[1]
paths = [f"d/{i:03d}.png" for i in range(100)]
probs = [[(i * 7 + j) % 10 / 45.0 for j in range(10)] for i in range(100)]
import numpy as np
table = encode_predictions(paths, [""] * 100, np.array(probs, np.float32), 3, "parquet").data

def write():
    with parquet.ParquetRowWriter(out, force=True) as w:
        for i in range(0, 100, 5):
            w.write(table.slice(i, 5))

write()
size = os.path.getsize(out)
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
seen = {}
for limit in sorted(set(range(0, size, 1009)) | set(range(size - 150, size, 7))):
    if os.path.exists(out):
        os.unlink(out)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        write()
        raise SystemExit(f"no refusal under a limit of {limit} < {size}")
    except DigitkitError as err:
        message = str(err)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    rows = pq.read_table(out).num_rows if os.path.exists(out) else 0
    assert [n for n in os.listdir(os.path.dirname(out)) if n.endswith(".tmp")] == [], limit
    if rows:
        assert pq.read_table(out).equals(table.slice(0, rows)), limit
        assert f"it holds the {rows} rows written so far" in message, message
    else:
        assert "no rows were kept" in message, message
    seen[limit] = rows
print(json.dumps({"size": size, "seen": seen}))
'''


def test_a_refusal_at_any_byte_keeps_whole_row_groups(tmp_path):
    """The file-size limit at bytes all through a file of 13 row groups (every 1,009th byte,
    and every 7th of the last 150: the last row group, the footer, its length and magic): the
    output is always a readable Parquet file of whole row groups, the first rows of the
    table, or (no group whole) no file; never a temporary file left behind."""
    import json

    r = subprocess.run([sys.executable, "-c", _SWEEP, str(tmp_path / "r.parquet")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout)
    seen = {int(k): v for k, v in got["seen"].items()}
    assert all(n % 8 == 0 or n == 100 for n in seen.values())
    assert seen[0] == 0 and max(seen.values()) == 96  # the last group never fits with its footer
    counts = [seen[k] for k in sorted(seen)]
    assert counts == sorted(counts)  # a higher limit never keeps fewer rows
