"""What a run reports at the end: counts, speed, and accuracy over files in class folders."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from digitkit.images import class_label_of
from digitkit.infer.results.rows import Row, RowCounts


@dataclass
class InferSummary:
    output: str | None = None
    written: int = 0  # rows written by this run
    resumed: int = 0  # rows already in the file before this run
    failed: int = 0  # error rows, this run and resumed ones
    seconds: float = 0.0
    #: confusion counts over files in class-named folders: [true, predicted]
    confusion: np.ndarray = field(default_factory=lambda: np.zeros((10, 10), np.int64))
    #: (folder, its class label) of the last resumed row: see add_resumed
    _folder: tuple = field(default=(None, None), repr=False, compare=False)

    @property
    def total(self) -> int:
        return self.written + self.resumed

    @property
    def labelled(self) -> int:
        return int(self.confusion.sum())

    @property
    def accuracy(self) -> float | None:
        n = self.labelled
        return float(np.trace(self.confusion)) / n if n else None

    @property
    def images_per_second(self) -> float:
        return self.written / self.seconds if self.seconds > 0 else 0.0

    def add_batch(self, batch: RowCounts) -> None:
        self.written += batch.count
        self.failed += len(batch.errors)
        if batch.confusion is not None:
            self.confusion += batch.confusion

    def add_resumed(self, row: Row) -> None:
        """Count a row already in the output file (resume). Runs once per row of files of
        millions of rows: the class folder is looked up once per run of rows sharing it."""
        self.resumed += 1
        if row.error:
            self.failed += 1
            return
        path = row.path
        head = path[:path.rfind(os.sep) + 1]
        if head != self._folder[0]:
            self._folder = (head, class_label_of(path))
        truth = self._folder[1]
        if truth is not None and row.label is not None and 0 <= row.label < 10:
            self.confusion[truth, row.label] += 1


def format_summary(summary: InferSummary) -> str:
    lines = []
    total = summary.total
    what = f"{summary.written:,} classified in {summary.seconds:.1f} s " \
           f"({summary.images_per_second:,.0f} images/s)"
    if summary.resumed:
        what += f", {summary.resumed:,} already done (resumed)"
    lines.append(f"{total:,} files: {what}; {summary.failed:,} failed")
    if summary.labelled:
        lines.append(f"accuracy over {summary.labelled:,} files in class folders: "
                     f"{summary.accuracy:.4f}")
        lines.append("")
        lines.append(classification_report_from_confusion(summary.confusion))
    return "\n".join(lines)


def classification_report_from_confusion(cm: np.ndarray) -> str:
    """Per-class precision/recall/F1 from confusion counts, in the report's one layout."""
    from digitkit.reports import classification_report

    y_true = np.repeat(np.repeat(np.arange(10), 10), cm.ravel())
    y_pred = np.repeat(np.tile(np.arange(10), 10), cm.ravel())
    return classification_report(y_true, y_pred)


def save_confusion(summary: InferSummary, path: str | os.PathLike, force: bool = False) -> Path:
    """Write the confusion matrix: .csv as counts, anything else as a PNG figure."""
    from digitkit.artifacts import atomic_path, guard_output

    p = Path(path)
    guard_output(p, force)
    cm = summary.confusion
    if p.suffix.lower() == ".csv":
        text = "true\\pred," + ",".join(map(str, range(10))) + "\n" + "".join(
            f"{t}," + ",".join(map(str, cm[t])) + "\n" for t in range(10))
        with atomic_path(p) as tmp:
            tmp.write_text(text)
        return p
    from digitkit.reports import save_confusion_matrix_png

    with atomic_path(p) as tmp:
        save_confusion_matrix_png(cm, tmp, f"Confusion matrix ({summary.labelled:,} images)")
    return p
