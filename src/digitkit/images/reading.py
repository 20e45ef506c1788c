"""Reading an image file's bytes: only regular files, and never more than a size limit.

The path is stat()ed first, following links: a FIFO, socket, device node, directory or a link
to one is refused without being opened ("not a regular file (...)", "is a directory"), a
dangling link is named as one, and a file over the limit (MAX_FILE_SIZE by default) is
refused before a byte is read ("file too large"). The open is non-blocking and the read
bounded, so a file swapped for a FIFO or a device between the check and the read still cannot
block or flood a worker. Errors are ImageError(path, reason), the reason as rows show it.
"""

from __future__ import annotations

import errno
import os
import stat

from digitkit.errors import ImageError

#: Largest file read, in bytes (256 MiB). The largest image decode.MAX_PIXELS lets through,
#: stored uncompressed at 8 bits with alpha (50 MP x 4 bytes = 200 MB: a raw TIFF or BMP
#: scan), still fits, so the cap never refuses a picture the pixel limit would take; bigger is
#: not a digit picture (a video, a disk image, /dev/zero behind a link) and would only cost a
#: worker its memory.
MAX_FILE_SIZE = 256 * 2**20

_KINDS = ((stat.S_ISFIFO, "FIFO"), (stat.S_ISCHR, "character device"),
          (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket"))
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
#: O_PATH: a handle for lookups only, so a folder with search but no read permission works.
_FOLDER_FLAGS = getattr(os, "O_PATH", os.O_RDONLY) | os.O_DIRECTORY | os.O_CLOEXEC
_DIR_FD = os.stat in os.supports_dir_fd and os.open in os.supports_dir_fd
_S_IFMT, _S_IFREG = 0o170000, stat.S_IFREG


class Folder:
    """The folder of the files being read, opened once: stat() and open() then look up one
    name each instead of walking the whole path twice (a chunk's files mostly share their
    folder; this keeps the regular-file check a small part of reading a small file)."""

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


def read_file(path, limit: int = MAX_FILE_SIZE, folder: Folder | None = None) -> bytes:
    """The bytes of `path` if it is a regular file of at most `limit` bytes; else ImageError.
    One stat, one open, usually one read: this runs once per file of every batch."""
    name, where = path, None
    if folder is not None and _DIR_FD and isinstance(path, str):
        head, sep, tail = path.rpartition(os.sep)
        if sep and tail:
            if head != folder.path:
                folder.open(head)
            if folder.fd is not None:
                name, where = tail, folder.fd
    try:
        st = os.stat(name, dir_fd=where)
        if st.st_mode & _S_IFMT != _S_IFREG:
            raise ImageError(path, _not_regular_reason(st.st_mode))
        size = st.st_size
        if size > limit:
            raise ImageError(path, _too_large(size, limit))
        if not size:
            raise ImageError(path, "empty file")
        # O_NONBLOCK: should the path have become a FIFO since the stat, open() must not wait
        # for a writer (and read() then returns at once).
        fd = os.open(name, _OPEN_FLAGS, dir_fd=where)
        try:
            data = os.read(fd, size + 1)
            if len(data) != size:  # a short read, or the file changed: read on, bounded
                parts, size = [data], len(data)
                while size <= limit and (more := os.read(fd, limit + 1 - size)):
                    parts.append(more)
                    size += len(more)
                data = b"".join(parts)
                if len(data) > limit:
                    raise ImageError(path, _too_large(len(data), limit))
                if not data:
                    raise ImageError(path, "empty file")
        finally:
            os.close(fd)
    except OSError as err:
        raise ImageError(path, _os_error_reason(path, err)) from err
    return data


def _not_regular_reason(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "is a directory"
    kind = next((name for test, name in _KINDS if test(mode)), "special file")
    return f"not a regular file ({kind})"


def _too_large(size: int, limit: int) -> str:
    return f"file too large ({size:,} bytes, over the {limit:,}-byte limit)"


def _os_error_reason(path, e: OSError) -> str:
    """One reason per way a file cannot be opened or read."""
    if isinstance(e, FileNotFoundError):
        return "broken symbolic link" if os.path.islink(path) else "no such file"
    if isinstance(e, IsADirectoryError):
        return "is a directory"
    if isinstance(e, PermissionError):
        return "permission denied"
    if e.errno == errno.ELOOP:
        return "symbolic link loop"
    return f"cannot read ({e.strerror or e})"
