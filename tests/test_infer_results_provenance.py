"""digitkit.infer.results.provenance: every result file records what made its rows (model sha256,
input convention, top-k, --max-file-size, digitkit version), and `--resume` refuses to add
rows made any other way, in one line naming the difference (issue 19, item 5). Real runs of
the real command, each through its own process where a signal is involved."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from _infer_folders import class_folders
from _onnx_model import write_linear_onnx
from conftest import run_cli
from digitkit.images import MAX_FILE_SIZE
from digitkit.infer.results.formats import result_format
from digitkit.infer.results.provenance import PARQUET_KEY, Record, read_record, sidecar

CODE = "import sys; from digitkit.cli import main; main(sys.argv[1:])"


@pytest.fixture(scope="module")
def folder(png_test_dir, tmp_path_factory):
    return class_folders(png_test_dir, tmp_path_factory.mktemp("prov"), per_class=12)


@pytest.fixture(scope="module")
def other_onnx(linear_model, tmp_path_factory):
    """Another model: the same linear model with its weights halved (other bytes)."""
    _, w, b = linear_model
    return write_linear_onnx(tmp_path_factory.mktemp("other") / "other.onnx", w * 0.5, b)


def _infer(*args):
    return run_cli("infer", *args, "-q", "--workers", "0")


def _partial(model, folder, out):
    """A run over two class folders only: an interrupted run's file, as far as resume goes."""
    r = _infer(model, folder / "3", folder / "4", "-o", out)
    assert r.exit_code == 0, r.output
    return out.read_bytes()


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_each_format_records_what_made_it(linear_onnx, folder, tmp_path, fmt):
    from digitkit import __version__
    from digitkit.artifacts import sha256_file

    out = tmp_path / f"r.{fmt}"
    _partial(linear_onnx, folder, out)
    rec = read_record(out, result_format(fmt))
    assert rec == Record(sha256_file(linear_onnx), "digitkit's contract", 3, rec.max_file_size,
                         __version__, "onnxruntime", "fp32")
    if fmt == "parquet":
        import pyarrow.parquet as pq

        assert PARQUET_KEY in pq.read_schema(out).metadata
        assert not sidecar(out).exists()
    else:
        assert json.loads(sidecar(out).read_text())["top_k"] == 3
        # Standard readers read the file as before: the record is not in it.
        if fmt == "csv":
            rows = list(csv.DictReader(out.open(newline="")))
            assert len(rows) == 24 and rows[0]["path"].endswith(".png")
            duckdb = pytest.importorskip("duckdb")
            assert duckdb.sql(f"SELECT count(*) FROM read_csv('{out}')").fetchall()[0][0] == 24
        else:
            assert all("path" in json.loads(line) for line in out.read_text().splitlines())


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
@pytest.mark.parametrize("change", ["model", "top-k", "max-file-size"])
def test_resume_made_another_way_is_refused_naming_the_difference(
        linear_onnx, other_onnx, folder, tmp_path, fmt, change):
    out = tmp_path / f"r.{fmt}"
    before = _partial(linear_onnx, folder, out)
    model, extra, named = {
        "model": (other_onnx, [], "model sha256"),
        "top-k": (linear_onnx, ["--top-k", "5"], "top-k 3, this run 5"),
        "max-file-size": (linear_onnx, ["--max-file-size", "1M"],
                          f"--max-file-size {MAX_FILE_SIZE}, this run 1048576"),
    }[change]
    r = _infer(model, folder, "-o", out, "--resume", *extra)
    assert r.exit_code == 1, r.output
    line = r.output.strip()
    assert "\n" not in line
    assert line.startswith(f"digitkit: error: {out}: cannot resume: made with")
    assert named in line and "--force" in line
    assert out.read_bytes() == before  # nothing added, nothing cut
    # The same model and options finish it.
    r = run_cli("infer", linear_onnx, folder, "-o", out, "--resume", "--workers", "0")
    assert r.exit_code == 0 and "24 already done" in r.output, r.output


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_a_file_without_a_record_is_refused_unless_forced(linear_onnx, folder, tmp_path, fmt):
    out = tmp_path / f"r.{fmt}"
    _partial(linear_onnx, folder, out)
    if fmt == "parquet":  # as digitkit wrote it before: the same table, no record
        import pyarrow.parquet as pq

        table = pq.read_table(out)
        pq.write_table(table.replace_schema_metadata(None), out)
    else:
        sidecar(out).unlink()
    before = out.read_bytes()
    r = _infer(linear_onnx, folder, "-o", out, "--resume")
    assert r.exit_code == 1 and "no record of the model and options" in r.output, r.output
    assert "--force" in r.output and out.read_bytes() == before
    r = _infer(linear_onnx, folder, "-o", out, "--force")
    assert r.exit_code == 0, r.output
    assert read_record(out, result_format(fmt)) is not None


def test_an_interrupted_run_resumed_with_another_model_is_refused(
        linear_onnx, other_onnx, folder, tmp_path):
    """The audit's case: a real run stopped by a real SIGINT, then `--resume` with another
    model: refused (it was exit 0 with rows of both models)."""
    out = tmp_path / "r.csv"
    env = dict(os.environ, DIGITKIT_TEST_DECODER_FAULTS="sleep=hang*")
    slow = tmp_path / "in"
    shutil.copytree(folder, slow)
    shutil.copy(next((folder / "9").iterdir()), slow / "9" / "hang.png")
    p = subprocess.Popen([sys.executable, "-c", CODE, "infer", str(linear_onnx), str(slow),
                          "-o", str(out), "--workers", "1", "--batch-size", "4", "-q",
                          "--file-timeout", "600"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        while not (out.exists() and out.read_text().count("\n") > 20):  # rows before the hang
            assert p.poll() is None, p.stderr.read()
            time.sleep(0.05)
        p.send_signal(signal.SIGINT)
        assert p.wait(timeout=120) == 130
    finally:
        if p.poll() is None:
            p.kill()
    rows = out.read_bytes()
    r = subprocess.run([sys.executable, "-c", CODE, "infer", str(other_onnx), str(slow), "-o",
                        str(out), "--resume", "-q"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and "cannot resume: made with model sha256" in r.stderr, r.stderr
    assert r.stderr.count("\n") == 1 and out.read_bytes() == rows
