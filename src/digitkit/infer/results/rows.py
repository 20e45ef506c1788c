"""Result rows of batch inference and their text: CSV or JSON Lines, the same for both engines.

Columns: path, label, confidence, top_k_labels, top_k_probs, error.
- `label` is the class name: a digit model's rows keep the digit ("7", a number in JSON
  Lines and Parquet, as they always were); a general classifier's rows carry its class
  names (any text: commas, quotes, spaces and any script included).
- CSV (the default): top-k values space-separated in one field ("7 2 3"); a general
  classifier's top-k names as a JSON list in that field (`["cat", "coffee mug"]`: names may
  hold spaces); label and confidence empty on error.
- JSON Lines (`.jsonl` / `.ndjson`): one object per line, top-k as arrays, null label and
  confidence on error.
- `error` is the empty string on success.
- Accuracy over class folders: a file whose parent folder is named like a class counts
  (digits: folders 0..9).

Any file name: the path column holds the path as text that turns back into the exact bytes
of the name (`escape_path` / `path_bytes`). Linux names are bytes; Python holds bytes that are
not valid UTF-8 as lone surrogates (os.fsdecode), which no UTF-8 file can hold. So a byte
that is not part of valid UTF-8 is written as `\\xHH` (two hex digits) and a literal
backslash as `\\\\`; every other character, commas, quotes and newlines included, is written
as is (CSV quoting and JSON escapes carry those). Only names holding a backslash or such a
byte look different; CSV, JSON Lines and resume all use the escaped text.

Engines turn probabilities into a format's rows with
`digitkit.infer.results.formats.encode_predictions` (`Classified`, then the format's
encoder: no `Row` object per file on the CSV hot path); `Row` is for the general encoders and
for reading a file back (resume). A Row's path is the column's (escaped) text.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from digitkit.images import class_label_of

COLUMNS = ("path", "label", "confidence", "top_k_labels", "top_k_probs", "error")
CSV_HEADER = ",".join(COLUMNS) + "\n"
#: Probabilities are written with 6 decimals: float32 carries ~7 significant digits, and
#: 1e-6 resolves any confidence a human or a threshold cares about.
PROB_DECIMALS = 6
#: Characters that make a CSV field quoted: csv.writer's QUOTE_MINIMAL with a "\\n" line
#: terminator, and a carriage return (which standard readers take as a line end).
_CSV_SPECIAL = re.compile(r'[,"\r\n]')
#: What escape_path changes: a backslash, or a byte os.fsdecode could not decode.
_TO_ESCAPE = re.compile("[\\\\\udc80-\udcff]")
_ESCAPED = re.compile(r"\\(\\|x[0-9a-fA-F]{2})")


@dataclass(slots=True)
class Row:
    path: str
    label: int | str | None = None  # the digit, or a general classifier's class name
    confidence: float | None = None
    top_k_labels: tuple = field(default_factory=tuple)
    top_k_probs: tuple = field(default_factory=tuple)
    error: str = ""


def escape_path(path: str) -> str:
    """The path column's text for `path` (a str as os functions give it; see the module
    docstring): backslash -> `\\\\`, undecodable byte -> `\\xHH`, the rest as is."""
    if path.isascii() and "\\" not in path:
        return path  # almost every path: one C-speed check
    return _TO_ESCAPE.sub(_escape_char, path)


def _escape_char(m: re.Match) -> str:
    c = m.group()
    return "\\\\" if c == "\\" else f"\\x{ord(c) - 0xDC00:02x}"


def unescape_path(text: str) -> str:
    """The inverse of escape_path: the str that os functions take for the very same file."""
    if "\\" not in text:
        return text
    return _ESCAPED.sub(_unescape_match, text)


def _unescape_match(m: re.Match) -> str:
    code = m.group(1)
    return "\\" if code == "\\" else chr(0xDC00 + int(code[1:], 16))


def path_bytes(text: str) -> bytes:
    """The exact bytes of the file name a path column's text stands for."""
    return os.fsencode(unescape_path(text))


def _escape_all(paths: list) -> list[str]:
    if not all(type(p) is str for p in paths):
        paths = [str(p) for p in paths]
    joined = "".join(paths)
    if joined.isascii() and "\\" not in joined:
        return paths
    return [escape_path(p) for p in paths]


# -- what a chunk of rows carries -------------------------------------------------------------


@dataclass(slots=True)
class RowCounts:
    """What the summary needs of some rows: how many, the failed files (path, reason) in
    order, and the confusion counts (K, K) [true, predicted] over files in class folders
    (None: no such file)."""

    count: int
    errors: list
    confusion: np.ndarray | None


@dataclass(slots=True)
class EncodedRows(RowCounts):
    """A chunk of rows in its result format's encoding, with its counts: the batch type every
    engine yields. `data` is what that format's writer takes (`digitkit.infer.results.formats`:
    text for CSV and JSON Lines, a pyarrow Table for Parquet)."""

    data: object


# -- rows -> text ---------------------------------------------------------------------------


def make_rows(paths: list, reasons: list[str], probs: np.ndarray | None, top_k: int,
              names: tuple[str, ...] | None = None) -> list[Row]:
    """Rows for `paths`; `probs` holds one (K,) row per good path, in order. `names`: the
    class names labels are written as (None: the digit, a number)."""
    rows = []
    if probs is not None and len(probs):
        k = min(top_k, probs.shape[1])
        order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        top_p = np.take_along_axis(probs, order, axis=1)
        order_l, top_l = order.tolist(), top_p.tolist()
        if names is not None:
            order_l = [[names[i] for i in o] for o in order_l]
    j = 0
    for p, reason in zip(paths, reasons, strict=True):
        if reason:
            rows.append(Row(str(p), error=reason))
        else:
            rows.append(Row(str(p), order_l[j][0], top_l[j][0], tuple(order_l[j]),
                            tuple(top_l[j])))
            j += 1
    return rows


def csv_text(rows: Iterable[Row]) -> str:
    """Rows as CSV records (no header): csv.writer's quoting, carriage returns quoted too
    (`_csv_field`)."""
    d = PROB_DECIMALS
    return "".join(
        ",".join(map(_csv_field, (r.path, str(r.label), f"{r.confidence:.{d}f}",
                                  _labels_field(r.top_k_labels),
                                  " ".join(f"{p:.{d}f}" for p in r.top_k_probs), r.error)
                     if r.label is not None else (r.path, "", "", "", "", r.error))) + "\n"
        for r in rows)


def _labels_field(labels: tuple) -> str:
    """The CSV top_k_labels field: digits space-separated ("7 2 3"), class names as a JSON
    list (a name may hold a space; a digit field never starts with "[")."""
    if labels and isinstance(labels[0], str):
        return json.dumps(list(labels), ensure_ascii=False)
    return " ".join(map(str, labels))


def _csv_field(text: str) -> str:
    """csv.writer's QUOTE_MINIMAL, and a carriage return quoted too: csv.writer with a "\\n"
    terminator leaves a bare "\\r" unquoted, and standard readers then split the row."""
    if _CSV_SPECIAL.search(text):
        return '"' + text.replace('"', '""') + '"'
    return text


def jsonl_text(rows: Iterable[Row]) -> str:
    """Rows as JSON Lines, one object per line."""
    return "".join(json.dumps(_row_dict(r), ensure_ascii=False) + "\n" for r in rows)


def _row_dict(r: Row) -> dict:
    return {
        "path": r.path,
        "label": r.label,
        "confidence": None if r.confidence is None else round(float(r.confidence),
                                                                PROB_DECIMALS),
        "top_k_labels": list(r.top_k_labels),
        "top_k_probs": [round(float(p), PROB_DECIMALS) for p in r.top_k_probs],
        "error": r.error,
    }


@dataclass(frozen=True)
class Classified:
    """A chunk of classified files, ready for a format's encoder: `paths` escaped
    (`escape_path`), `reasons` ("" for a good file), and for the good files in order their
    probabilities (n, K) and top-k class indices / probabilities (`order`, `top`, both
    (n, k)). `names`: the class names rows carry (None: a digit model's, written as the
    digit itself, as every digit result always was)."""

    paths: list[str]
    reasons: list[str]
    probs: np.ndarray
    order: np.ndarray
    top: np.ndarray
    names: tuple[str, ...] | None = None

    @property
    def k(self) -> int:
        return self.order.shape[1]

    def rows(self) -> list[Row]:
        return make_rows(self.paths, self.reasons, self.probs, self.k, self.names)


def row_names(contract) -> tuple[str, ...] | None:
    """What rows call a contract's classes: None (the digit itself) for digit models, else
    its class names."""
    return None if contract is None or contract.is_digit else tuple(contract.class_names)


def classified(paths: list, reasons: list[str], probs: np.ndarray | None,
               top_k: int, names: tuple[str, ...] | None = None) -> Classified:
    """`Classified` for `paths` (as os functions give them); `probs` holds one (K,) row per
    good path, in order (None: none is good); `names` as `Classified.names`."""
    if probs is None or not len(probs):
        probs = np.zeros((0, 10 if names is None else len(names)), np.float32)
    k = min(top_k, probs.shape[1])
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return Classified(_escape_all(paths), reasons, probs, order,
                      np.take_along_axis(probs, order, axis=1), names)


def encode_csv(chunk: Classified) -> str:
    """`csv_text(chunk.rows())` without a Row object per file: rows are %-formatted straight
    from the top-k arrays (the same text `csv_text` gives: paths that need quoting take its
    way)."""
    if any(chunk.reasons) or chunk.names is not None:
        return csv_text(chunk.rows())  # failures or class names: the general (slower) encoder
    d, k = PROB_DECIMALS, chunk.k
    template = (f"%s,%d,%.{d}f," + " ".join(["%d"] * k) + ","
                + " ".join([f"%.{d}f"] * k) + ",\n")
    good = chunk.paths
    lines = [template % (p, o[0], t[0], *o, *t)
             for p, o, t in zip(good, chunk.order.tolist(), chunk.top.tolist(), strict=True)]
    if _CSV_SPECIAL.search("".join(good)):  # one scan of the chunk; rarely true
        for i, p in enumerate(good):
            if _CSV_SPECIAL.search(p):
                lines[i] = csv_text(make_rows([p], [""], chunk.probs[i:i + 1], k))
    return "".join(lines)


def encode_jsonl(chunk: Classified) -> str:
    return jsonl_text(chunk.rows())


def counts_of(chunk: Classified) -> RowCounts:
    """The summary's counts of a chunk."""
    pairs = list(zip(chunk.paths, chunk.reasons, strict=True))
    good = [p for p, r in pairs if not r]
    return RowCounts(len(chunk.paths), [(p, r) for p, r in pairs if r],
                     confusion_of(good, chunk.order[:, 0], chunk.names))


def confusion_of(good_paths: list[str], predicted: np.ndarray,
                 names: tuple[str, ...] | None = None) -> np.ndarray | None:
    """Confusion counts (K, K) [true, predicted] of the files whose parent folder is named
    like a class (`class_of`); `predicted`: class indices (-1: none). None: no such file."""
    k = 10 if names is None else len(names)
    truth = _true_labels(good_paths, names)
    keep = (truth >= 0) & (predicted >= 0) & (predicted < k)
    if not keep.any():
        return None
    return np.bincount(truth[keep] * k + predicted[keep], minlength=k * k).reshape(k, k)


def class_of(path: str, names: tuple[str, ...] | None = None,
             index: dict | None = None) -> int | None:
    """The class a file is filed under: the index of the class its parent folder is named
    after (digits: `class_label_of`, folders 0..9); None when it is in no class folder.
    `index`: {name: index} of `names`, when the caller has it made."""
    if names is None:
        return class_label_of(path)
    parent = os.path.basename(os.path.dirname(os.fspath(path)))
    return (index if index is not None else class_index(names)).get(parent)


def class_index(names: tuple[str, ...]) -> dict[str, int]:
    """{class name: its output index} (the first, should a name repeat)."""
    index: dict[str, int] = {}
    for i, n in enumerate(names):
        index.setdefault(n, i)
    return index


def _true_labels(paths: list[str], names: tuple[str, ...] | None = None) -> np.ndarray:
    """`class_of` of each path (-1: none), computed once per run of paths that share their
    folder (a chunk's files mostly do): it costs more than the rest of a row."""
    out = np.empty(len(paths), np.int64)
    head, label = None, -1
    index = None if names is None else class_index(names)
    for i, p in enumerate(paths):
        h = p[:p.rfind(os.sep) + 1]
        if h != head:
            head = h
            found = class_of(p, names, index)
            label = -1 if found is None else found
        out[i] = label
    return out


def label_indices(labels: list, names: tuple[str, ...] | None = None) -> np.ndarray:
    """Labels read back from a result (digits, or class names) as class indices (-1: not
    a class of `names`)."""
    if names is None:
        return np.array([-1 if lab is None else int(lab) for lab in labels], np.int64)
    index = class_index(names)
    return np.array([index.get(str(lab), -1) for lab in labels], np.int64)


# -- text -> rows (resume) ------------------------------------------------------------------


def parse_csv_record(rec: list[str], names: tuple[str, ...] | None = None) -> Row:
    """The Row of one CSV record; `names`: the class names its labels must be (None: a
    digit model's rows, labels the digits). ValueError for a record that is not a row."""
    if len(rec) != len(COLUMNS):
        raise ValueError(f"{len(rec)} fields, expected {len(COLUMNS)}")
    path, label, conf, labels, probs, error = rec
    if label == "":
        return Row(path, error=error)
    if names is None:
        return Row(path, int(label), float(conf), tuple(int(v) for v in labels.split()),
                   tuple(float(v) for v in probs.split()), error)
    top = json.loads(labels)  # a general classifier's names (see `_labels_field`)
    if label not in names or not isinstance(top, list) or not all(n in names for n in top):
        raise ValueError(f"label {label!r} is not one of the model's class names")
    return Row(path, label, float(conf), tuple(top), tuple(float(v) for v in probs.split()),
               error)


def parse_json_line(line: str, names: tuple[str, ...] | None = None) -> Row:
    """The Row of one JSON Lines line; ValueError naming what is wrong with one that is not a
    result row (resume refuses the file with it: never a traceback). `names`: the class
    names its label must be (None: a digit model's rows, labels the digits)."""
    d = json.loads(line)
    if not isinstance(d, dict) or not isinstance(d.get("path"), str):
        raise ValueError("not a result row (no path text)")
    label, confidence, error = d.get("label"), d.get("confidence"), d.get("error") or ""
    labels, probs = d.get("top_k_labels") or (), d.get("top_k_probs") or ()
    if names is not None:
        if label is not None and (not isinstance(label, str) or label not in names):
            raise ValueError(f"label {label!r} is not one of the model's class names")
    elif label is not None and (type(label) is not int or not 0 <= label <= 9):
        raise ValueError(f"label {label!r} is not a digit")
    if not (confidence is None or type(confidence) in (int, float)) or not isinstance(error, str) \
            or not isinstance(labels, (list, tuple)) or not isinstance(probs, (list, tuple)):
        raise ValueError("not a result row (a field of the wrong type)")
    return Row(d["path"], label, confidence, tuple(labels), tuple(probs), error)
