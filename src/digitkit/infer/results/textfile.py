"""The text result file (CSV, JSON Lines): created only when there is something to write,
written crash-safely, and read back to resume.

Crash safety: every batch of rows is encoded first and handed to the kernel in one write()
on an unbuffered file, so a killed process leaves whole rows (a partial last line can only
come from a crash inside that write). A write that fails (disk full, file-size limit, the file
system gone read-only) is undone: the file is cut back to the rows before it, and the run
stops with one line saying so. Resume keeps every complete row, cuts off a partial last line,
and appends.

Resume at scale: the rows are read in blocks (CSV: whole records cut at a newline outside
quotes, split a block at a time; JSON Lines: a line at a time) and each done path is kept as
a 16-byte digest in sorted numpy runs (`DoneSet`), not as a string in a set: 16 MB for a
million rows, a fraction of what the strings took, and a faster start (BENCHMARKS.md,
"Resume at scale").
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from pathlib import Path

import numpy as np

from digitkit.errors import DataError, DigitkitError, OutputExistsError
from digitkit.infer.results.rows import CSV_HEADER, Row, escape_path, parse_json_line
from digitkit.inputs import check_regular, open_regular

# -- resume ---------------------------------------------------------------------------------

#: CSV is read this many bytes at a time: large enough that the per-block costs vanish,
#: small enough to be nothing next to the rest of a run's memory.
_BLOCK = 1 << 20
#: No row is longer than this (a 4,096-byte path, every byte escaped, plus its reason): more
#: bytes after the last whole row is damage, not a row cut short, and is not cut off.
_MAX_ROW = 1 << 16


def scan_csv(path: str | os.PathLike, on_row: Callable[[Row], None],
             names: tuple[str, ...] | None = None) -> int:
    """Call `on_row` for every complete row of an existing CSV result file: a Row with the
    path (the column's text), label and error, what resume and the summary need (the
    probabilities are not parsed). `names`: the class names labels must be (None: a digit
    model's rows, labels the digits).

    Returns the byte offset where the complete rows end: a partial last row (a crash
    mid-write) lies beyond it and is to be cut off. A malformed row anywhere else means
    the file is not ours to append to: DataError.
    """
    p = Path(path)
    with open_regular(p) as f:  # a FIFO or /dev/zero would block or never end
        header = f.readline()
        if not header.endswith(b"\n"):
            return 0  # nothing (or a partial header): start afresh
        if header.decode("utf-8", "replace") != CSV_HEADER:
            raise DataError(p, "cannot resume: not a digitkit CSV result file "
                               f"(header {header[:80]!r})")
        return _scan_csv(p, f, len(header), on_row, names)


def scan_jsonl(path: str | os.PathLike, on_row: Callable[[Row], None],
               names: tuple[str, ...] | None = None) -> int:
    """`scan_csv` for a JSON Lines result file."""
    p = Path(path)
    with open_regular(p) as f:  # a FIFO or /dev/zero would block or never end
        return _scan_jsonl(p, f, on_row, names)


def _scan_jsonl(p: Path, f, on_row, names=None) -> int:
    good_end = 0
    for line in f:
        if not line.endswith(b"\n"):
            break  # partial last line
        try:
            row = parse_json_line(line.decode("utf-8"), names)
        except (ValueError, UnicodeDecodeError) as err:
            if f.read(1):  # not the last line: the file is damaged, don't guess
                raise DataError(p, f"cannot resume: malformed row at byte {good_end} "
                                   f"({err})") from err
            break
        good_end += len(line)
        on_row(row)
    return good_end


def _scan_csv(p: Path, f, start: int, on_row, names=None) -> int:
    known = None if names is None else frozenset(names)
    good_end, carry, bad = start, b"", None
    while block := f.read(_BLOCK):
        buf = carry + block
        cut = _records_end(buf)
        carry = buf[cut:]
        if not cut:
            continue
        if bad is not None:  # a malformed record with more rows after it
            raise DataError(p, f"cannot resume: malformed row at byte {bad[0]} ({bad[1]})")
        try:
            text = buf[:cut].decode("utf-8")
        except UnicodeDecodeError as err:
            raise DataError(p, f"cannot resume: not UTF-8 text near byte {good_end + err.start}") \
                from err
        # Without a quote character, every record is one line of six plain fields: split
        # it, far cheaper than the csv module; quoted fields (odd names) take the csv module.
        records = (csv.reader(io.StringIO(text, newline="")) if '"' in text
                   else (line.split(",") for line in text[:-1].split("\n")))
        for rec in records:
            if bad is not None:
                raise DataError(p, f"cannot resume: malformed row at byte {bad[0]} ({bad[1]})")
            if len(rec) == 6 and known is None and (
                    not rec[1] or (len(rec[1]) == 1 and "0" <= rec[1] <= "9")):
                on_row(Row(rec[0], int(rec[1]) if rec[1] else None, error=rec[5]))
            elif len(rec) == 6 and known is not None and (not rec[1] or rec[1] in known):
                on_row(Row(rec[0], rec[1] or None, error=rec[5]))  # a class name
            else:
                # Only the very last record may be cut off: find where it starts.
                last = _records_end(buf[:cut - 1])
                bad = (good_end + last, f"{len(rec)} fields, expected 6"
                       if len(rec) != 6 else f"label {rec[1]!r}")
        good_end += cut
    if bad is not None:
        good_end = bad[0]
    if len(carry) > _MAX_ROW:
        raise DataError(p, f"cannot resume: {len(carry):,} bytes after the last whole row at "
                           f"byte {good_end} (damaged, not a row cut short)")
    return good_end


def _records_end(buf: bytes) -> int:
    """Length of the longest prefix of `buf` that is whole CSV records (it starts on a record
    boundary): up to the last newline outside quotes. 0 when there is none."""
    i = buf.rfind(b"\n")
    if i < 0:
        return 0
    quotes = buf.count(b'"', 0, i)
    while quotes % 2:  # that newline is inside a quoted field: step back, counting as we go
        j = buf.rfind(b"\n", 0, i)
        if j < 0:
            return 0
        quotes -= buf.count(b'"', j, i)
        i = j
    return i + 1


class DoneSet:
    """The paths already in the output file (resume), as 16-byte BLAKE2 digests of their
    column text: exact in practice (two paths share a digest with probability ~1e-26 for a
    million rows), and 16 bytes a row however long the paths are.

    Digests are kept in sorted runs of RUN keys (1 MiB each), not in one growing buffer, so
    memory never holds a second copy while it grows: 1,000,000 rows take 16 MB."""

    KEY = 16
    RUN = 1 << 16
    #: Discovered paths are checked this many at a time (one numpy search per run).
    BATCH = 4096

    def __init__(self):
        self._runs: list[np.ndarray] = []
        self._buf = bytearray()

    def add(self, text: str) -> None:
        """Add a path column's text (as read from the file)."""
        self._buf += hashlib.blake2b(text.encode("utf-8"), digest_size=self.KEY).digest()
        if len(self._buf) >= self.RUN * self.KEY:
            self._seal()

    def _seal(self) -> None:
        if self._buf:
            run = np.frombuffer(self._buf, dtype=f"S{self.KEY}")  # no copy: sorted in place
            run.sort()
            self._runs.append(run)
            self._buf = bytearray()

    def __len__(self) -> int:
        return sum(len(r) for r in self._runs) + len(self._buf) // self.KEY

    def __contains__(self, path: str) -> bool:
        return bool(self._found([path])[0])

    def skip_done(self, paths: Iterable[str]) -> Iterator[str]:
        """`paths` (as discovery gives them) less those already in the file, in order."""
        self._seal()
        if not self._runs:
            yield from paths
            return
        it = iter(paths)
        while batch := list(islice(it, self.BATCH)):
            for p, done in zip(batch, self._found(batch), strict=True):
                if not done:
                    yield p

    def _found(self, paths: list[str]) -> list[bool]:
        self._seal()
        digest = hashlib.blake2b
        probe = np.frombuffer(b"".join(
            digest(escape_path(str(p)).encode("utf-8"), digest_size=self.KEY).digest()
            for p in paths), dtype=f"S{self.KEY}")
        found = np.zeros(len(paths), bool)
        for run in self._runs:
            at = np.minimum(np.searchsorted(run, probe), len(run) - 1)
            found |= run[at] == probe
        return found.tolist()


# -- writing --------------------------------------------------------------------------------


def check_new_output(path: str | os.PathLike, force: bool = False) -> None:
    """Raise what `RowWriter(path, force=force)` would raise for a new file, without creating
    it: callers check before long work and open the file once there is something to write."""
    path = Path(path)
    if (path.exists() or path.is_symlink()) and not force:
        raise OutputExistsError(path, "pass --resume to finish it, or --force to overwrite it")
    if path.parent and not path.parent.is_dir():
        raise DataError(path.parent, "output directory does not exist")
    if force and path.exists():
        check_regular(path)  # overwriting a FIFO would wait for a reader forever


class RowWriter:
    """Streams encoded rows to a file (or stdout), one write() per batch."""

    def __init__(self, path: str | os.PathLike | None, header: str = "", *,
                 append_at: int | None = None, force: bool = False):
        """Open `path` for writing: a new file (refusing an existing one unless `force`),
        or, with `append_at`, an existing one cut to that offset (see `scan_csv`). `header`
        starts every new file (CSV's column names; "" for JSON Lines). `path` None or "-"
        writes to stdout."""
        self.header = header
        self.path = None if path in (None, "-") else Path(path)
        self._fd = None
        self._close_fd = False
        self._end = 0  # where the whole rows end: a failed write is cut back to it
        if self.path is None:
            sys.stdout.flush()
            self._fd = sys.stdout.fileno() if _has_fileno(sys.stdout) else None
            self.write(header)
            return
        if append_at is not None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)  # never wait on a FIFO
            self._close_fd = True
            os.ftruncate(self._fd, append_at)
            self._end = os.lseek(self._fd, 0, os.SEEK_END)
            if append_at == 0:
                self.write(header)
            return
        check_new_output(self.path, force)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NONBLOCK,
                           0o666)
        self._close_fd = True
        self.write(header)

    def write(self, text: str) -> None:
        """Write rows already encoded in this writer's format (`EncodedRows.data`, or
        `csv_text` / `jsonl_text`), in one write()."""
        if text:
            self._write_str(text)

    def _write_str(self, text: str) -> None:
        if self._fd is None:  # a stdout without a file descriptor (CliRunner)
            sys.stdout.write(text)
            sys.stdout.flush()
            return
        data = memoryview(text.encode("utf-8"))
        try:
            while data:
                n = os.write(self._fd, data)
                data = data[n:]
        except OSError as err:
            raise self._failed(err) from err
        self._end += len(data.obj)

    def _failed(self, e: OSError) -> DigitkitError:
        """Undo a write that failed part-way, so the file holds only whole rows, and say so.
        Python ignores SIGXFSZ, so a file-size limit arrives here as EFBIG, like ENOSPC."""
        if self.path is None:
            return DigitkitError(f"cannot write the results to stdout ({e.strerror or e})")
        try:
            os.ftruncate(self._fd, self._end)  # shrinking works on a full disk too
        except OSError:
            pass  # then resume cuts the partial last row off instead
        return DigitkitError(f"{self.path}: cannot write ({e.strerror or e}); it holds "
                             f"the rows written so far: rerun with --resume to finish it")

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
