"""digitkit.results: CSV / JSONL rows, crash-safe writing, resume scanning."""

from __future__ import annotations

import csv
import json

import pytest

from digitkit.errors import DataError, OutputExistsError
from digitkit.results import COLUMNS, Row, RowWriter, format_for, scan_existing

ROWS = [
    Row("a/7/1.png", 7, 0.9, (7, 1, 2), (0.9, 0.05, 0.01)),
    Row("odd, \"name\"\nwith newline.png", 3, 0.5, (3, 5, 8), (0.5, 0.3, 0.1)),
    Row("bad.png", error="truncated image"),
    Row("ünïcode/é.png", 0, 1.0, (0, 1, 2), (1.0, 0.0, 0.0)),
]


def _scan(path, fmt):
    rows = []
    end = scan_existing(path, fmt, rows.append)
    return rows, end


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_round_trip(tmp_path, fmt):
    out = tmp_path / f"r.{fmt}"
    with RowWriter(out) as w:
        assert w.fmt == fmt
        w.write(ROWS[:2])
        w.write(ROWS[2:])
    rows, end = _scan(out, fmt)
    assert end == out.stat().st_size
    assert [r.path for r in rows] == [r.path for r in ROWS]
    assert rows[2].error == "truncated image" and rows[2].label is None
    assert rows[0].top_k_labels == (7, 1, 2) and rows[0].top_k_probs == (0.9, 0.05, 0.01)


def test_csv_is_plain_csv_with_the_agreed_columns(tmp_path):
    out = tmp_path / "r.csv"
    with RowWriter(out) as w:
        w.write(ROWS)
    with open(out, newline="", encoding="utf-8") as f:
        recs = list(csv.DictReader(f))
    assert tuple(recs[0]) == COLUMNS
    assert recs[0] == {"path": "a/7/1.png", "label": "7", "confidence": "0.900000",
                       "top_k_labels": "7 1 2", "top_k_probs": "0.900000 0.050000 0.010000",
                       "error": ""}
    assert recs[1]["path"] == ROWS[1].path
    assert recs[2]["label"] == "" and recs[2]["error"] == "truncated image"


def test_jsonl_rows(tmp_path):
    out = tmp_path / "r.jsonl"
    with RowWriter(out) as w:
        w.write(ROWS)
    lines = out.read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(ROWS)
    d = json.loads(lines[2])
    assert d == {"path": "bad.png", "label": None, "confidence": None, "top_k_labels": [],
                 "top_k_probs": [], "error": "truncated image"}


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_partial_last_line_is_cut_and_resume_appends(tmp_path, fmt):
    out = tmp_path / f"r.{fmt}"
    with RowWriter(out) as w:
        w.write(ROWS[:2])
    whole = out.stat().st_size
    with open(out, "ab") as f:
        f.write(b'"bad.png",,,' if fmt == "csv" else b'{"path": "bad.p')  # killed mid-write
    rows, end = _scan(out, fmt)
    assert end == whole and len(rows) == 2
    with RowWriter(out, append_at=end) as w:
        w.write(ROWS[2:])
    rows, end = _scan(out, fmt)
    assert [r.path for r in rows] == [r.path for r in ROWS]
    assert end == out.stat().st_size


def test_partial_header_starts_afresh(tmp_path):
    out = tmp_path / "r.csv"
    out.write_bytes(b"path,lab")
    rows, end = _scan(out, "csv")
    assert (rows, end) == ([], 0)
    with RowWriter(out, append_at=0) as w:
        w.write(ROWS[:1])
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
        RowWriter(out)
    assert out.read_text() == "precious"
    with RowWriter(out, force=True) as w:
        w.write(ROWS[:1])
    assert "precious" not in out.read_text()


def test_format_for():
    assert format_for(None) == "csv"
    assert format_for("x.csv") == format_for("x.txt") == "csv"
    assert format_for("x.JSONL") == format_for("x.ndjson") == "jsonl"
