"""Reading an image file's bytes: the rule of `digitkit.inputs` (regular files only, never
more than a size limit, never blocking), with the images' limit and their error class.

Errors are ImageError(path, reason), the reason as rows show it: "not a regular file (...)",
"is a directory", "broken symbolic link", "file too large (...)", "empty file", ...
"""

from __future__ import annotations

from digitkit.errors import ImageError
from digitkit.inputs import Folder, read_regular

#: Largest file read, in bytes (256 MiB). The largest image decode.MAX_PIXELS lets through,
#: stored uncompressed at 8 bits with alpha (50 MP x 4 bytes = 200 MB: a raw TIFF or BMP
#: scan), still fits, so the cap never refuses a picture the pixel limit would take; bigger is
#: not a digit picture (a video, a disk image, /dev/zero behind a link) and would only cost a
#: worker its memory.
MAX_FILE_SIZE = 256 * 2**20


def read_file(path, limit: int = MAX_FILE_SIZE, folder: Folder | None = None) -> bytes:
    """The bytes of `path` if it is a regular file of at most `limit` bytes; else ImageError."""
    return read_regular(path, limit, folder, ImageError)


__all__ = ["MAX_FILE_SIZE", "Folder", "read_file"]
