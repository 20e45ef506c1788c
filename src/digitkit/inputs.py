"""Reading what the user names (an image, a model, a result file to resume): regular files
only, never more than a size limit, never blocking. The one rule, for every command.

The path is stat()ed first, following links: a FIFO, socket, device node, directory or a link
to one is refused without being opened ("not a regular file (...)", "is a directory"; opening
a FIFO waits for a writer, and opening some devices does something), a dangling link is named
as one, and a file over the limit is refused before a byte is read ("file too large"). The
open is non-blocking and then checked again (fstat) wherever the read does not match the
size stat() gave, so a file swapped for a FIFO or /dev/zero between the check and the read
cannot block, flood or bloat the reader: it reads at most one byte more than the size stat()
gave before it refuses.

Errors are `error(path, reason)`, `DataError` unless the caller names its own class (the
images give `ImageError`, whose reason is an error row's text).
"""

from __future__ import annotations

import errno
import io
import os
import stat
from collections.abc import Callable

from digitkit.errors import DataError, DigitkitError

Refusal = Callable[[object, str], DigitkitError]

_KINDS = ((stat.S_ISFIFO, "FIFO"), (stat.S_ISCHR, "character device"),
          (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket"))
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
#: O_PATH: a handle for lookups only, so a folder with search but no read permission works.
_FOLDER_FLAGS = getattr(os, "O_PATH", os.O_RDONLY) | os.O_DIRECTORY | os.O_CLOEXEC
_DIR_FD = os.stat in os.supports_dir_fd and os.open in os.supports_dir_fd
_S_IFMT, _S_IFREG = 0o170000, stat.S_IFREG
#: A file that grows while it is read is read on in pieces of at most this many bytes.
_PIECE = 1 << 20


class Folder:
    """The folder of the files being read, opened once (O_PATH), for the paths too long for
    the system to name whole (ENAMETOOLONG): a file nested past PATH_MAX whose folder can
    still be named is looked up by its own name through the folder's handle. Any other path
    is looked up whole: going through a handle for every file saved no lookup time and cost
    a path split per file."""

    __slots__ = ("path", "fd")

    def __init__(self):
        self.path = self.fd = None

    def open(self, path: str) -> None:
        self.close()
        self.path = path
        try:
            self.fd = os.open(path or os.sep, _FOLDER_FLAGS)
        except OSError:
            self.fd = None  # the full path then reports the problem itself

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
        self.path = self.fd = None

    def handle(self, path) -> tuple[str, int] | None:
        """(the file's own name, its folder's handle) for `path`, or None when there is no
        folder to go through (a bare name, or a folder that cannot be opened)."""
        if not _DIR_FD or not isinstance(path, str):
            return None
        head, sep, tail = path.rpartition(os.sep)
        if not (sep and tail):
            return None
        if head != self.path:
            self.open(head)
        return None if self.fd is None else (tail, self.fd)


def read_regular(path, limit: int, folder: Folder | None = None,
                 error: Refusal = DataError) -> bytes:
    """The bytes of `path` if it is a regular file of at most `limit` bytes; else
    `error(path, reason)`. One stat, one open, usually one read: this runs once per file of
    every batch. `folder`: the handle a path too long for the system is read through."""
    name, where = path, None
    try:
        try:
            st = os.stat(path)
        except OSError as err:
            if err.errno != errno.ENAMETOOLONG or folder is None:
                raise
            through = folder.handle(path)
            if through is None:
                raise
            name, where = through
            st = os.stat(name, dir_fd=where)
        if st.st_mode & _S_IFMT != _S_IFREG:
            raise error(path, _directory_reason(path) if stat.S_ISDIR(st.st_mode)
                        else not_regular_reason(st.st_mode))
        size = st.st_size
        if size > limit:
            raise error(path, too_large_reason(size, limit))
        if not size:
            raise error(path, "empty file")
        # O_NONBLOCK: should the path have become a FIFO since the stat, open() must not wait
        # for a writer (and read() then returns at once).
        fd = os.open(name, _OPEN_FLAGS, dir_fd=where)
        try:
            data = os.read(fd, size + 1)
            if len(data) != size:  # a short read, or the file changed since the stat
                data = _read_on(fd, data, limit, path, error)
        finally:
            os.close(fd)
    except OSError as err:
        raise error(path, os_error_reason(path, err)) from err
    return data


def _directory_reason(path) -> str:
    """Why a folder is read as a file: a folder that a walk could not list is handed over as
    an entry of its own (`digitkit.images.discovery`), and its row says why it could not."""
    try:  # by its full path, as the walk tried: through the folder handle it may reach
        os.close(os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
    except OSError as e:
        return f"cannot list directory ({os_error_reason(path, e)})"
    return "is a directory"


def _read_on(fd: int, data: bytes, limit: int, path, error: Refusal) -> bytes | bytearray:
    """The rest of a file whose first read did not give the size stat() said: refused at
    once unless it is (still) a regular file (it may have been swapped for /dev/zero or a
    FIFO), else read on in pieces, never past `limit` + 1 bytes in all, and into one buffer
    (no second copy of a file as large as the limit)."""
    st = os.fstat(fd)
    if st.st_mode & _S_IFMT != _S_IFREG:
        raise error(path, not_regular_reason(st.st_mode))
    buf = bytearray(data)
    while len(buf) <= limit and (more := os.read(fd, min(_PIECE, limit + 1 - len(buf)))):
        buf += more
    if len(buf) > limit:
        raise error(path, too_large_reason(len(buf), limit))
    if not buf:
        raise error(path, "empty file")
    return buf


def check_regular(path, limit: int | None = None, error: Refusal = DataError) -> os.stat_result:
    """stat() of `path` if it is a regular file (of at most `limit` bytes, when given); else
    `error(path, reason)`. Nothing is opened."""
    try:
        st = os.stat(path)
    except OSError as err:
        raise error(path, os_error_reason(path, err)) from err
    if not stat.S_ISREG(st.st_mode):
        raise error(path, not_regular_reason(st.st_mode))
    if limit is not None and st.st_size > limit:
        raise error(path, too_large_reason(st.st_size, limit))
    return st


def open_regular(path, limit: int | None = None, error: Refusal = DataError) -> io.BufferedReader:
    """`path` opened for reading ("rb") if it is a regular file (of at most `limit` bytes,
    when given), checked before the open and again on the open file; else
    `error(path, reason)`. For what is read a block at a time (a result file to resume, a
    model's header)."""
    check_regular(path, limit, error)
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as err:
        raise error(path, os_error_reason(path, err)) from err
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # swapped since the check
            raise error(path, not_regular_reason(st.st_mode))
        if limit is not None and st.st_size > limit:
            raise error(path, too_large_reason(st.st_size, limit))
        os.set_blocking(fd, True)  # a regular file: reads never wait anyway
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def not_regular_reason(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "is a directory"
    kind = next((name for test, name in _KINDS if test(mode)), "special file")
    return f"not a regular file ({kind})"


def too_large_reason(size: int, limit: int) -> str:
    return f"file too large ({size:,} bytes, over the {limit:,}-byte limit)"


def os_error_reason(path, e: OSError) -> str:
    """One reason per way a file cannot be opened or read."""
    if isinstance(e, FileNotFoundError):
        return "broken symbolic link" if os.path.islink(path) else "no such file"
    if isinstance(e, IsADirectoryError):
        return "is a directory"
    if isinstance(e, PermissionError):
        return "permission denied"
    if e.errno == errno.ELOOP:
        return "symbolic link loop"
    if e.errno == errno.ENAMETOOLONG:
        return f"path too long for the system ({len(os.fsencode(path)):,} bytes)"
    return f"cannot read ({e.strerror or e})"
