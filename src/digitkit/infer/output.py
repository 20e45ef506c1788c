"""The result file: created only when there is something to write, written crash-safely,
and read back to resume.

Crash safety: every batch of rows is encoded first and handed to the kernel in one write()
on an unbuffered file, so a killed process leaves whole rows (a partial last line can only
come from a crash inside that write, or a full disk). Resume keeps every complete row, cuts
off a partial last line, and appends.
"""

from __future__ import annotations

import csv
import io
import os
import sys
from collections.abc import Callable
from pathlib import Path

from digitkit.errors import DataError, OutputExistsError, UsageError
from digitkit.infer.rows import CSV_HEADER, Row, format_for, parse_csv_record, parse_json_line
from digitkit.infer.spec import FORMATS

# -- resume ---------------------------------------------------------------------------------


def scan_existing(path: str | os.PathLike, fmt: str, on_row: Callable[[Row], None]) -> int:
    """Call `on_row` for every complete row of an existing result file.

    Returns the byte offset where the complete rows end: a partial last line (a crash
    mid-write) lies beyond it and is to be cut off. A malformed row anywhere else means
    the file is not ours to append to: DataError.
    """
    p = Path(path)
    good_end = 0
    with open(p, "rb") as f:
        if fmt == "csv":
            header = f.readline()
            if not header.endswith(b"\n"):
                return 0  # nothing (or a partial header): start afresh
            if header.decode("utf-8", "replace") != CSV_HEADER:
                raise DataError(p, "cannot resume: not a digitkit CSV result file "
                                   f"(header {header[:80]!r})")
            good_end = f.tell()
        pending = b""  # a CSV record may span lines when a path holds a newline
        for line in f:
            complete = line.endswith(b"\n")
            chunk = pending + line
            if fmt == "csv" and complete and chunk.count(b'"') % 2:
                pending = chunk  # inside a quoted field: the record goes on
                continue
            pending = b""
            if not complete:
                break  # partial last line
            text = chunk.decode("utf-8")
            try:
                if fmt == "csv":
                    row = parse_csv_record(next(csv.reader(io.StringIO(text))))
                else:
                    row = parse_json_line(text)
            except (ValueError, StopIteration, csv.Error) as e:
                if f.read(1):  # not the last line: the file is damaged, don't guess
                    raise DataError(p, f"cannot resume: malformed row at byte {good_end} "
                                       f"({e})") from None
                break
            good_end += len(chunk)
            on_row(row)
    return good_end


# -- writing --------------------------------------------------------------------------------


def check_new_output(path: str | os.PathLike, force: bool = False) -> None:
    """Raise what `RowWriter(path, force=force)` would raise for a new file, without creating
    it: callers check before long work and open the file once there is something to write."""
    path = Path(path)
    if (path.exists() or path.is_symlink()) and not force:
        raise OutputExistsError(path, "pass --resume to finish it, or --force to overwrite it")
    if path.parent and not path.parent.is_dir():
        raise DataError(path.parent, "output directory does not exist")


class RowWriter:
    """Streams encoded rows to a file (or stdout), one write() per batch."""

    def __init__(self, path: str | os.PathLike | None, fmt: str | None = None, *,
                 append_at: int | None = None, force: bool = False):
        """Open `path` for writing: a new file (refusing an existing one unless `force`),
        or, with `append_at`, an existing one cut to that offset (see `scan_existing`).
        `path` None or "-" writes to stdout."""
        self.fmt = fmt or format_for(None if path in (None, "-") else path)
        if self.fmt not in FORMATS:
            raise UsageError(f"unknown output format {self.fmt!r}")
        self.path = None if path in (None, "-") else Path(path)
        self._fd = None
        self._close_fd = False
        if self.path is None:
            sys.stdout.flush()
            self._fd = sys.stdout.fileno() if _has_fileno(sys.stdout) else None
            if self.fmt == "csv":
                self._write_str(CSV_HEADER)
            return
        if append_at is not None:
            self._fd = os.open(self.path, os.O_WRONLY)
            self._close_fd = True
            os.ftruncate(self._fd, append_at)
            os.lseek(self._fd, 0, os.SEEK_END)
            if append_at == 0 and self.fmt == "csv":
                self._write_str(CSV_HEADER)
            return
        check_new_output(self.path, force)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        self._close_fd = True
        if self.fmt == "csv":
            self._write_str(CSV_HEADER)

    def write_text(self, text: str) -> None:
        """Write rows already encoded in this writer's format (`EncodedRows.text`, or
        `encode_rows`), in one write()."""
        if text:
            self._write_str(text)

    def _write_str(self, text: str) -> None:
        if self._fd is None:  # a stdout without a file descriptor (CliRunner)
            sys.stdout.write(text)
            sys.stdout.flush()
            return
        data = memoryview(text.encode("utf-8"))
        while data:
            n = os.write(self._fd, data)
            data = data[n:]

    def close(self) -> None:
        if self._close_fd and self._fd is not None:
            try:
                os.fsync(self._fd)
            except OSError:
                pass  # pipes and some file systems don't fsync; the rows are written anyway
            os.close(self._fd)
        self._fd = None
        self._close_fd = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _has_fileno(stream) -> bool:
    try:
        stream.fileno()
        return True
    except (AttributeError, OSError, io.UnsupportedOperation):
        return False
