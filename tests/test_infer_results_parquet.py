"""digitkit.infer.results.columns and digitkit.infer.results.parquet: the one Parquet schema,
and the local engine's streamed `.parquet` result file (row groups, atomic, resumable)."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from _cli import run_cli  # noqa: E402
from _infer_folders import numpy_answers  # noqa: E402
from digitkit.errors import DataError, OutputExistsError, UsageError  # noqa: E402
from digitkit.infer import InferSpec, run_infer  # noqa: E402
from digitkit.infer.results import parquet as parquet_module  # noqa: E402
from digitkit.infer.results.columns import schema, table_of  # noqa: E402
from digitkit.infer.results.formats import encode_predictions, format_for  # noqa: E402
from digitkit.infer.results.parquet import ParquetRowWriter, scan_parquet  # noqa: E402
from digitkit.infer.results.rows import COLUMNS  # noqa: E402


def _run(model, inputs, out, **kw):
    return run_infer(InferSpec(model, **kw), inputs, out, warn=lambda msg: None)


def test_schema_and_columns_of_a_chunk():
    probs = np.array([[0.1, 0.7, 0.2] + [0.0] * 7, [0.0] * 9 + [1.0]], np.float32)
    enc = encode_predictions(["a/1.png", "bad.png", "b/2.png"], ["", "empty file", ""],
                             probs, 2, "parquet")
    assert enc.count == 3 and enc.errors == [("bad.png", "empty file")]
    t = enc.data
    assert t.schema.equals(schema()) and t.column_names == list(COLUMNS)
    assert t.to_pylist()[1] == {"path": "bad.png", "label": None, "confidence": None,
                                "top_k_labels": [], "top_k_probs": [], "error": "empty file"}
    first = t.to_pylist()[0]
    assert first["label"] == 1 and first["top_k_labels"] == [1, 2] and first["error"] == ""
    assert first["top_k_probs"] == pytest.approx([0.7, 0.2])
    assert t.column("label").to_pylist() == [1, None, 9]
    # A chunk of only failures, and an empty one, keep the schema.
    assert table_of(["x"], ["not an image"], np.zeros((0, 3), int),
                    np.zeros((0, 3), np.float32)).schema.equals(schema())
    assert format_for("r.parquet") == "parquet" and format_for("r.PARQUET") == "parquet"


def test_local_parquet_has_the_csv_rows(linear_model, mixed_folder, mnist_test, tmp_path):
    path, w, b = linear_model
    _run(path, [mixed_folder], tmp_path / "r.csv", workers=0)
    s = _run(path, [mixed_folder], tmp_path / "r.parquet", workers=0)
    assert (s.written, s.failed, s.labelled) == (303, 3, 300)
    table = pq.read_table(tmp_path / "r.parquet")
    assert table.schema.equals(schema())
    rows = table.to_pylist()
    text = list(csv.DictReader(open(tmp_path / "r.csv", newline="")))
    assert [r["path"] for r in rows] == [r["path"] for r in text]
    for r, c in zip(rows, text, strict=True):
        assert r["error"] == c["error"]
        if r["error"]:
            assert r["label"] is None and c["label"] == ""
            continue
        assert str(r["label"]) == c["label"]
        assert " ".join(map(str, r["top_k_labels"])) == c["top_k_labels"]
        # Parquet keeps float32; CSV rounds to 6 decimals.
        assert all(math.isclose(p, float(q), abs_tol=6e-7)
                   for p, q in zip(r["top_k_probs"], c["top_k_probs"].split(), strict=True))
    good = [r["path"] for r in rows if not r["error"]]
    predicted, _ = numpy_answers(good, mnist_test, w, b)
    assert [r["label"] for r in rows if not r["error"]] == predicted.tolist()


def test_worker_processes_write_the_same_parquet(linear_onnx, mixed_folder, tmp_path):
    # Tables built in the forkserver workers travel back pickled: same table.
    _run(linear_onnx, [mixed_folder], tmp_path / "a.parquet", workers=0)
    _run(linear_onnx, [mixed_folder], tmp_path / "b.parquet", workers=2, batch_size=64)
    a, b = pq.read_table(tmp_path / "a.parquet"), pq.read_table(tmp_path / "b.parquet")
    assert a.column("path").equals(b.column("path"))
    assert a.column("label").equals(b.column("label"))
    assert a.column("error").equals(b.column("error"))


def test_streamed_in_row_groups(linear_onnx, mixed_folder, tmp_path, monkeypatch):
    monkeypatch.setattr(parquet_module, "ROW_GROUP_ROWS", 100)
    seen = []
    real = ParquetRowWriter._flush

    def spy(self, n=None):
        seen.append(self._rows)  # rows held in memory when a row group is written
        real(self, n)

    monkeypatch.setattr(ParquetRowWriter, "_flush", spy)
    _run(linear_onnx, [mixed_folder], tmp_path / "r.parquet", workers=0, batch_size=32)
    meta = pq.ParquetFile(tmp_path / "r.parquet").metadata
    assert meta.num_rows == 303 and meta.num_row_groups == 4
    # Memory is bounded by one row group plus one chunk, however many files there are.
    assert max(seen) < 100 + 32


def test_readable_by_pandas_and_duckdb(linear_onnx, mixed_folder, tmp_path):
    out = tmp_path / "r.parquet"
    _run(linear_onnx, [mixed_folder], out, workers=0)
    import pandas as pd

    df = pd.read_parquet(out)
    assert len(df) == 303 and list(df.columns) == list(COLUMNS)
    assert (df["error"] != "").sum() == 3
    duckdb = pytest.importorskip("duckdb")
    n, failed = duckdb.sql(f"SELECT count(*), count(*) FILTER (WHERE label IS NULL) "
                           f"FROM read_parquet('{out}')").fetchall()[0]
    assert (n, failed) == (303, 3)


def test_stopped_run_keeps_a_complete_file_and_resume_finishes_it(linear_onnx, mixed_folder,
                                                                 tmp_path):
    out = tmp_path / "r.parquet"
    whole = _run(linear_onnx, [mixed_folder], tmp_path / "whole.parquet", workers=0)
    # A run stopped midway (Ctrl-C): the rows written so far are a complete Parquet file.
    enc = encode_predictions(["x.png"], ["empty file"], None, 3, "parquet")
    with pytest.raises(KeyboardInterrupt), ParquetRowWriter(out) as writer:
        for _ in range(5):
            writer.write(enc.data)
        raise KeyboardInterrupt
    assert pq.read_table(out).num_rows == 5
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    # A real partial run, then --resume: only the missing files are classified.
    out.unlink()
    _run(linear_onnx, [mixed_folder / "3", mixed_folder / "bad"], out, workers=0)
    again = run_infer(InferSpec(linear_onnx, workers=0), [mixed_folder], out, resume=True,
                      warn=lambda msg: None)
    assert (again.resumed, again.written, again.failed) == (33, 270, 3)
    paths = pq.read_table(out).column("path").to_pylist()
    assert len(paths) == len(set(paths)) == whole.written
    assert sorted(paths) == sorted(pq.read_table(tmp_path / "whole.parquet")
                                   .column("path").to_pylist())
    rows = []
    assert scan_parquet(out, rows.append) == 303
    assert sum(bool(r.error) for r in rows) == 3


def test_refusals(linear_onnx, mixed_folder, tmp_path):
    out = tmp_path / "r.parquet"
    out.write_text("not parquet")
    with pytest.raises(OutputExistsError):
        _run(linear_onnx, [mixed_folder / "3"], out, workers=0)
    with pytest.raises(DataError, match="not a readable Parquet file"):
        run_infer(InferSpec(linear_onnx, workers=0), [mixed_folder / "3"], out, resume=True)
    pq.write_table(pa.table({"path": ["a"]}), out)
    with pytest.raises(DataError, match="not a digitkit Parquet result file"):
        run_infer(InferSpec(linear_onnx, workers=0), [mixed_folder / "3"], out, resume=True)
    with pytest.raises(UsageError, match="binary format"):
        _run(linear_onnx, [mixed_folder / "3"], None, fmt="parquet")
    with pytest.raises(UsageError, match="shard directory"):
        _run(linear_onnx, [mixed_folder / "3"], str(tmp_path / "dir") + "/")


def test_cli_parquet(linear_onnx, mixed_folder, tmp_path):
    r = run_cli("infer", linear_onnx, mixed_folder, "-q", "-o", tmp_path / "r.parquet",
                "--workers", "0")
    assert r.exit_code == 3, r.output  # the three bad files
    assert pq.read_table(tmp_path / "r.parquet").num_rows == 303
    r = run_cli("infer", linear_onnx, mixed_folder / "3", "-q", "-o", tmp_path / "r.data",
                "--format", "parquet", "--workers", "0")
    assert r.exit_code == 0, r.output
    assert pq.read_table(tmp_path / "r.data").num_rows == 30
    r = run_cli("infer", linear_onnx, mixed_folder / "3", "--format", "parquet")
    assert r.exit_code == 2 and "binary format" in r.output
    r = run_cli("infer", linear_onnx, mixed_folder / "3", "-o", tmp_path)
    assert r.exit_code == 2 and "end it with '/'" in r.output
    r = run_cli("infer", linear_onnx, mixed_folder / "3", "-o", tmp_path / "x.csv",
                "--shard-size", "10")
    assert r.exit_code == 2 and "--shard-size is for a shard directory" in r.output


def test_a_footer_cut_to_its_first_row_groups(tmp_path):
    """`first_row_groups` rewrites pyarrow's own footer (Thrift compact protocol) to its
    first k row groups; the file cut after them with that footer is the table's first rows,
    for lists short and long (15 and more groups take the long list header)."""
    table = pa.table({"path": [f"p/{i:03d}.png" for i in range(200)],
                      "label": pa.array([i % 10 for i in range(200)], pa.int32()),
                      "ok": [i % 3 == 0 for i in range(200)]})
    whole = tmp_path / "whole.parquet"
    pq.write_table(table, whole, row_group_size=10)
    data = whole.read_bytes()
    length = int.from_bytes(data[-8:-4], "little")
    footer = data[-8 - length:-8]
    meta = pq.read_metadata(whole)
    assert meta.num_row_groups == 20
    # All of them: byte for byte the same footer.
    assert parquet_module.first_row_groups(footer, 20, 200) == footer
    for k in (0, 1, 14, 15, 16, 19):
        end = data.index(b"PAR1") + 4 if k == 0 else max(
            c.data_page_offset + c.total_compressed_size
            for c in (meta.row_group(k - 1).column(j) for j in range(3)))
        cut = parquet_module.first_row_groups(footer, k, 10 * k)
        part = tmp_path / f"first{k}.parquet"
        part.write_bytes(data[:end] + cut + len(cut).to_bytes(4, "little") + b"PAR1")
        assert pq.read_metadata(part).num_row_groups == k
        assert pq.read_table(part).equals(table.slice(0, 10 * k)), k


def test_ctrl_c_waits_while_pyarrow_writes():
    """A Ctrl-C (or SIGTERM) while pyarrow writes through our sink would break the writer
    in the middle of a row group; it is raised once the write returns, by its own handler."""
    import os
    import signal

    with pytest.raises(KeyboardInterrupt):
        with parquet_module._signals_deferred():
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):  # handlers run between bytecodes: give them the chance
                pass
            reached = True
    assert reached
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
