"""digitkit.infer.results.rows: rows, their CSV / JSON Lines text, and the fast encoder
engines use."""

from __future__ import annotations

import csv
import io
import json

import numpy as np

from digitkit.infer.results.formats import encode_predictions
from digitkit.infer.results.rows import (
    COLUMNS,
    CSV_HEADER,
    Row,
    csv_text,
    jsonl_text,
    make_rows,
    parse_csv_record,
    parse_json_line,
)

#: The general (Row by Row) encoder of each text format.
TEXT = {"csv": csv_text, "jsonl": jsonl_text}

ROWS = [
    Row("a/7/1.png", 7, 0.9, (7, 1, 2), (0.9, 0.05, 0.01)),
    Row("odd, \"name\"\nwith newline.png", 3, 0.5, (3, 5, 8), (0.5, 0.3, 0.1)),
    Row("bad.png", error="truncated image"),
    Row("ünïcode/é.png", 0, 1.0, (0, 1, 2), (1.0, 0.0, 0.0)),
]


def test_csv_is_plain_csv_with_the_agreed_columns():
    recs = list(csv.DictReader(io.StringIO(CSV_HEADER + csv_text(ROWS))))
    assert tuple(recs[0]) == COLUMNS
    assert recs[0] == {"path": "a/7/1.png", "label": "7", "confidence": "0.900000",
                       "top_k_labels": "7 1 2", "top_k_probs": "0.900000 0.050000 0.010000",
                       "error": ""}
    assert recs[1]["path"] == ROWS[1].path
    assert recs[2]["label"] == "" and recs[2]["error"] == "truncated image"


def test_jsonl_rows():
    lines = jsonl_text(ROWS).splitlines()
    assert len(lines) == len(ROWS)
    assert json.loads(lines[2]) == {"path": "bad.png", "label": None, "confidence": None,
                                    "top_k_labels": [], "top_k_probs": [],
                                    "error": "truncated image"}
    assert json.loads(lines[3])["path"] == "ünïcode/é.png"


def test_text_parses_back_to_the_rows():
    back = list(csv.reader(io.StringIO(csv_text(ROWS))))
    assert back == [[r.path, "" if r.label is None else str(r.label),
                     "" if r.confidence is None else f"{r.confidence:.6f}",
                     " ".join(map(str, r.top_k_labels)),
                     " ".join(f"{p:.6f}" for p in r.top_k_probs), r.error] for r in ROWS]
    assert [parse_csv_record(r) for r in back] == ROWS
    assert [parse_json_line(line) for line in jsonl_text(ROWS).splitlines()] == ROWS


def test_make_rows_orders_top_k_stably():
    probs = np.array([[0.1, 0.3, 0.3, 0.3, 0, 0, 0, 0, 0, 0]], np.float32)
    rows = make_rows(["a.png", "b.png"], ["", "empty file"], probs, 3)
    assert rows[0].label == 1 and rows[0].top_k_labels == (1, 2, 3)
    assert rows[1] == Row("b.png", error="empty file")


def test_encoded_rows_are_the_row_encoders_text():
    rng = np.random.default_rng(3)
    paths = ["/d/3/a.png", "/d/x/b,c.png", 'q"uote.png', "new\nline.png", "ünï cødé.png",
             "/d/7/bad.png", " space .png", "tab\t.png", "/d/0/c.png"]
    reasons = [""] * len(paths)
    reasons[5] = "truncated image (broken data stream, at 12)"
    logits = rng.normal(0, 3, (len(paths), 10))
    probs = (np.exp(logits) / np.exp(logits).sum(1, keepdims=True)).astype(np.float32)
    probs[0] = 0.1  # ties: the stable order decides
    for fmt in ("csv", "jsonl"):
        for k in (1, 3, 10):
            for sel in (range(len(paths)), [0, 1, 2, 8], [0, 8], [5]):  # with/without failures
                p = [paths[i] for i in sel]
                r = [reasons[i] for i in sel]
                good = [i for i in sel if not reasons[i]]
                pr = probs[good] if good else None
                enc = encode_predictions(p, r, pr, k, fmt)
                assert enc.data == TEXT[fmt](make_rows(p, r, pr, k)), (fmt, k, sel)
                assert enc.count == len(p)
                assert enc.errors == [(x, y) for x, y in zip(p, r, strict=True) if y]
    enc = encode_predictions([paths[0], paths[-1]], ["", ""], probs[[0, -1]], 3, "csv")
    assert enc.confusion[3, 0] == 1  # the tie's first label, 0
    assert enc.confusion[0, int(np.argmax(probs[-1]))] == 1
    assert enc.confusion.sum() == 2
    assert encode_predictions(["/d/x/a.png"], [""], probs[:1], 3, "csv").confusion is None


def test_path_escape_is_reversible_for_any_name():
    import os

    from digitkit.infer.results.rows import escape_path, path_bytes, unescape_path

    rng = np.random.default_rng(11)
    names = [b"plain.png", b"caf\xc3\xa9.png", b"caf\xe9.png", b"\xff\xfe\xfd", b"a\\b.png",
             b"a\\xff.png", b"\\\\x41", b"new\nline,\"q\".png", b"\xed\xb2\x80.png"]
    names += [bytes(rng.integers(1, 256, int(rng.integers(1, 40))).tolist()).replace(b"/", b"_")
              for _ in range(500)]
    for raw in names:
        text = escape_path(os.fsdecode(raw))
        text.encode("utf-8")  # always writable as UTF-8
        assert unescape_path(text) == os.fsdecode(raw)
        assert path_bytes(text) == raw
    # Only names with a backslash or bytes that are not UTF-8 look different.
    assert escape_path("dir/ünï cødé, \"x\".png") == "dir/ünï cødé, \"x\".png"
    assert escape_path(os.fsdecode(b"caf\xe9.png")) == "caf\\xe9.png"
    assert escape_path("a\\xff.png") == "a\\\\xff.png"


def test_rows_carry_the_escaped_text_in_every_format():
    import os

    raw = os.fsdecode(b"/d/7/caf\xe9\\.png")
    probs = np.eye(10, dtype=np.float32)[[7]]
    for fmt in ("csv", "jsonl"):
        enc = encode_predictions([raw, "/d/x/bad.png"], ["", "empty file"], probs, 3, fmt)
        enc.data.encode("utf-8")
        assert "/d/7/caf\\xe9\\\\.png" in (enc.data if fmt == "csv" else
                                           json.loads(enc.data.splitlines()[0])["path"])
        assert enc.confusion[7, 7] == 1
        assert enc.errors == [("/d/x/bad.png", "empty file")]
