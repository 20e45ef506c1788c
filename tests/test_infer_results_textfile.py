"""digitkit.infer.results.textfile: crash-safe writing of result files, and resume scanning."""

from __future__ import annotations

import pytest

from digitkit.errors import DataError, OutputExistsError
from digitkit.infer.engines.local import TASK_BATCHES
from digitkit.infer.results.formats import format_for, result_format
from digitkit.infer.results.rows import Row, csv_text, jsonl_text
from digitkit.infer.results.textfile import RowWriter, check_new_output

ROWS = [
    Row("a/7/1.png", 7, 0.9, (7, 1, 2), (0.9, 0.05, 0.01)),
    Row("odd, \"name\"\nwith newline.png", 3, 0.5, (3, 5, 8), (0.5, 0.3, 0.1)),
    Row("bad.png", error="truncated image"),
    Row("ünïcode/é.png", 0, 1.0, (0, 1, 2), (1.0, 0.0, 0.0)),
]


def _open(path, **kw) -> RowWriter:
    """The writer the format table opens for `path` (CSV unless .jsonl)."""
    return result_format(format_for(None if path == "-" else path)).open(path, **kw)


def _write(w: RowWriter, rows) -> None:
    w.write(csv_text(rows) if w.header else jsonl_text(rows))  # only CSV has a header


def _scan(path, fmt):
    """(path, label, error) of each row, as resume reads them, and where whole rows end."""
    rows = []
    end = result_format(fmt).scan(path, lambda r: rows.append((r.path, r.label, r.error)))
    return rows, end


def _key(rows):
    return [(r.path, r.label, r.error) for r in rows]


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_round_trip(tmp_path, fmt):
    out = tmp_path / f"r.{fmt}"
    with _open(out) as w:
        assert bool(w.header) == (fmt == "csv")
        _write(w, ROWS[:2])
        _write(w, ROWS[2:])
    rows, end = _scan(out, fmt)
    assert end == out.stat().st_size
    assert rows == _key(ROWS)


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_partial_last_line_is_cut_and_resume_appends(tmp_path, fmt):
    out = tmp_path / f"r.{fmt}"
    with _open(out) as w:
        _write(w, ROWS[:2])
    whole = out.stat().st_size
    with open(out, "ab") as f:
        f.write(b'"bad.png",,,' if fmt == "csv" else b'{"path": "bad.p')  # killed mid-write
    rows, end = _scan(out, fmt)
    assert end == whole and len(rows) == 2
    with _open(out, append_at=end) as w:
        _write(w, ROWS[2:])
    rows, end = _scan(out, fmt)
    assert rows == _key(ROWS)
    assert end == out.stat().st_size


def test_partial_header_starts_afresh(tmp_path):
    out = tmp_path / "r.csv"
    out.write_bytes(b"path,lab")
    rows, end = _scan(out, "csv")
    assert (rows, end) == ([], 0)
    with _open(out, append_at=0) as w:
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
        _open(out)
    assert out.read_text() == "precious"
    with _open(out, force=True) as w:
        _write(w, ROWS[:1])
    assert "precious" not in out.read_text()
    with pytest.raises(DataError, match="output directory does not exist"):
        check_new_output(tmp_path / "nowhere" / "r.csv")


def test_stdout_gets_the_header_and_rows(capsys):
    with _open("-") as w:
        _write(w, ROWS[:1])
    assert capsys.readouterr().out == (
        "path,label,confidence,top_k_labels,top_k_probs,error\n"
        "a/7/1.png,7,0.900000,7 1 2,0.900000 0.050000 0.010000,\n")


# -- issue 11: output failures, resume at scale ---------------------------------------------


def test_a_full_output_leaves_whole_rows_and_resume_finishes_it_identically(
        linear_onnx, png_test_dir, tmp_path):
    """A real file-size limit (RLIMIT_FSIZE, as a full disk would do): one line, exit 1, the
    file cut back to whole rows; --resume without the limit then writes the very bytes an
    uninterrupted run writes."""
    import resource
    import subprocess
    import sys

    from _infer_folders import class_folders

    folder = class_folders(png_test_dir, tmp_path / "in", per_class=15)
    code = "import sys; from digitkit.cli import main; main(sys.argv[1:])"
    limit = 5000  # the header and a few dozen rows: the run fails in its first chunks
    batch = str(max(1, 16 // TASK_BATCHES))  # rows come back 16 at a time, ~1.3 KB

    def run(out, *extra, fsize=None):
        def limit_fsize():
            if fsize:
                resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

        return subprocess.run([sys.executable, "-c", code, "infer", str(linear_onnx),
                               str(folder), "-o", str(out), "--batch-size", batch, "-q",
                               *extra], capture_output=True, text=True, timeout=300,
                              preexec_fn=limit_fsize)

    whole = tmp_path / "whole.csv"
    assert run(whole).returncode == 0
    out = tmp_path / "cut.csv"
    r = run(out, fsize=limit)
    assert r.returncode == 1, r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert f"{out}: cannot write (File too large)" in r.stderr
    assert "--resume" in r.stderr
    data = out.read_bytes()
    assert 0 < len(data) <= limit and data.endswith(b"\n")
    rows, end = _scan(out, "csv")
    assert end == len(data) and len(rows) > 10  # whole rows: nothing to cut off later
    r = run(out, "--resume")
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == whole.read_bytes()


def test_done_set_is_compact_exact_and_keeps_order():
    from digitkit.infer.results.textfile import DoneSet

    done = DoneSet()
    for i in range(0, 20000, 2):
        done.add(f"/data/{i % 10}/{i}.png")
    assert len(done) == 10000 and len(done) * DoneSet.KEY == 160000
    paths = [f"/data/{i % 10}/{i}.png" for i in range(20000)]
    assert list(done.skip_done(iter(paths))) == paths[1::2]
    assert "/data/0/0.png" in done and "/data/1/1.png" not in done
    # Paths are compared by their column text: an undecodable name matches its escape.
    import os

    raw = os.fsdecode(b"/d/caf\xe9.png")
    done.add("/d/caf\\xe9.png")
    assert raw in done
    assert list(DoneSet().skip_done(iter(["a", "b"]))) == ["a", "b"]


@pytest.mark.parametrize("block", [7, 64, 1 << 22])
def test_csv_scan_in_blocks_keeps_quoted_newlines_whole(tmp_path, monkeypatch, block):
    from digitkit.infer.results import textfile as output

    rows = [Row(f'x{i}\n"y",{i}.png' if i % 3 == 0 else f"/d/{i % 10}/{i}.png", i % 10, 0.5,
                (i % 10, 1, 2), (0.5, 0.2, 0.1)) for i in range(300)]
    out = tmp_path / "r.csv"
    with _open(out) as w:
        _write(w, rows)
    monkeypatch.setattr(output, "_BLOCK", block)
    got, end = _scan(out, "csv")
    assert got == _key(rows) and end == out.stat().st_size
    # Cut anywhere: the rows before the cut, and where they end.
    data = out.read_bytes()
    for cut in range(len(data) - 400, len(data), 37):
        out.write_bytes(data[:cut])
        got, end = _scan(out, "csv")
        assert data[:end].count(b"\n") >= len(got) and got == _key(rows)[:len(got)]
        assert len(got) >= 290


def test_damage_is_not_cut_off_silently(tmp_path):
    out = tmp_path / "r.csv"
    with _open(out) as w:
        _write(w, ROWS)
    whole = out.read_bytes()
    out.write_bytes(whole + b"garbage,without,enough,fields\n")  # a complete bad last line
    rows, end = _scan(out, "csv")
    assert rows == _key(ROWS) and end == len(whole)
    out.write_bytes(whole + b'"an unterminated quote' + b"x" * 70000)  # not a cut-off row
    with pytest.raises(DataError, match="after the last whole row"):
        _scan(out, "csv")
    out.write_bytes(whole + b"bad,row\n" + whole[whole.index(b"\n") + 1:])
    with pytest.raises(DataError, match="malformed row"):
        _scan(out, "csv")


def test_stdout_with_a_real_file_descriptor():
    import subprocess
    import sys

    code = ("from digitkit.infer.results.formats import result_format\n"
            "with result_format('csv').open('-') as w:\n    w.write('a.png,1,0.5,1,0.5,\\n')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "path,label,confidence,top_k_labels,top_k_probs,error\na.png,1,0.5,1,0.5,\n"
