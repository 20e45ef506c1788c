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
  files costs its sorted listing (~100 MB of names).
- Symbolic links to directories are followed, but every real directory is walked once, by
  (device, inode): a link loop, or two links to the same folder, never yields a file twice
  through it.
- Every other entry with an image name is yielded, whatever it is: FIFOs, sockets, device
  nodes, links to them, dangling links and link loops all get their row, and the decoder
  (`digitkit.images.decode`) refuses them before opening anything. Nothing here opens a
  file.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from operator import attrgetter
from pathlib import Path

from digitkit.errors import DataError

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
_EXT_SUFFIXES = tuple(sorted(IMAGE_EXTENSIONS))  # str.endswith takes a tuple
_NAME = attrgetter("name")


def is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def find_images(paths: Iterable[str | os.PathLike],
                on_error: Callable[[Path, str], None] | None = None) -> Iterator[Path]:
    """Yield image files under `paths`, in a deterministic order (see the module docstring).

    Raises DataError for an argument that does not exist. The check happens for every
    argument before anything is yielded, so a typo fails fast instead of after hours.
    A directory that cannot be listed is skipped and reported to `on_error(path, reason)`.
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
        return
    key = (st.st_dev, st.st_ino)
    if key in seen:
        return
    seen.add(key)
    try:
        with os.scandir(top) as it:
            entries = [e for e in it if e.name[0] != "."]
    except OSError as e:
        # The files we can see still get classified; the caller warns about this folder.
        if on_error is not None:
            on_error(Path(top), f"cannot list directory ({e.strerror or e})")
        return
    entries.sort(key=_NAME)
    # This loop runs once per file of a batch job (millions), in the main process that feeds
    # the workers: what it costs a file is paid that many times (BENCHMARKS.md, "Tasks of
    # four batches").
    # A run of files between subfolders goes out as one list (`yield from` a list costs
    # a fraction of a generator step per file).
    exts, files = _EXT_SUFFIXES, []
    for entry in entries:
        try:
            is_dir = entry.is_dir()  # follows symlinks; d_type alone for plain files
        except OSError:
            is_dir = False  # a link loop, say: its row will say so
        if is_dir:
            yield from files
            files = []
            yield from _walk(entry.path, seen, on_error)
        # os.path.splitext's extension: the same test for names that don't start with a dot
        elif entry.name.lower().endswith(exts):
            files.append(entry.path)
    yield from files


def class_label_of(path: str | os.PathLike) -> int | None:
    """The digit a file is filed under: its parent folder's name if that is 0..9, else None."""
    parent = os.path.basename(os.path.dirname(os.fspath(path)))
    if len(parent) == 1 and "0" <= parent <= "9":
        return int(parent)
    return None
