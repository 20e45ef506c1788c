"""Parquet result files: written in row groups at bounded memory, in the one schema of
`digitkit.infer.results.columns` (both engines; a shard directory's Parquet shards use it too).

A result file is written under a hidden temporary name and renamed into place when it is
closed: a reader never sees a file without its footer. Closing also happens when the run
stops early (Ctrl-C, a worker crash): the rows so far become a complete file, and `--resume`
keeps them (copying them into the new file, row group by row group) and does the rest. A
process killed outright (SIGKILL) leaves only its hidden temporary file, which the next run
on that output removes: start again.

A write the system refuses (a full disk, a file-size limit) keeps what CSV keeps: the whole
rows written so far. Row groups reach the file as the run goes; from the refused write on,
nothing more reaches the disk, and the file is finished with a footer naming only the row
groups that are whole on it (`first_row_groups`: pyarrow's own footer, cut to them), then
renamed into place. `--resume` then goes on from there, and the result is the uninterrupted
run's.

pyarrow is imported inside functions only: a CSV run never pays its import.
"""
from __future__ import annotations

import os
import re
import secrets
import signal
import threading
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

from digitkit.errors import DataError, DigitkitError, UsageError, one_line
from digitkit.infer.results.columns import is_result_schema, schema
from digitkit.infer.results.rows import Row

#: Rows per row group of a result file: ~65,000 rows of ~100 bytes is ~6 MB held in memory
#: before each write, large enough for columnar encoding and for readers that skip or split
#: work per row group (DuckDB, Spark), small enough that memory stays flat however many
#: files a run has.
ROW_GROUP_ROWS = 65_536
STDOUT_REFUSED = ("Parquet is a binary format: write it to a file (-o results.parquet) or a "
                  "directory (-o results/), not to stdout")


def _open_existing(path: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from digitkit.inputs import check_regular

    check_regular(path)  # a FIFO or /dev/zero would block or never end
    try:
        f = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as err:
        raise DataError(path, f"cannot resume: not a readable Parquet file ({one_line(err)})") \
            from err
    if not is_result_schema(f.schema_arrow):
        raise DataError(path, "cannot resume: not a digitkit Parquet result file (columns "
                              f"{', '.join(f.schema_arrow.names)})")
    return f


def scan_parquet(path: str | os.PathLike, on_row: Callable[[Row], None],
                 names: tuple[str, ...] | None = None) -> int:
    """Call `on_row` for every row of an existing result file (resume); returns the count.
    The signature is `textfile.scan_csv`'s, so `run_infer` treats every format alike (the
    file's schema types its labels: `names` is not needed to read them)."""
    f = _open_existing(Path(path))
    n = 0
    for b in f.iter_batches(columns=["path", "label", "error"]):
        for p, label, err in zip(*(c.to_pylist() for c in b.columns), strict=True):
            on_row(Row(p, label, error=err or ""))
            n += 1
    return n


class ParquetRowWriter:
    """Streams result tables to a Parquet file in row groups of `ROW_GROUP_ROWS`.

    Like `textfile.RowWriter`: `append_at` not None keeps the rows of the existing file
    (resume); otherwise an existing file is refused unless `force`.
    """

    def __init__(self, path: str | os.PathLike | None, *, append_at: int | None = None,
                 force: bool = False, metadata: dict[bytes, bytes] | None = None):
        """`metadata`: the file's key-value metadata (`digitkit.infer.results.provenance`)."""
        from digitkit.infer.results.textfile import check_new_output

        if path in (None, "-"):
            raise UsageError(STDOUT_REFUSED)
        self.path = Path(path)
        existing = _open_existing(self.path) if append_at is not None else None
        if existing is None:
            check_new_output(self.path, force)
        # A killed run's temporary file: the caller holds the output's lock (run_infer does),
        # so no other run is writing it.
        remove_stale_temporaries(self.path)
        # The mode a new file gets under the umask (0644 under 022), as CSV's: mkstemp's
        # would be 0600 whatever the umask.
        self._tmp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}.tmp")
        self._fd = os.open(self._tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                           0o666)
        self._sink = _Sink(self._fd)
        self._pending: list = []
        self._rows = 0
        #: Rows the output held before this run: a refused write replaces it only with more.
        self._before = existing.metadata.num_rows if existing is not None else 0
        self._writer = None
        self._metadata = metadata or {}
        self._open = True
        # The schema is the rows' (digits or class names): the existing file's on resume,
        # else the first table's (`write`); a file closed without rows gets the digits'.
        try:
            if existing is not None:
                self._start(existing.schema_arrow)
                for batch in existing.iter_batches(batch_size=ROW_GROUP_ROWS):
                    with _signals_deferred():
                        self._writer.write_batch(batch)
                    self._check()
        except BaseException:
            self._abandon()
            raise

    def _start(self, arrow_schema) -> None:
        import pyarrow.parquet as pq

        try:
            with _signals_deferred():
                self._writer = pq.ParquetWriter(
                    self._sink, arrow_schema.remove_metadata().with_metadata(self._metadata))
        except BaseException:
            self._abandon()
            raise

    def write(self, table) -> None:
        if table is None or not table.num_rows:
            return
        if self._writer is None:
            if not self._open:
                raise DigitkitError(f"{self.path}: the result file is closed")
            self._start(table.schema)
        self._pending.append(table)
        self._rows += table.num_rows
        while self._rows >= ROW_GROUP_ROWS:  # full row groups out; the rest waits
            self._flush(ROW_GROUP_ROWS)

    def _flush(self, n: int | None = None) -> None:
        """Write the first `n` buffered rows (all: None) as one row group."""
        import pyarrow as pa

        if not self._rows:
            return
        buffered = pa.concat_tables(self._pending)
        n = self._rows if n is None else n
        try:
            with _signals_deferred():
                self._writer.write_table(buffered.slice(0, n), row_group_size=n)
        except BaseException:
            self._abandon()
            raise
        rest = buffered.slice(n)
        self._pending, self._rows = ([rest] if rest.num_rows else []), rest.num_rows
        self._check()

    def _check(self) -> None:
        """After a write the system refused: keep the whole row groups, and stop."""
        if self._sink.failed_at is not None:
            self._finish()

    def close(self) -> None:
        """Write what is buffered, finish the file and move it into place."""
        if not self._open:
            return
        if self._writer is None:
            self._start(schema())
        self._flush()
        self._finish()

    def _finish(self) -> None:
        """Finish the file and move it into place; after a refused write, only its whole row
        groups (or, when they are no more than the output held, nothing: it stays as it
        was), and say so in one line naming the file."""
        sink = self._sink
        self._open = False
        try:
            with _signals_deferred():
                self._writer.close()  # after a refusal, its last pages and footer: in memory
            self._writer = None
            if sink.failed_at is None:
                os.fsync(self._fd)
                os.close(self._fd)
                self._fd = None
                os.replace(self._tmp, self.path)
                return
            try:
                kept = sink.keep_whole_groups(self._before)
            except OSError:
                raise
            except Exception:  # a footer it cannot read or cut: keep nothing, as before
                kept = 0
            if kept:
                os.close(self._fd)
                self._fd = None
                os.replace(self._tmp, self.path)
        except OSError as err:  # fsync, rename: the same one line, nothing half-done kept
            self._abandon()
            raise DigitkitError(f"{self.path}: cannot write ({_os_reason(err)})") from err
        except BaseException:
            self._abandon()
            raise
        self._abandon()
        if kept:
            held = f"it holds the {kept:,} rows written so far"
        elif self.path.exists():
            held = "it holds the rows it held before this run"
        else:
            held = "no rows were kept"
        raise DigitkitError(f"{self.path}: cannot write ({_os_reason(sink.error)}); {held}: "
                            "make room and rerun with --resume to finish it") from sink.error

    def _abandon(self) -> None:
        """Drop the temporary file (the output stays as it is)."""
        self._open = False
        writer, self._writer = self._writer, None
        if writer is not None:
            if self._sink.failed_at is None:  # nothing more to the disk
                self._sink.failed_at = self._sink.pos
            try:
                writer.close()
            except Exception:
                pass
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._tmp.unlink(missing_ok=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@contextmanager
def _signals_deferred():
    """Ctrl-C and SIGTERM (which `run_infer` turns into KeyboardInterrupt) wait while pyarrow
    writes: raised inside `_Sink.write` (Python code called from pyarrow's C++), the exception
    would leave the writer half-way through a row group, with no footer to be had. They are
    raised when it returns, by their own handlers, as usual."""
    if threading.current_thread() is not threading.main_thread():
        yield  # handlers run in the main thread only: nothing to defer here
        return
    caught: list[int] = []
    saved = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        handler = signal.getsignal(sig)
        if callable(handler):
            saved[sig] = handler
            signal.signal(sig, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
        if caught:
            saved[caught[0]](caught[0], None)


class _Sink:
    """What pyarrow writes a result file through: our own file descriptor, so that a write
    the system refuses (EFBIG under a file-size limit: Python ignores SIGXFSZ; ENOSPC) does
    not break the Parquet writer in the middle of a row group. From the first refusal on,
    nothing more goes to the disk: the rest (the current row group's last pages, then the
    footer) is held in memory, one row group at most, and `failed_at` is where the bytes on
    the disk end. pyarrow counts its own offsets from the bytes it hands over (`pos`)."""

    def __init__(self, fd: int):
        self.fd = fd
        self.pos = 0
        self.failed_at: int | None = None
        self.error: OSError | None = None
        self.held = bytearray()
        self.closed = False

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        size = len(view)
        if self.failed_at is None:
            try:
                while view:
                    n = os.write(self.fd, view)
                    view = view[n:]
                    self.pos += n
            except OSError as err:
                self.failed_at, self.error = self.pos, err
        if view.nbytes and self.failed_at is not None:
            self.held += view
            self.pos += view.nbytes
        return size

    def tell(self) -> int:
        return self.pos

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True  # the writer's end; the file descriptor is the ParquetRowWriter's

    def _bytes(self, start: int, end: int) -> bytes:
        """Bytes `start`..`end` of what pyarrow wrote: from the disk, then from memory."""
        on_disk = os.pread(self.fd, max(0, min(end, self.failed_at) - start), start) \
            if start < self.failed_at else b""
        return on_disk + bytes(self.held[max(0, start - self.failed_at):
                                         max(0, end - self.failed_at)])

    def keep_whole_groups(self, more_than: int) -> int:
        """After a refusal: cut the file to its whole row groups and give it their footer.
        Returns the rows kept, 0 when that is not more than `more_than` rows (the output's
        before this run) or no footer fits: then the file is not worth keeping."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        trailer = self._bytes(self.pos - 8, self.pos)
        length = int.from_bytes(trailer[:4], "little")
        footer = self._bytes(self.pos - 8 - length, self.pos - 8)
        meta = pq.read_metadata(pa.BufferReader(MAGIC + footer + trailer))
        ends, rows = [], []
        for i in range(meta.num_row_groups):
            group = meta.row_group(i)
            ends.append(max(_chunk_start(group.column(j)) + group.column(j).total_compressed_size
                            for j in range(group.num_columns)))
            rows.append(group.num_rows)
        whole = 0
        while whole < len(ends) and ends[whole] <= self.failed_at:
            whole += 1
        for k in range(whole, 0, -1):  # the footer of fewer groups is smaller: it may fit
            if sum(rows[:k]) <= more_than:
                break
            cut = first_row_groups(footer, k, sum(rows[:k]))
            try:
                os.ftruncate(self.fd, ends[k - 1])  # shrinking works on a full disk too
                _pwrite_all(self.fd, cut + len(cut).to_bytes(4, "little") + MAGIC, ends[k - 1])
                os.fsync(self.fd)
            except OSError:
                continue
            with open(self.fd, "rb", closefd=False) as check:  # pyarrow reads it back whole
                if pq.read_metadata(check).num_rows != sum(rows[:k]):
                    return 0
            return sum(rows[:k])
        return 0


MAGIC = b"PAR1"


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    """All of `data` at `offset`: a write cut short at a size limit is retried, and the
    retry then fails (EFBIG, ENOSPC)."""
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def _chunk_start(column) -> int:
    if column.has_dictionary_page and column.dictionary_page_offset:
        return min(column.dictionary_page_offset, column.data_page_offset)
    return column.data_page_offset


# -- a footer cut to its first row groups ---------------------------------------------------
# A Parquet footer is a Thrift FileMetaData in the compact protocol. pyarrow writes it only
# when a writer closes, for every row group written; after a refused write the file needs
# the footer of its whole row groups only. Field 3 is num_rows, field 4 the list of row
# groups (offsets absolute, so the first k stay valid as they are); every other field is
# copied byte for byte.


def first_row_groups(footer: bytes, k: int, rows: int) -> bytes:
    """The FileMetaData `footer` (without its length and magic) with only its first `k`
    row groups, holding `rows` rows."""
    out, i, field = bytearray(), 0, 0
    while True:
        head = i
        byte = footer[i]
        i += 1
        if byte == 0:  # the struct's end
            out.append(0)
            return bytes(out)
        kind, delta = byte & 0x0F, byte >> 4
        if delta:
            field += delta
        else:
            z, i = _varint(footer, i)
            field = (z >> 1) ^ -(z & 1)
        out += footer[head:i]
        if field == 3 and kind == 6:  # num_rows: i64
            out += _uvarint((rows << 1) ^ (rows >> 63))
            i = _varint(footer, i)[1]
        elif field == 4 and kind == 9:  # row_groups: list<RowGroup>
            size, elem, i = _list_head(footer, i)
            j = i
            for _ in range(k):
                j = _skip(footer, j, elem)
            out += (bytes([(k << 4) | elem]) if k < 15
                    else bytes([0xF0 | elem]) + _uvarint(k)) + footer[i:j]
            for _ in range(size - k):
                j = _skip(footer, j, elem)
            i = j
        else:
            j = _skip(footer, i, kind)
            out += footer[i:j]
            i = j


def _varint(b: bytes, i: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        c = b[i]
        i += 1
        n |= (c & 0x7F) << shift
        if c < 0x80:
            return n, i
        shift += 7


def _uvarint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _list_head(b: bytes, i: int) -> tuple[int, int, int]:
    size, elem = b[i] >> 4, b[i] & 0x0F
    i += 1
    if size == 15:
        size, i = _varint(b, i)
    return size, elem, i


def _skip(b: bytes, i: int, kind: int, in_container: bool = False) -> int:
    """Index just past a compact-protocol value of type `kind` starting at `i`."""
    if kind in (1, 2):  # a bool: in a struct field its value is the type itself
        return i + 1 if in_container else i
    if kind == 3:
        return i + 1
    if kind in (4, 5, 6):
        return _varint(b, i)[1]
    if kind == 7:
        return i + 8
    if kind == 8:
        n, i = _varint(b, i)
        return i + n
    if kind in (9, 10):
        size, elem, i = _list_head(b, i)
        for _ in range(size):
            i = _skip(b, i, elem, True)
        return i
    if kind == 11:
        size, i = _varint(b, i)
        if size:
            types = b[i]
            i += 1
            for _ in range(size):
                i = _skip(b, i, types >> 4, True)
                i = _skip(b, i, types & 0x0F, True)
        return i
    if kind == 12:
        while True:
            byte = b[i]
            i += 1
            if byte == 0:
                return i
            if not byte >> 4:
                i = _varint(b, i)[1]
            i = _skip(b, i, byte & 0x0F)
    raise ValueError(f"not a Thrift compact value (type {kind})")


def _os_reason(err: OSError) -> str:
    """The system's words for a failed write; pyarrow's errors carry the errno in text."""
    code = err.errno
    if code is None and (m := re.search(r"\[errno (\d+)\]", str(err))):
        code = int(m.group(1))
    return os.strerror(code) if code else one_line(err)


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Delete the temporary files a killed run on `path` left beside it (SIGKILL: a file
    without its footer, which no reader can read). Only under the output's lock
    (`digitkit.infer.storage.lock`): no other run is writing them."""
    p = Path(path)
    pattern = re.compile(rf"^\.{re.escape(p.name)}\.[a-z0-9_]{{8}}\.tmp$")
    removed = []
    try:
        names = os.listdir(p.parent)
    except OSError:
        return removed
    for name in names:
        if pattern.match(name):
            stale = p.parent / name
            try:
                if stale.is_file() and not stale.is_symlink():
                    stale.unlink()
                    removed.append(stale)
            except OSError:
                pass
    return removed
