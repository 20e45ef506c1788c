"""digitkit.infer.summary: the end-of-run report and the confusion matrix file."""

from __future__ import annotations

import numpy as np
import pytest

from digitkit.errors import OutputExistsError
from digitkit.infer.results.rows import Row, RowCounts
from digitkit.infer.summary import InferSummary, format_summary, save_confusion


def _summary() -> InferSummary:
    s = InferSummary(seconds=2.0)
    cm = np.zeros((10, 10), np.int64)
    cm[3, 3], cm[3, 5], cm[7, 7] = 6, 2, 2
    s.add_batch(RowCounts(12, [("x.png", "empty file"), ("y.png", "empty file")], cm))
    s.add_resumed(Row("/d/7/a.png", 1, 0.9, (1,), (0.9,)))
    s.add_resumed(Row("/d/b.png", 1, 0.9, (1,), (0.9,)))
    s.add_resumed(Row("/d/7/c.png", error="truncated"))
    return s


def test_counts_and_accuracy():
    s = _summary()
    assert (s.written, s.resumed, s.total, s.failed) == (12, 3, 15, 3)
    assert s.labelled == 11 and s.confusion[7, 1] == 1
    assert s.accuracy == 8 / 11
    assert s.images_per_second == 6.0
    assert InferSummary().accuracy is None and InferSummary().images_per_second == 0.0


def test_format_summary():
    text = format_summary(_summary())
    lines = text.splitlines()
    assert lines[0] == ("15 files: 12 classified in 2.0 s (6 images/s), 3 already done "
                        "(resumed); 3 failed")
    assert lines[1] == "accuracy over 11 files in class folders: 0.7273"
    assert "precision" in text and "recall" in text
    assert format_summary(InferSummary(written=4, seconds=1.0)) == \
        "4 files: 4 classified in 1.0 s (4 images/s); 0 failed"


def test_save_confusion_csv_and_png(tmp_path):
    s = _summary()
    p = save_confusion(s, tmp_path / "cm.csv")
    lines = p.read_text().splitlines()
    assert lines[0] == "true\\pred,0,1,2,3,4,5,6,7,8,9"
    assert lines[4] == "3,0,0,0,6,0,2,0,0,0,0"
    with pytest.raises(OutputExistsError):
        save_confusion(s, p)
    png = save_confusion(s, tmp_path / "cm.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
