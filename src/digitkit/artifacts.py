"""Files the user keeps, written safely by every command: atomic writes (temp name, then
rename), overwrite guards, sha256 of files and trees."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from digitkit.errors import DigitkitError, OutputExistsError


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_tree(path: str | os.PathLike) -> str:
    """Checksum of a directory (a SavedModel): relative paths and contents, in sorted order."""
    root = Path(path)
    h = hashlib.sha256()
    for p in sorted(q for q in root.rglob("*") if q.is_file()):
        h.update(str(p.relative_to(root)).encode())
        h.update(b"\0")
        h.update(sha256_file(p).encode())
    return h.hexdigest()


def guard_output(path: str | os.PathLike, force: bool, hint: str = "pass --force to overwrite"):
    """Raise unless `path` is free or the user said --force."""
    p = Path(path)
    if (p.exists() or p.is_symlink()) and not force:
        raise OutputExistsError(p, hint)


def ensure_dir(path: str | os.PathLike) -> Path:
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DigitkitError(f"{p}: cannot create directory ({err.strerror or err})") from err
    if not os.access(p, os.W_OK):
        raise DigitkitError(f"{p}: directory is not writable")
    return p


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ""):
    """Yield a temporary path in the destination's directory; move it into place on success.

    Readers never see a half-written file, and a failure leaves the old file untouched.
    Works for files and directories (a SavedModel).
    """
    dest = Path(path)
    ensure_dir(dest.parent)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    target = tmp / (dest.name + suffix)
    try:
        yield target
        if dest.is_dir() and not dest.is_symlink():
            shutil.rmtree(dest)
        os.replace(target, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def _json_default(o):
    # numpy scalars and paths show up in records; everything else is a bug worth seeing.
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, os.PathLike):
        return os.fspath(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
