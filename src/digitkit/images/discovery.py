"""Input discovery for batch inference: which files, in which order.

Rules:
- Arguments are visited in the order given. A file argument is taken as is, whatever its name
  (the user asked for it; a non-image then gets an error row). A directory is walked
  recursively.
- Inside directories: image extensions only, case-insensitive (IMAGE_EXTENSIONS); names
  starting with "." (hidden files and directories) are skipped.
- Deterministic order without a global sort: each directory's entries are sorted by name and
  visited depth-first, which is the order of sorting the full paths component by component.
  Memory is one directory's listing at a time (plus the stack of open parents), never the
  whole tree: millions of files in nested folders cost little; one flat folder of a million
  image files costs its sorted names (figures: benchmarks/bench_discovery.py, BENCHMARKS.md).
- Symbolic links to directories are followed, but every real directory is walked once, by
  (device, inode): a link loop, or two links to the same folder, never yields a file twice
  through it.
- Every other entry with an image name is yielded, whatever it is: FIFOs, sockets, device
  nodes, links to them, dangling links and link loops all get their row, and the decoder
  (`digitkit.images.decode`) refuses them before opening anything. Nothing here opens a
  file.
- No silent gaps: a folder that cannot be listed (no read permission) or reached (no search
  permission on its parent, a path longer than the system allows) is yielded itself, in its
  place, so it gets an error row saying why ("cannot list directory (permission denied)",
  "permission denied", "path too long ...") and the run ends with exit 3.
"""

from __future__ import annotations

import os
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from digitkit.errors import DataError
from digitkit.images.formats import IMAGE_EXTENSIONS

_EXT_SUFFIXES = tuple(sorted(IMAGE_EXTENSIONS))  # str.endswith takes a tuple


def is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def find_images(paths: Iterable[str | os.PathLike],
                on_error: Callable[[Path, str], None] | None = None) -> Iterator[Path]:
    """Yield image files under `paths`, in a deterministic order (see the module docstring).

    Raises DataError for an argument that does not exist. The check happens for every
    argument before anything is yielded, so a typo fails fast instead of after hours.
    A directory that cannot be listed or reached is yielded as an entry of its own (its row
    says why). `on_error(path, reason)` is the engines' hook for listing problems that have
    no entry to carry them; a local walk has none.
    """
    return map(Path, iter_image_paths(paths, on_error))


def iter_image_paths(paths: Iterable[str | os.PathLike],
                     on_error: Callable[[Path, str], None] | None = None) -> Iterator[str]:
    """`find_images` as plain strings: what the batch engine wants for millions of files (a
    Path object per file costs more than the rest of the walk)."""
    paths = [Path(p) for p in paths]
    for p in paths:
        if not os.path.lexists(p):
            raise DataError(p, "no such file or directory")
        if not p.exists():
            raise DataError(p, "broken symbolic link")
    return _iter(paths, on_error)


def _iter(paths: list[Path], on_error) -> Iterator[str]:
    seen_dirs: set[tuple[int, int]] = set()
    for p in paths:
        if p.is_dir():
            yield from _walk(str(p), seen_dirs, on_error)
        else:
            yield str(p)


def _walk(top: str, seen: set[tuple[int, int]], on_error) -> Iterator[str]:
    try:
        st = os.stat(top)
    except OSError:
        # Not reachable (no search permission above it, a path over the system's limit):
        # the folder is an entry of its own, and its row says why (digitkit.inputs).
        yield top
        return
    key = (st.st_dev, st.st_ino)
    if key in seen:
        return
    seen.add(key)
    # This loop runs once per file of a batch job (millions), in the main process that feeds
    # the workers: what it costs a file is paid that many times (BENCHMARKS.md, "Tasks of
    # four batches"). Only the names of image files and of folders are kept (no DirEntry, no
    # full path; BENCHMARKS.md, "Listing a flat folder"), and the full paths are made as
    # they go out.
    exts, files, dirs = _EXT_SUFFIXES, [], []
    try:
        with os.scandir(top) as it:
            for entry in it:
                name = entry.name
                if name[0] == ".":
                    continue
                try:
                    is_dir = entry.is_dir()  # follows symlinks; d_type alone for plain files
                except OSError:
                    is_dir = False  # a link loop, say: its row will say so
                if is_dir:
                    dirs.append(name)
                # os.path.splitext's extension: the same test for names not starting with "."
                elif name.lower().endswith(exts):
                    files.append(name)
    except OSError:
        # Cannot be listed: a row for the folder itself ("cannot list directory (...)"),
        # never a silent gap. What was listed before the error is dropped with it.
        yield top
        return
    files.sort()
    dirs.sort()
    prefix = top if top.endswith(os.sep) else top + os.sep
    join = prefix.__add__
    # Depth-first in name order: the files that sort before each folder, then the folder.
    # A run of files goes out as one map (`yield from` an iterator costs a fraction of a
    # generator step per file).
    start = 0
    for d in dirs:
        stop = bisect_left(files, d, start)
        if stop > start:
            yield from map(join, files[start:stop])
            start = stop
        yield from _walk(prefix + d, seen, on_error)
    yield from map(join, files[start:] if start else files)


def class_label_of(path: str | os.PathLike) -> int | None:
    """The digit a file is filed under: its parent folder's name if that is 0..9, else None."""
    parent = os.path.basename(os.path.dirname(os.fspath(path)))
    if len(parent) == 1 and "0" <= parent <= "9":
        return int(parent)
    return None
