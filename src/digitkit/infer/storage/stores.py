"""Where a shard directory lives: a directory on a local or shared file system, or an
object-store prefix (s3://, gs://, abfs://), through pyarrow's file systems.

A file is published whole or not at all: on a file system it is written under a hidden
temporary name (`.NAME.XXXXXXXX.tmp`) and renamed; an object store makes an object visible
only when its upload completes, so it is written in place (a rename there is a copy and a
delete, neither atomic nor cheap).

Credentials and endpoints are pyarrow's: the environment (`AWS_ACCESS_KEY_ID`,
`AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_DEFAULT_REGION`, `AWS_ENDPOINT_URL` for
S3-compatible stores), the AWS config files, or the instance's role. A `Destination` is built
from the URI on the driver and again in each worker, so credentials never travel with the
work.
"""

from __future__ import annotations

import os
import uuid

from digitkit.errors import DataError, one_line
from digitkit.infer.storage.uri_inputs import is_uri

#: The file systems whose uploads appear whole (so a file is written in place).
OBJECT_STORES = ("s3", "gcs", "abfs")


class Destination:
    """A directory on a local/shared file system or an object-store prefix, through
    pyarrow.fs. Built on the driver and again in each worker (credentials never travel)."""

    def __init__(self, dest: str):
        from pyarrow import fs as pafs

        self.dest = dest
        try:
            if is_uri(dest):
                self.fs, root = pafs.FileSystem.from_uri(dest)
            else:
                self.fs, root = pafs.LocalFileSystem(), os.path.abspath(dest)
        except Exception as err:  # pyarrow: ArrowInvalid / OSError for schemes and access
            raise DataError(dest, f"cannot open ({one_line(err)})") from err
        self.root = root.rstrip("/")
        self.in_place = self.fs.type_name in OBJECT_STORES

    def _path(self, name: str) -> str:
        return f"{self.root}/{name}"

    def names(self) -> set[str]:
        from pyarrow import fs as pafs

        sel = pafs.FileSelector(self.root, allow_not_found=True)
        try:
            infos = self.fs.get_file_info(sel)
        except Exception as err:  # no such bucket, no permission
            raise DataError(self.dest, f"cannot list ({one_line(err)})") from err
        return {i.base_name for i in infos if i.type == pafs.FileType.File}

    def write(self, name: str, data: bytes) -> None:
        """Publish `name` whole: a temporary name and a rename, or one upload."""
        if self.in_place:
            with self.fs.open_output_stream(self._path(name)) as f:
                f.write(data)
            return
        tmp = self._path(f".{name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            with self.fs.open_output_stream(tmp) as f:
                f.write(data)
            self.fs.move(tmp, self._path(name))  # rename: atomic on POSIX
        except BaseException:
            if self.fs.get_file_info(tmp).is_file:
                self.fs.delete_file(tmp)
            raise

    def read(self, name: str) -> bytes:
        with self.fs.open_input_stream(self._path(name)) as f:
            return f.read()

    def delete(self, name: str) -> None:
        self.fs.delete_file(self._path(name))

    def prepare(self) -> None:
        try:
            self.fs.create_dir(self.root, recursive=True)
        except Exception as err:
            raise DataError(self.dest, f"cannot create the output directory ({one_line(err)})") \
                from err
