"""digitkit.images.discovery: which files a run sees, in which order."""

from __future__ import annotations

import os

import pytest

from digitkit.errors import DataError
from digitkit.images import class_label_of, find_images


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_recursive_sorted_case_insensitive_hidden_skipped(tmp_path):
    names = ["b/2.PNG", "a/z.jpeg", "a/y.JPG", "a/sub/x.tif", "a/w.TIFF", "c.bmp", "d.gif",
             "e.webp", "f.Png"]
    for n in names:
        _touch(tmp_path / n)
    for n in ["notes.txt", "a/model.onnx", ".hidden.png", ".cache/1.png", "a/.git/3.png",
              "a/noext"]:
        _touch(tmp_path / n)
    got = [p.relative_to(tmp_path).as_posix() for p in find_images([tmp_path])]
    assert got == ["a/sub/x.tif", "a/w.TIFF", "a/y.JPG", "a/z.jpeg", "b/2.PNG", "c.bmp",
                   "d.gif", "e.webp", "f.Png"]
    # Same as sorting the full paths component by component, and repeatable.
    assert got == sorted(got, key=lambda s: s.split("/"))
    assert [p for p in find_images([tmp_path])] == [tmp_path / g for g in got]


def test_explicit_files_are_taken_as_given_in_argument_order(tmp_path):
    a, b = _touch(tmp_path / "b.txt"), _touch(tmp_path / "a.png")
    d = tmp_path / "dir"
    _touch(d / "1.png")
    assert list(find_images([a, d, b])) == [a, d / "1.png", b]


def test_symlink_loops_and_duplicate_links_are_walked_once(tmp_path):
    root = tmp_path / "root"
    _touch(root / "real" / "1.png")
    os.symlink(root, root / "real" / "loop")  # real/loop -> root: a cycle
    os.symlink(root / "real", root / "again")  # a second way into real/
    got = list(find_images([root]))
    assert [p.name for p in got] == ["1.png"]
    # A linked folder outside the tree is followed (once).
    other = tmp_path / "other"
    _touch(other / "7" / "9.png")
    os.symlink(other, root / "link")
    assert sorted(p.name for p in find_images([root])) == ["1.png", "9.png"]


def test_missing_path_fails_before_yielding(tmp_path):
    _touch(tmp_path / "1.png")
    with pytest.raises(DataError, match="no such file or directory"):
        list(find_images([tmp_path, tmp_path / "nope"]))
    os.symlink(tmp_path / "gone", tmp_path / "dangling")
    with pytest.raises(DataError, match="broken symbolic link"):
        list(find_images([tmp_path / "dangling"]))


@pytest.mark.skipif(os.geteuid() == 0, reason="root can list chmod 000 directories")
def test_unlistable_directory_is_reported(tmp_path):
    _touch(tmp_path / "ok" / "1.png")
    locked = tmp_path / "locked"
    _touch(locked / "2.png")
    locked.chmod(0)
    errors = []
    try:
        got = list(find_images([tmp_path], on_error=lambda p, r: errors.append((p, r))))
    finally:
        locked.chmod(0o755)
    # The folder is an entry of its own (its row says it cannot be listed), not a warning.
    assert [p.name for p in got] == ["locked", "1.png"] and not errors


def test_streams_without_listing_everything_first(tmp_path):
    for d in range(3):
        _touch(tmp_path / str(d) / "x.png")
    it = find_images([tmp_path])
    assert next(it) == tmp_path / "0" / "x.png"  # a generator: nothing else walked yet


def test_class_label_of():
    assert class_label_of("data/test/7/60000.png") == 7
    assert class_label_of("0/a.png") == 0
    assert class_label_of("data/x/a.png") is None
    assert class_label_of("10/a.png") is None
    assert class_label_of("a.png") is None


def test_special_entries_are_yielded_for_their_rows_and_odd_folders_walked(tmp_path):
    import socket

    _touch(tmp_path / "a.png")
    os.mkfifo(tmp_path / "b-fifo.png")
    os.symlink("/dev/zero", tmp_path / "c-zero.png")
    os.symlink(tmp_path / "nowhere", tmp_path / "d-dangling.png")
    os.symlink(tmp_path / "e-loop.png", tmp_path / "e-loop.png")
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(tmp_path / "f-sock.png"))
    s.close()
    _touch(tmp_path / "g-dir.png" / "inside.png")  # a folder with an image name: walked
    _touch(tmp_path / "g-dir.png" / "notes.txt")
    raw = os.path.join(os.fsencode(tmp_path), b"h-\xff.png")
    open(raw, "wb").close()
    got = [p.relative_to(tmp_path).as_posix() for p in find_images([tmp_path])]
    assert got == ["a.png", "b-fifo.png", "c-zero.png", "d-dangling.png", "e-loop.png",
                   "f-sock.png", "g-dir.png/inside.png", os.fsdecode(b"h-\xff.png")]


# -- no silent gaps (issue 19) ---------------------------------------------------------------


def test_a_folder_past_the_path_limit_is_an_entry_whose_row_says_why(tmp_path, mnist_test):
    """Folders nested past 4,096 bytes: a digit whose own path is over the limit is still read
    (through its folder), and the first folder that cannot be named whole is yielded itself,
    so its row says why; nothing is skipped in silence."""
    from _hostile import make_deep
    from digitkit.images import iter_image_paths, load_images

    good, unreachable = make_deep(tmp_path / "deep", mnist_test[0][0])
    got = list(iter_image_paths([tmp_path]))
    assert sorted(got) == sorted([*good, *unreachable])
    pixels, reasons = load_images(got)
    by_path = dict(zip(got, reasons, strict=True))
    assert [by_path[p] for p in good] == [""] and len(pixels) == 1
    for p, reason in unreachable.items():
        assert by_path[p].startswith(reason), by_path[p]


def test_unlistable_and_unsearchable_folders_get_rows(tmp_path, mnist_test):
    """Under a process that obeys permissions (tests run as root here: the capabilities that
    override them are dropped), a folder that cannot be listed is an entry of its own, and
    every file and folder in a folder without search permission gets its entry; each row says
    why. Before, they were skipped in silence."""
    import json
    import subprocess
    import sys

    from _hostile import make_locked, obey_permissions, permissions_can_be_obeyed, unlock

    if not permissions_can_be_obeyed(tmp_path):
        pytest.skip("cannot drop the capabilities that let root ignore permissions here")
    _touch(tmp_path / "in" / "ok.png")
    expected = make_locked(tmp_path / "in", mnist_test[0][0])
    code = ("import json, sys\nfrom digitkit.images import iter_image_paths, load_images\n"
            "paths = list(iter_image_paths([sys.argv[1]]))\n"
            "print(json.dumps(dict(zip(paths, load_images(paths)[1]))))\n")
    try:
        r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "in")], text=True,
                           capture_output=True, preexec_fn=obey_permissions, timeout=120)
    finally:
        unlock(tmp_path / "in")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert sorted(rows) == sorted([str(tmp_path / "in" / "ok.png"), *expected])
    for path, reason in expected.items():
        assert rows[path].startswith(reason), (path, rows[path])
