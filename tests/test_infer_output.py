"""digitkit.infer.output: crash-safe writing of result files, and resume scanning."""

from __future__ import annotations

import pytest

from digitkit.errors import DataError, OutputExistsError
from digitkit.infer.output import RowWriter, check_new_output, scan_existing
from digitkit.infer.rows import Row, encode_rows

ROWS = [
    Row("a/7/1.png", 7, 0.9, (7, 1, 2), (0.9, 0.05, 0.01)),
    Row("odd, \"name\"\nwith newline.png", 3, 0.5, (3, 5, 8), (0.5, 0.3, 0.1)),
    Row("bad.png", error="truncated image"),
    Row("ünïcode/é.png", 0, 1.0, (0, 1, 2), (1.0, 0.0, 0.0)),
]


def _write(w: RowWriter, rows) -> None:
    w.write_text(encode_rows(rows, w.fmt))


def _scan(path, fmt):
    rows = []
    end = scan_existing(path, fmt, rows.append)
    return rows, end


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_round_trip(tmp_path, fmt):
    out = tmp_path / f"r.{fmt}"
    with RowWriter(out) as w:
        assert w.fmt == fmt
        _write(w, ROWS[:2])
        _write(w, ROWS[2:])
    rows, end = _scan(out, fmt)
    assert end == out.stat().st_size
    assert rows == ROWS


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_partial_last_line_is_cut_and_resume_appends(tmp_path, fmt):
    out = tmp_path / f"r.{fmt}"
    with RowWriter(out) as w:
        _write(w, ROWS[:2])
    whole = out.stat().st_size
    with open(out, "ab") as f:
        f.write(b'"bad.png",,,' if fmt == "csv" else b'{"path": "bad.p')  # killed mid-write
    rows, end = _scan(out, fmt)
    assert end == whole and len(rows) == 2
    with RowWriter(out, append_at=end) as w:
        _write(w, ROWS[2:])
    rows, end = _scan(out, fmt)
    assert rows == ROWS
    assert end == out.stat().st_size


def test_partial_header_starts_afresh(tmp_path):
    out = tmp_path / "r.csv"
    out.write_bytes(b"path,lab")
    rows, end = _scan(out, "csv")
    assert (rows, end) == ([], 0)
    with RowWriter(out, append_at=0) as w:
        _write(w, ROWS[:1])
    assert out.read_text().startswith("path,label,confidence,top_k_labels,top_k_probs,error\n")


def test_foreign_or_damaged_files_are_not_resumed(tmp_path):
    foreign = tmp_path / "f.csv"
    foreign.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(DataError, match="not a digitkit CSV"):
        _scan(foreign, "csv")
    damaged = tmp_path / "d.jsonl"
    damaged.write_text('{"path": "a"}\nnot json\n{"path": "b"}\n')
    with pytest.raises(DataError, match="malformed row"):
        _scan(damaged, "jsonl")


def test_existing_output_is_not_overwritten(tmp_path):
    out = tmp_path / "r.csv"
    out.write_text("precious")
    with pytest.raises(OutputExistsError, match="--resume"):
        check_new_output(out)
    with pytest.raises(OutputExistsError, match="--resume"):
        RowWriter(out)
    assert out.read_text() == "precious"
    with RowWriter(out, force=True) as w:
        _write(w, ROWS[:1])
    assert "precious" not in out.read_text()
    with pytest.raises(DataError, match="output directory does not exist"):
        check_new_output(tmp_path / "nowhere" / "r.csv")


def test_stdout_gets_the_header_and_rows(capsys):
    with RowWriter("-") as w:
        _write(w, ROWS[:1])
    assert capsys.readouterr().out == (
        "path,label,confidence,top_k_labels,top_k_probs,error\n"
        "a/7/1.png,7,0.900000,7 1 2,0.900000 0.050000 0.010000,\n")
