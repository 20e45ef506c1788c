"""One writer per output: an advisory lock held for the whole run.

`output_lock(OUT)` takes `fcntl.flock` (exclusive, never waiting) on a hidden lock file
beside the output, `.NAME.lock` (a file or a shard directory alike: Parquet replaces its file
by a rename and a shard directory may not exist yet, so the lock cannot be on the output
itself). A second run on the same output (`--resume`, `--force` or a new one) is refused in
one line naming the run that holds it, before it reads or writes anything. The kernel drops
the lock when its process ends however it ends (SIGKILL too), so a stale lock file never
blocks a later run; it is removed when the run ends.

Local and shared file systems only: an object-store prefix has no lock (the manifest and
the content-addressed shard names keep a second writer from mixing plans there).
"""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path

from digitkit.errors import DigitkitError


def lock_path(output: str | os.PathLike) -> Path:
    p = Path(str(output).rstrip("/" + os.sep) or ".")
    return p.with_name(f".{p.name}.lock")


class OutputBusyError(DigitkitError):
    """Another run is writing the same output (exit 1)."""

    def __init__(self, output, holder: str):
        self.path = str(output)
        super().__init__(f"{self.path}: another digitkit run is writing it ({holder}); wait "
                         "for it to finish, or stop it first")


@contextmanager
def output_lock(output: str | os.PathLike):
    """Hold the output's lock for the `with` block, or raise OutputBusyError at once."""
    path = lock_path(output)
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
        except OSError as err:
            raise DigitkitError(f"{path}: cannot create the output's lock file "
                                f"({err.strerror or err})") from err
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise OutputBusyError(output, holder) from None
        except OSError:
            os.close(fd)
            raise
        # The file locked must still be the one at `path`: the run before may have removed it
        # between our open and our lock (then we locked a file nobody else will open).
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path, follow_symlinks=False))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield path
    finally:
        try:
            os.unlink(path)  # still ours: we hold the lock on the file at this path
        except OSError:
            pass
        os.close(fd)


def _holder(fd: int) -> str:
    try:
        pid = os.pread(fd, 32, 0).decode().strip()
    except (OSError, UnicodeDecodeError):
        pid = ""
    return f"pid {pid}" if pid.isdigit() else "its lock is held"


def lock_for(output):
    """`output_lock` for a run's output (a path, `ShardOutput` or None/"-" for stdout); no
    lock for stdout or an object store, and none where the output's folder does not exist
    (the run refuses that itself)."""
    from contextlib import nullcontext

    from digitkit.infer.storage.uri_inputs import is_uri

    dest = getattr(output, "dest", output)
    if dest in (None, "-") or is_uri(str(dest)):
        return nullcontext()
    parent = lock_path(dest).parent
    if str(dest).endswith(("/", os.sep)) or hasattr(output, "dest"):
        parent.mkdir(parents=True, exist_ok=True)  # a shard directory's path is made anyway
    elif not parent.is_dir():
        return nullcontext()
    return output_lock(dest)
