"""digitkit.images.reading: only regular files are read, never more than the size limit, and
nothing else is opened. Real FIFOs, device links, sockets, dangling links, link loops."""

from __future__ import annotations

import os

import pytest
from PIL import Image

from digitkit.errors import ImageError
from digitkit.images import MAX_FILE_SIZE, load_image, load_images
from digitkit.images.reading import Folder, read_file


def test_special_files_are_refused_without_being_opened(tmp_path):
    import threading

    fifo = tmp_path / "fifo.png"
    os.mkfifo(fifo)
    opened = threading.Event()

    def writer():  # blocks until someone opens the FIFO for reading
        with open(fifo, "wb"):
            opened.set()

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    os.symlink(fifo, tmp_path / "link.png")
    for path in (fifo, tmp_path / "link.png"):  # directly, and through a link
        with pytest.raises(ImageError, match=r"not a regular file \(FIFO\)"):
            load_image(path)
    t.join(0.5)
    assert not opened.is_set() and t.is_alive()  # nobody opened it: the writer still waits
    with open(tmp_path / "fifo.png", "rb"):  # let the writer go
        t.join(5)
    for dev in ("zero", "null", "urandom"):
        os.symlink(f"/dev/{dev}", tmp_path / f"{dev}.png")
    os.symlink(tmp_path / "gone.png", tmp_path / "dangling.png")
    os.symlink(tmp_path / "b.png", tmp_path / "a.png")
    os.symlink(tmp_path / "a.png", tmp_path / "b.png")
    names = ["zero.png", "null.png", "urandom.png", "dangling.png", "a.png"]
    _, reasons = load_images([str(tmp_path / n) for n in names])
    assert reasons == ["not a regular file (character device)"] * 3 + [
        "broken symbolic link", "symbolic link loop"]


def test_size_limit_is_checked_before_reading(tmp_path, mnist_test):
    good = tmp_path / "good.png"
    Image.fromarray(mnist_test[0][0]).save(good)
    size = good.stat().st_size
    huge = tmp_path / "huge.png"
    with open(huge, "wb") as f:
        f.truncate(MAX_FILE_SIZE + 1)  # sparse: reading it would take a while
    _, reasons = load_images([str(good), str(huge)])
    assert reasons == ["", f"file too large ({MAX_FILE_SIZE + 1:,} bytes, over the "
                           f"{MAX_FILE_SIZE:,}-byte limit)"]
    _, reasons = load_images([str(good)], max_file_size=size - 1)
    assert reasons[0].startswith("file too large")
    assert load_images([str(good)], max_file_size=size)[1] == [""]


def test_read_file_through_a_folder_handle_is_the_same(tmp_path):
    (tmp_path / "a.png").write_bytes(b"abc")
    (tmp_path / "b.png").write_bytes(b"defg")
    folder = Folder()
    try:
        got = [read_file(str(tmp_path / n), 10, folder) for n in ("a.png", "b.png")]
        assert folder.path == str(tmp_path) and folder.fd is not None
    finally:
        folder.close()
    assert got == [b"abc", b"defg"] == [read_file(tmp_path / n) for n in ("a.png", "b.png")]
    with pytest.raises(ImageError, match="no such file"):
        read_file(str(tmp_path / "nope" / "c.png"), 10, Folder())
    with pytest.raises(ImageError, match="is a directory"):
        read_file(str(tmp_path), 10)
