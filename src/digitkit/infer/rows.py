"""Result rows of batch inference and their text: CSV or JSON Lines, the same for both engines.

Columns: path, label, confidence, top_k_labels, top_k_probs, error.
- CSV (the default): top-k values space-separated in one field ("7 2 3"); label and
  confidence empty on error.
- JSON Lines (`.jsonl` / `.ndjson`): one object per line, top-k as arrays, null label and
  confidence on error.
- `error` is the empty string on success.

Engines turn probabilities into text with `encode_predictions` (no `Row` object per file on
the hot path); `Row` is for the general encoder and for reading a file back (resume).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from digitkit.images import class_label_of
from digitkit.infer.spec import EncodedRows

COLUMNS = ("path", "label", "confidence", "top_k_labels", "top_k_probs", "error")
CSV_HEADER = ",".join(COLUMNS) + "\n"
#: Probabilities are written with 6 decimals: float32 carries ~7 significant digits, and
#: 1e-6 resolves any confidence a human or a threshold cares about.
PROB_DECIMALS = 6
#: Characters that make csv.writer quote a field (QUOTE_MINIMAL, "\\n" line terminator).
_CSV_SPECIAL = re.compile(r'[,"\r\n]')


@dataclass(slots=True)
class Row:
    path: str
    label: int | None = None
    confidence: float | None = None
    top_k_labels: tuple = field(default_factory=tuple)
    top_k_probs: tuple = field(default_factory=tuple)
    error: str = ""


def format_for(path: str | os.PathLike | None) -> str:
    """CSV unless the output file's name ends in .jsonl or .ndjson."""
    if path is None:
        return "csv"
    return "jsonl" if Path(path).suffix.lower() in (".jsonl", ".ndjson") else "csv"


# -- rows -> text ---------------------------------------------------------------------------


def make_rows(paths: list, reasons: list[str], probs: np.ndarray | None, top_k: int) -> list[Row]:
    """Rows for `paths`; `probs` holds one (10,) row per good path, in order."""
    rows = []
    if probs is not None and len(probs):
        k = min(top_k, probs.shape[1])
        order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        top_p = np.take_along_axis(probs, order, axis=1)
        order_l, top_l = order.tolist(), top_p.tolist()
    j = 0
    for p, reason in zip(paths, reasons, strict=True):
        if reason:
            rows.append(Row(str(p), error=reason))
        else:
            rows.append(Row(str(p), order_l[j][0], top_l[j][0], tuple(order_l[j]),
                            tuple(top_l[j])))
            j += 1
    return rows


def encode_rows(rows: Iterable[Row], fmt: str) -> str:
    if fmt == "jsonl":
        return "".join(json.dumps(_row_dict(r), ensure_ascii=False) + "\n" for r in rows)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    d = PROB_DECIMALS
    w.writerows(
        (r.path, r.label, f"{r.confidence:.{d}f}", " ".join(map(str, r.top_k_labels)),
         " ".join(f"{p:.{d}f}" for p in r.top_k_probs), r.error)
        if r.label is not None else (r.path, "", "", "", "", r.error)
        for r in rows
    )
    return buf.getvalue()


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


def encode_predictions(paths: list, reasons: list[str], probs: np.ndarray | None, top_k: int,
                       fmt: str) -> EncodedRows:
    """`encode_rows(make_rows(...), fmt)` plus the summary's counts, without a Row object
    per file: CSV rows are %-formatted straight from the top-k arrays (the same text
    csv.writer gives: paths that csv would quote take csv's way)."""
    errors = [(str(p), r) for p, r in zip(paths, reasons, strict=True) if r]
    if probs is None or not len(probs):
        probs = np.zeros((0, 10), np.float32)
    k = min(top_k, probs.shape[1])
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    top = np.take_along_axis(probs, order, axis=1)
    good = [str(p) for p, r in zip(paths, reasons, strict=True) if not r]
    confusion = _confusion(good, order[:, 0])
    if fmt != "csv" or errors:
        # JSON Lines, and chunks holding failures: the general (slower) encoder.
        text = encode_rows(make_rows(paths, reasons, probs, top_k), fmt)
        return EncodedRows(text, len(paths), errors, confusion)
    d = PROB_DECIMALS
    template = (f"%s,%d,%.{d}f," + " ".join(["%d"] * k) + ","
                + " ".join([f"%.{d}f"] * k) + ",\n")
    lines = [template % (p, o[0], t[0], *o, *t)
             for p, o, t in zip(good, order.tolist(), top.tolist(), strict=True)]
    for i, p in enumerate(good):
        if _CSV_SPECIAL.search(p):
            lines[i] = encode_rows(make_rows([p], [""], probs[i:i + 1], top_k), "csv")
    return EncodedRows("".join(lines), len(paths), errors, confusion)


def _confusion(good_paths: list[str], predicted: np.ndarray) -> np.ndarray | None:
    truth = _true_labels(good_paths)
    keep = (truth >= 0) & (predicted < 10)
    if not keep.any():
        return None
    return np.bincount(truth[keep] * 10 + predicted[keep], minlength=100).reshape(10, 10)


def _true_labels(paths: list[str]) -> np.ndarray:
    """`class_label_of` of each path (-1: none), computed once per run of paths that share
    their folder (a chunk's files mostly do): it costs more than the rest of a row."""
    out = np.empty(len(paths), np.int64)
    head, label = None, -1
    for i, p in enumerate(paths):
        h = p[:p.rfind(os.sep) + 1]
        if h != head:
            head = h
            found = class_label_of(p)
            label = -1 if found is None else found
        out[i] = label
    return out


# -- text -> rows (resume) ------------------------------------------------------------------


def parse_csv_record(rec: list[str]) -> Row:
    if len(rec) != len(COLUMNS):
        raise ValueError(f"{len(rec)} fields, expected {len(COLUMNS)}")
    path, label, conf, labels, probs, error = rec
    if label == "":
        return Row(path, error=error)
    return Row(path, int(label), float(conf), tuple(int(v) for v in labels.split()),
               tuple(float(v) for v in probs.split()), error)


def parse_json_line(line: str) -> Row:
    d = json.loads(line)
    if not isinstance(d, dict) or "path" not in d:
        raise ValueError("not a result row")
    return Row(d["path"], d.get("label"), d.get("confidence"), tuple(d.get("top_k_labels") or ()),
               tuple(d.get("top_k_probs") or ()), d.get("error") or "")
