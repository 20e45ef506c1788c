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


def test_read_file_through_a_folder_handle_is_the_same(tmp_path, mnist_test):
    """A path the system can name is read whole (the handle is not even opened); a file
    nested past PATH_MAX is read through its folder's handle, and only with one."""
    from _hostile import make_deep

    (tmp_path / "a.png").write_bytes(b"abc")
    (tmp_path / "b.png").write_bytes(b"defg")
    folder = Folder()
    try:
        got = [read_file(str(tmp_path / n), 10, folder) for n in ("a.png", "b.png")]
        assert folder.path is None and folder.fd is None
    finally:
        folder.close()
    assert got == [b"abc", b"defg"] == [read_file(tmp_path / n) for n in ("a.png", "b.png")]
    with pytest.raises(ImageError, match="no such file"):
        read_file(str(tmp_path / "nope" / "c.png"), 10, Folder())
    with pytest.raises(ImageError, match="is a directory"):
        read_file(str(tmp_path), 10)
    (deep, parent), = make_deep(tmp_path / "deep", mnist_test[0][0])[0].items()
    with pytest.raises(ImageError, match="path too long"):
        read_file(deep)
    folder = Folder()
    try:
        data = read_file(deep, MAX_FILE_SIZE, folder)
        assert folder.path == parent and folder.fd is not None
    finally:
        folder.close()
    assert data.startswith(b"\x89PNG")
    assert load_images([deep])[1] == [""]


@pytest.mark.parametrize("swap_to", ["/dev/zero", "fifo"])
def test_a_file_swapped_after_the_size_check_is_refused_without_reading_on(tmp_path, swap_to,
                                                                           monkeypatch):
    """Issue 19: the file passes stat() as a small regular file, then is replaced (a real
    rename) by a link to /dev/zero or a FIFO before it is opened. It is refused as what it
    now is, having read at most one byte more than stat() said: never the whole limit, and
    never a second copy of it in memory."""
    import tracemalloc

    from digitkit import inputs

    path = tmp_path / "swap.png"
    path.write_bytes(b"x" * 100)
    other = tmp_path / "other"
    if swap_to == "fifo":
        os.mkfifo(other)
    else:
        os.symlink(swap_to, other)
    real_stat, swapped = os.stat, []

    def stat_then_swap(name, *args, **kwargs):  # the race, made to happen every time
        st = real_stat(name, *args, **kwargs)
        if not swapped:
            swapped.append(os.replace(other, path))
        return st

    monkeypatch.setattr(inputs.os, "stat", stat_then_swap)
    limit = 64 * 2**20
    tracemalloc.start()
    try:
        with pytest.raises(ImageError) as e:
            read_file(str(path), limit)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    kind = "character device" if swap_to == "/dev/zero" else "FIFO"
    assert e.value.reason in (f"not a regular file ({kind})",
                              "cannot read (Resource temporarily unavailable)")
    assert peak < 2**20  # 64 MiB of zeros read, twice, before the fix


def test_a_file_that_grew_after_the_size_check_is_read_on_within_the_limit(tmp_path,
                                                                          monkeypatch):
    """Bytes appended between stat() and the read are read too, never past the limit."""
    from digitkit import inputs

    path = tmp_path / "grow.png"
    real_stat = os.stat

    def stat_then_grow(name, *args, **kwargs):
        st = real_stat(name, *args, **kwargs)
        if st.st_size == 10:
            with open(path, "ab") as f:
                f.write(b"b" * 5)
        return st

    monkeypatch.setattr(inputs.os, "stat", stat_then_grow)
    path.write_bytes(b"a" * 10)
    assert bytes(read_file(str(path), 100)) == b"a" * 10 + b"b" * 5
    path.write_bytes(b"a" * 10)
    with pytest.raises(ImageError, match=r"file too large \(13 bytes, over the 12-byte"):
        read_file(str(path), 12)
