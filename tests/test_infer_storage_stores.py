"""digitkit.infer.storage.stores: a shard directory's file system, files published whole."""

from __future__ import annotations

import pytest

pytest.importorskip("pyarrow")

from digitkit.errors import DataError  # noqa: E402
from digitkit.infer.storage.stores import Destination, is_uri  # noqa: E402


def test_destination_publishes_whole_files_only(tmp_path, monkeypatch):
    dest = Destination(str(tmp_path / "out"))
    dest.prepare()
    dest.write("part-000000-000000000000.csv", b"x")
    assert dest.names() == {"part-000000-000000000000.csv"}

    class BrokenMove:  # the file system, failing at the rename (a full disk, a crash)
        def __getattr__(self, name):
            return getattr(real, name)

        def move(self, src, dst):
            raise OSError("disk full")

    real = dest.fs
    monkeypatch.setattr(dest, "fs", BrokenMove())
    with pytest.raises(OSError, match="disk full"):
        dest.write("part-000001-000000000000.csv", b"y")
    assert dest.names() == {"part-000000-000000000000.csv"}  # no partial, no temp


def test_uris_and_paths(tmp_path):
    assert is_uri("s3://b/p/") and is_uri("file:///x") and not is_uri(tmp_path)
    local = Destination(tmp_path.as_uri() + "/d")
    assert local.fs.type_name == "local" and not local.in_place
    assert local.names() == set()  # not there yet: nothing, no error
    local.prepare()
    local.write("a.txt", b"1")
    assert local.read("a.txt") == b"1" and (tmp_path / "d" / "a.txt").read_bytes() == b"1"
    local.delete("a.txt")
    assert local.names() == set()
    with pytest.raises(DataError, match="cannot open"):
        Destination("nosuchscheme://x/y")
