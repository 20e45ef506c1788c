"""A real S3-compatible server for the object-store tests: moto's server mode, in its own
process on 127.0.0.1 (a free port), reached over HTTP by pyarrow's S3 file system exactly as
a remote store would be, credentials and endpoint taken from the environment.

`s3_server()` starts it and yields its endpoint; `s3_env(endpoint)` is the environment that
points pyarrow (in this process and in Ray workers started after it is set) at it;
`upload_tree` / `s3_fs` copy test files in and read results back.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

#: moto accepts any credentials; these name themselves as fake.
FAKE_KEYS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
             "AWS_DEFAULT_REGION": "us-east-1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def s3_server(timeout: float = 60.0):
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                             str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                urllib.request.urlopen(endpoint + "/moto-api/", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto server did not start") from None
                time.sleep(0.1)
        yield endpoint
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def s3_env(endpoint: str) -> dict[str, str]:
    """What a user sets to point pyarrow at an S3-compatible endpoint (README)."""
    return {**FAKE_KEYS, "AWS_ENDPOINT_URL": endpoint}


def s3_fs(endpoint: str):
    from pyarrow import fs

    return fs.S3FileSystem(endpoint_override=endpoint, access_key="testing",
                           secret_key="testing", region="us-east-1", allow_bucket_creation=True)


def upload_tree(endpoint: str, local: Path, bucket: str, prefix: str) -> None:
    """Copy every file under `local` to s3://bucket/prefix/..., creating the bucket."""
    fs = s3_fs(endpoint)
    fs.create_dir(bucket)
    for p in sorted(local.rglob("*")):
        if p.is_file():
            rel = p.relative_to(local).as_posix()
            with fs.open_output_stream(f"{bucket}/{prefix}/{rel}") as f:
                f.write(p.read_bytes())


@contextmanager
def s3_server_env():
    """A moto server with its environment set for as long as it runs (pyarrow reads it;
    Ray workers started meanwhile inherit it). Yields the endpoint."""
    import pytest

    with s3_server() as endpoint, pytest.MonkeyPatch.context() as mp:
        for k, v in s3_env(endpoint).items():
            mp.setenv(k, v)
        yield endpoint
