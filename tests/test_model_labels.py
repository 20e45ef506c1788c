"""Class names: a labels file (lines or a JSON list) and a labelled folder's subfolders
(digitkit.model.labels), with every refusal in one line naming the file."""

from __future__ import annotations

import json
import os

import pytest

from digitkit.errors import DataError
from digitkit.model.labels import MAX_LABELS_FILE, folder_class_names, read_labels


def _write(tmp_path, text, name="labels.txt"):
    p = tmp_path / name
    p.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    return p


def _refused(path, k=None, read=read_labels) -> str:
    with pytest.raises(DataError) as e:
        read(path, k)
    msg = str(e.value)
    assert msg.startswith(f"{path}: ") and "\n" not in msg
    return e.value.reason


def test_one_name_per_line_in_output_order(tmp_path):
    p = _write(tmp_path, "tabby cat\r\n  golden retriever \nespresso\n\n\n")
    assert read_labels(p) == ("tabby cat", "golden retriever", "espresso")
    assert read_labels(p, 3) == ("tabby cat", "golden retriever", "espresso")


def test_a_json_list_and_a_utf8_bom(tmp_path):
    names = ["chat", "chien", "café", "日本"]
    assert read_labels(_write(tmp_path, json.dumps(names, ensure_ascii=False)), 4) == \
        tuple(names)
    bom = _write(tmp_path, "\ufeffa\nb\n", "bom.txt")
    assert read_labels(bom) == ("a", "b")
    # A file that starts with "[" (or "{") is JSON, and must be a list.
    assert "not a JSON list" in _refused(_write(tmp_path, "[bracketed]\nplain\n", "b.txt"))


@pytest.mark.parametrize("text, k, reason", [
    ("a\n\nb\n", None, "line 2 is a blank class name"),
    ("a\n   \nb\n", None, "line 2 is a blank class name"),
    ("cat\ndog\ncat\n", None, "lines 1 and 3: class name 'cat' appears twice"),
    ("cat\ndog\n", 3, "2 class names for a model with 3 outputs"),
    ("a\nb\nc\nd\n", 3, "4 class names for a model with 3 outputs"),
    ("only\n", None, "1 class name; a classifier has at least 2"),
    ("", None, "empty file"),
    ("\n\n  \n", None, "0 class names; a classifier has at least 2"),
    ("a\tb\nc\n", None, "line 1: class name 'a\\tb' holds a control character ('\\t')"),
    ('["a", 3]', None, "name 2 is not a string (3)"),
    ('["a", ""]', None, "name 2 is a blank class name"),
    ('["a", "a"]', None, "names 1 and 2: class name 'a' appears twice"),
    ('["a", "b\\nc"]', None, "name 2: class name 'b\\nc' holds a control character"),
    ('{"0": "a"}', None, "not a JSON list of class names (a JSON object)"),
    ('["a", "b"', None, "not a JSON list of class names ("),
    (b"caf\xe9\nb\n", None, "not UTF-8 text (byte 3)"),
])
def test_bad_labels_files_are_refused_in_one_line(tmp_path, text, k, reason):
    assert _refused(_write(tmp_path, text), k).startswith(reason)


def test_only_a_regular_file_of_bounded_size_is_read(tmp_path):
    assert _refused(tmp_path / "missing.txt") == "no such file"
    assert _refused(tmp_path) == "is a directory"
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert _refused(fifo) == "not a regular file (FIFO)"  # refused without blocking
    big = tmp_path / "big.txt"
    with open(big, "wb") as f:
        f.truncate(MAX_LABELS_FILE + 1)
    assert _refused(big).startswith("labels file too large")


def test_folder_class_names_sort_as_keras_does(tmp_path):
    for name in ("zebra", "Apple", "banana", "10", "9", ".hidden", "_under"):
        (tmp_path / name).mkdir()
    (tmp_path / "notes.txt").write_text("a file, not a class")
    (tmp_path / "linked").symlink_to(tmp_path / "zebra")  # a link to a folder is a class
    expected = ("10", "9", "Apple", "_under", "banana", "linked", "zebra")
    assert folder_class_names(tmp_path) == expected
    assert folder_class_names(tmp_path, 7) == expected
    # Keras' own ordering, where it is installed (the tensorflow extra).
    keras_utils = pytest.importorskip("keras.src.utils.dataset_utils")
    for name in expected:
        (tmp_path / name / "x.txt").write_text("x")
    _, _, class_names = keras_utils.index_directory(str(tmp_path), labels="inferred",
                                                    formats=(".txt",))
    assert tuple(class_names) == expected


def test_bad_labelled_folders_are_refused(tmp_path):
    assert _refused(tmp_path / "missing", read=folder_class_names) == "no such folder"
    (tmp_path / "f.txt").write_text("x")
    assert _refused(tmp_path / "f.txt", read=folder_class_names).startswith("not a folder")
    empty = tmp_path / "empty"
    (empty / ".git").mkdir(parents=True)
    assert _refused(empty, read=folder_class_names).startswith("no class subfolders")
    two = tmp_path / "two"
    (two / "a").mkdir(parents=True)
    (two / "b").mkdir()
    assert _refused(two, 5, read=folder_class_names) == \
        "2 class names for a model with 5 outputs"
