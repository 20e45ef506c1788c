"""Inputs on object stores (s3://, gs://, abfs://, hdfs://, file://): listing them in the
order local folders are walked, and fetching them, through pyarrow's file systems.

Credentials and endpoints are pyarrow's (see `digitkit.infer.storage.stores`). Listing runs on the
driver; fetching runs in the Ray actors, each into a scratch file that the local decoder then
reads, so the error reasons are exactly the local ones.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from digitkit.errors import DataError
from digitkit.images import MAX_FILE_SIZE, is_image_name, iter_image_paths, load_images


def is_uri(path) -> bool:
    return "://" in str(path)


# -- listing --------------------------------------------------------------------------------


def find_inputs(paths: Iterable[str | os.PathLike],
                on_error: Callable[[Path, str], None] | None = None) -> Iterator[str]:
    """Like `digitkit.images.find_images`, also for object-store URIs (through pyarrow.fs).

    Arguments are visited in the order given; a folder's images come sorted the way
    `find_images` sorts them (by path, component by component). Every argument is checked
    for existence before anything is yielded.
    """
    paths = [str(p) for p in paths]
    if not any(is_uri(p) for p in paths):
        yield from iter_image_paths(paths, on_error=on_error)
        return
    resolved = [_resolve_uri(p) if is_uri(p) else p for p in paths]
    for p, r in zip(paths, resolved, strict=True):
        if isinstance(r, tuple):
            yield from _list_uri(p, *r)
        else:
            yield from iter_image_paths([r], on_error=on_error)


def _resolve_uri(uri: str):
    """(file system, path inside it, FileInfo), or DataError when it is not there."""
    from pyarrow import fs as pafs

    try:
        filesystem, inner = pafs.FileSystem.from_uri(uri)
        info = filesystem.get_file_info(inner)
    except Exception as err:  # pyarrow raises ArrowInvalid/OSError for bad schemes or access
        raise DataError(uri, f"cannot open ({str(err).splitlines()[0] if str(err) else err})") \
            from err
    if info.type == pafs.FileType.NotFound:
        raise DataError(uri, "no such file or directory")
    return filesystem, inner, info


def _list_uri(uri: str, filesystem, inner: str, info) -> Iterator[str]:
    from pyarrow import fs as pafs

    if info.type != pafs.FileType.Directory:
        yield uri  # a file named by the user is taken as is, like find_images does
        return
    base = inner.rstrip("/")
    prefix = uri.rstrip("/")
    found = []
    for f in filesystem.get_file_info(pafs.FileSelector(base, recursive=True)):
        rel = f.path[len(base):].lstrip("/")
        parts = rel.split("/")
        if f.type != pafs.FileType.File or any(s.startswith(".") for s in parts):
            continue
        if is_image_name(parts[-1]):
            found.append(parts)
    # Component-wise sort = find_images' depth-first walk over sorted directory listings.
    for parts in sorted(found):
        yield prefix + "/" + "/".join(parts)


# -- the workers ----------------------------------------------------------------------------


#: Object stores answer a small GET after a network round trip, long against decoding the
#: file: fetching one file at a time would leave an actor's core idle most of the time, so
#: each actor keeps this many fetches in flight.
FETCH_THREADS = 16


def decode_uris(uris: list[str], scratch: Path, filesystems: dict, decode=load_images,
                 max_file_size: int = MAX_FILE_SIZE):
    """`decode` (load_images) for object-store URIs: fetch each into a scratch file (at most
    `max_file_size` bytes), decode it there, so the error reasons are exactly the local ones
    (empty file, not an image, truncated)."""
    from concurrent.futures import ThreadPoolExecutor
    from functools import partial

    local = [str(scratch / f"{n}{os.path.splitext(u)[1]}") for n, u in enumerate(uris)]
    fetch = partial(_fetch, filesystems=filesystems, max_file_size=max_file_size)
    with ThreadPoolExecutor(min(FETCH_THREADS, len(uris))) as pool:
        fetch_errors = list(pool.map(fetch, uris, local))
    try:
        pixels, reasons = decode(local)
    finally:
        for p in local:
            Path(p).unlink(missing_ok=True)
    # A file that could not be fetched has no scratch copy (so no pixels); its reason is
    # the fetch error rather than the scratch file's "no such file".
    return pixels, [f or r for f, r in zip(fetch_errors, reasons, strict=True)]


def _fetch(uri: str, target: str, filesystems: dict, max_file_size: int = MAX_FILE_SIZE) -> str:
    """Copy `uri` to `target`; "" on success, else the reason. Never reads more than
    `max_file_size` + 1 bytes (the local decoder's limit, with its reason)."""
    from pyarrow import fs as pafs

    try:
        # One FileSystem per folder: from_uri resolves credentials and regions each time.
        # (A race between threads only builds a FileSystem twice.)
        folder, name = uri.rsplit("/", 1)
        if folder not in filesystems:
            filesystems[folder] = pafs.FileSystem.from_uri(folder)
        filesystem, inner = filesystems[folder]
        with filesystem.open_input_stream(inner.rstrip("/") + "/" + name) as f:
            data = f.read(max_file_size + 1)
        if len(data) > max_file_size:
            return f"file too large (over the {max_file_size:,}-byte limit)"
        with open(target, "wb") as out:
            out.write(data)
        return ""
    except FileNotFoundError:
        return "no such file"
    except Exception as e:  # network, permissions: one bad object must not stop the run
        return f"cannot read ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
