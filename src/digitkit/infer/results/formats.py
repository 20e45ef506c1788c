"""The one table of result formats: how each one encodes a chunk of rows, writes a result
file, reads one back to resume, and writes and reads a shard of a shard directory.

Everything in `digitkit.infer` that depends on the format asks this table (`result_format`,
the one place a format's name is looked up); nothing else compares format names. Adding a
format is one `ResultFormat` row and its functions.

A format's `encode` turns a `Classified` chunk into its `data` (what its writer takes: text
for CSV and JSON Lines, a pyarrow Table for Parquet); `encode_predictions` does the part
every format shares (escaped paths, top-k, the summary's counts).
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from digitkit.errors import UsageError
from digitkit.infer.results.parquet import STDOUT_REFUSED
from digitkit.infer.results.rows import (
    COLUMNS,
    CSV_HEADER,
    Classified,
    EncodedRows,
    Row,
    classified,
    counts_of,
    encode_csv,
    encode_jsonl,
    parse_csv_record,
    parse_json_line,
)
from digitkit.infer.results.textfile import RowWriter, scan_csv, scan_jsonl


@dataclass(frozen=True)
class ResultFormat:
    """One result format.

    suffixes: output file names ending in one of these choose it (`format_for`); the first
        is its shard files' suffix.
    encode: a `Classified` chunk -> the format's data.
    join: the data of consecutive chunks, in order -> one chunk's data.
    open: (path, append_at=, force=) -> a writer with `write(data)` and `close()`, a
        context manager (`append_at` not None: resume an existing file, see `scan`).
    scan: (path, on_row, names) -> calls `on_row(Row)` for each complete row of an existing
        file; returns the offset `open` appends at. `names`: the class names its labels must
        be (None: a digit model's rows).
    shard_bytes: data -> one shard file's bytes; shard_rows: (those bytes, names) -> (paths,
        labels, errors), what resuming a shard directory needs (ValueError: not a shard of
        ours).
    stdout_refused: why the format cannot go to stdout (None: it can).
    keeps_record: the file keeps its provenance record inside (Parquet's key-value metadata,
        `open(..., metadata=)`); otherwise it goes in a sidecar (`results.provenance`).
    require: raises DependencyError when the format's optional dependency is missing.
    """

    name: str
    suffixes: tuple[str, ...]
    encode: Callable[[Classified], object]
    join: Callable[[list], object]
    open: Callable
    scan: Callable[..., int]
    shard_bytes: Callable[[object], bytes]
    shard_rows: Callable[..., tuple[list, list, list]]
    stdout_refused: str | None = None
    require: Callable[[], None] = lambda: None
    keeps_record: bool = False

    @property
    def suffix(self) -> str:
        return self.suffixes[0]


# -- the text formats -----------------------------------------------------------------------


def _text_bytes(header: str, text: str) -> bytes:
    return (header + text).encode("utf-8")


def _csv_shard_rows(data: bytes, names=None) -> tuple[list, list, list]:
    records = list(csv.reader(io.StringIO(data.decode("utf-8"))))
    if not records or records[0] != list(COLUMNS):
        raise ValueError("not a digitkit CSV shard")
    return _columns([parse_csv_record(r, names) for r in records[1:]])


def _jsonl_shard_rows(data: bytes, names=None) -> tuple[list, list, list]:
    return _columns([parse_json_line(line, names)
                     for line in data.decode("utf-8").splitlines() if line])


def _columns(rows: list[Row]) -> tuple[list, list, list]:
    return [r.path for r in rows], [r.label for r in rows], [r.error for r in rows]


# -- Parquet (pyarrow imported only when a Parquet function runs) -----------------------------


def _encode_parquet(chunk: Classified):
    from digitkit.infer.results.columns import table_of

    return table_of(chunk.paths, chunk.reasons, chunk.order, chunk.top, chunk.names)


def _join_tables(tables: list):
    import pyarrow as pa

    return pa.concat_tables(tables)


def _open_parquet(path, *, append_at=None, force=False, metadata=None):
    from digitkit.infer.results.parquet import ParquetRowWriter

    return ParquetRowWriter(path, append_at=append_at, force=force, metadata=metadata)


def _scan_parquet(path, on_row, names=None) -> int:
    from digitkit.infer.results.parquet import scan_parquet

    return scan_parquet(path, on_row, names)


def _parquet_bytes(table) -> bytes:
    from digitkit.infer.results.columns import table_bytes

    return table_bytes(table)


def _parquet_shard_rows(data: bytes, names=None) -> tuple[list, list, list]:
    from digitkit.infer.results.columns import read_columns

    cols = read_columns(data, ["path", "label", "error"])
    return cols["path"], cols["label"], cols["error"]


def _require_pyarrow() -> None:
    from digitkit.infer.results.columns import require_pyarrow

    require_pyarrow()


RESULT_FORMATS = {f.name: f for f in (
    ResultFormat("csv", (".csv",), encode_csv, "".join, partial(RowWriter, header=CSV_HEADER),
                 scan_csv, partial(_text_bytes, CSV_HEADER), _csv_shard_rows),
    ResultFormat("jsonl", (".jsonl", ".ndjson"), encode_jsonl, "".join, RowWriter, scan_jsonl,
                 partial(_text_bytes, ""), _jsonl_shard_rows),
    ResultFormat("parquet", (".parquet",), _encode_parquet, _join_tables, _open_parquet,
                 _scan_parquet, _parquet_bytes, _parquet_shard_rows,
                 stdout_refused=STDOUT_REFUSED, require=_require_pyarrow, keeps_record=True),
)}
#: Without a file name to go by (stdout, or a name with another suffix): CSV.
DEFAULT_FORMAT = "csv"


def result_format(name: str) -> ResultFormat:
    """The table's row for `name`: the one lookup of a format by its name."""
    if name not in RESULT_FORMATS:
        raise UsageError(f"unknown output format {name!r}")
    return RESULT_FORMATS[name]


def format_for(path: str | os.PathLike | None) -> str:
    """The format an output file's name asks for: CSV unless its suffix is another format's
    (.jsonl, .ndjson, .parquet)."""
    if path is not None:
        suffix = Path(path).suffix.lower()
        for f in RESULT_FORMATS.values():
            if suffix in f.suffixes:
                return f.name
    return DEFAULT_FORMAT


# -- what engines call ----------------------------------------------------------------------


def encode_predictions(paths: list, reasons: list[str], probs: np.ndarray | None, top_k: int,
                       fmt: str, names: tuple[str, ...] | None = None) -> EncodedRows:
    """The rows of `paths` in format `fmt`, with the summary's counts; `probs` holds one
    (K,) row per good path (reason ""), in order; `names`: the class names rows carry (None:
    a digit model's digits, `rows.row_names`). Paths are escaped here (`escape_path`), so
    every format, and the warnings, get the same text."""
    chunk = classified(paths, reasons, probs, top_k, names)
    counts = counts_of(chunk)
    return EncodedRows(counts.count, counts.errors, counts.confusion,
                       result_format(fmt).encode(chunk))


def join_encoded(parts: list[EncodedRows], fmt: str) -> EncodedRows:
    """One chunk's rows from its parts in order (a chunk whose files were retried one by one
    after a worker crash): the same data, counts and confusion as one encoding of them."""
    if len(parts) == 1:
        return parts[0]
    confusions = [p.confusion for p in parts if p.confusion is not None]
    return EncodedRows(sum(p.count for p in parts), [e for p in parts for e in p.errors],
                       sum(confusions[1:], confusions[0].copy()) if confusions else None,
                       result_format(fmt).join([p.data for p in parts]))
