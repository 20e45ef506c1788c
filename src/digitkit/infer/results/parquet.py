"""Parquet result files: written in row groups at bounded memory, in the one schema of
`digitkit.infer.results.columns` (both engines; a shard directory's Parquet shards use it too).

A result file is written under a hidden temporary name and renamed into place when it is
closed: a reader never sees a file without its footer. Closing also happens when the run
stops early (Ctrl-C, a worker crash): the rows so far become a complete file, and `--resume`
keeps them (copying them into the new file, row group by row group) and does the rest. A
process killed outright (SIGKILL) leaves only its hidden temporary file: start again.

pyarrow is imported inside functions only: a CSV run never pays its import.
"""
from __future__ import annotations

import os
import re
import secrets
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
        os.close(os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        self._metadata = metadata or {}
        self._pending: list = []
        self._rows = 0
        self._writer = None
        self._open = True
        # The schema is the rows' (digits or class names): the existing file's on resume,
        # else the first table's (`write`); a file closed without rows gets the digits'.
        if existing is not None:
            self._start(existing.schema_arrow)
            with self._failing():
                for batch in existing.iter_batches(batch_size=ROW_GROUP_ROWS):
                    self._writer.write_batch(batch)

    def _start(self, arrow_schema) -> None:
        import pyarrow.parquet as pq

        try:
            self._writer = pq.ParquetWriter(
                self._tmp, arrow_schema.remove_metadata().with_metadata(self._metadata))
        except BaseException:
            self._tmp.unlink(missing_ok=True)
            self._open = False
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
            with self._failing():
                self._flush(ROW_GROUP_ROWS)

    def _flush(self, n: int | None = None) -> None:
        """Write the first `n` buffered rows (all: None) as one row group."""
        import pyarrow as pa

        if not self._rows:
            return
        buffered = pa.concat_tables(self._pending)
        n = self._rows if n is None else n
        self._writer.write_table(buffered.slice(0, n), row_group_size=n)
        rest = buffered.slice(n)
        self._pending, self._rows = ([rest] if rest.num_rows else []), rest.num_rows

    def close(self) -> None:
        """Write what is buffered, finish the file and move it into place."""
        if not self._open:
            return
        self._open = False
        if self._writer is None:
            self._start(schema())
        try:
            with self._failing():
                self._flush()
                self._writer.close()
            self._writer = None
            with open(self._tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(self._tmp, self.path)
        finally:
            if self._writer is not None:  # failed before the footer: nothing usable
                self._writer = None
            self._tmp.unlink(missing_ok=True)

    @contextmanager
    def _failing(self):
        """A write that fails (disk full, a file-size limit: EFBIG, Python ignores SIGXFSZ)
        is one line naming the file; the temporary file goes, and the output file is as it
        was before this run (a resume's rows are in it still)."""
        try:
            yield
        except OSError as err:
            try:
                self._writer.close()
            except Exception:
                pass
            self._writer = None
            self._open = False
            self._tmp.unlink(missing_ok=True)
            kept = ("it holds the rows it held before this run" if self.path.exists()
                    else "no rows were kept")
            raise DigitkitError(f"{self.path}: cannot write ({_os_reason(err)}); "
                                f"{kept}: make room and rerun with --resume") from err

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


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
