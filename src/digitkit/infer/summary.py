"""What a run reports at the end: counts, speed, and accuracy over files in class folders."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from digitkit.infer.results.rows import Row, RowCounts, class_index, class_of


@dataclass
class InferSummary:
    output: str | None = None
    written: int = 0  # rows written by this run
    resumed: int = 0  # rows already in the file before this run
    failed: int = 0  # error rows, this run and resumed ones
    seconds: float = 0.0
    runtime: str | None = None  # what served the run: a runtime table row, or natural one
    precision: str | None = None
    #: confusion counts over files in class-named folders: [true, predicted]
    confusion: np.ndarray = field(default_factory=lambda: np.zeros((10, 10), np.int64))
    #: the class names rows carry (None: a digit model's digits; `rows.row_names`)
    class_names: tuple[str, ...] | None = None
    #: (folder, its class label) of the last resumed row: see add_resumed
    _folder: tuple = field(default=(None, None), repr=False, compare=False)

    def __post_init__(self):
        k = len(self.names)
        if self.confusion.shape != (k, k):
            self.confusion = np.zeros((k, k), np.int64)
        self._index = class_index(self.names)

    @property
    def names(self) -> tuple[str, ...]:
        """The classes, in output order (digits: "0".."9")."""
        return self.class_names or tuple(str(d) for d in range(10))

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
            self._folder = (head, class_of(path, self.class_names, self._index))
        truth = self._folder[1]
        if truth is None or row.label is None:
            return
        predicted = self._index.get(str(row.label))
        if predicted is not None:
            self.confusion[truth, predicted] += 1


def format_summary(summary: InferSummary) -> str:
    lines = []
    total = summary.total
    what = f"{summary.written:,} classified in {summary.seconds:.1f} s " \
           f"({summary.images_per_second:,.0f} images/s)"
    if summary.resumed:
        what += f", {summary.resumed:,} already done (resumed)"
    lines.append(f"{total:,} files: {what}; {summary.failed:,} failed")
    if summary.runtime:
        lines.append(f"runtime: {summary.runtime}, {summary.precision}")
    if summary.labelled:
        lines.append(f"accuracy over {summary.labelled:,} files in class folders: "
                     f"{summary.accuracy:.4f}")
        lines.append("")
        lines.append(classification_report_from_confusion(summary.confusion, summary.class_names))
    return "\n".join(lines)


def classification_report_from_confusion(cm: np.ndarray, names=None) -> str:
    """Per-class precision/recall/F1 from confusion counts, in the report's one layout;
    `names`: the classes (None: the digits)."""
    from digitkit.reports import classification_report

    k = len(cm)
    y_true = np.repeat(np.repeat(np.arange(k), k), cm.ravel())
    y_pred = np.repeat(np.tile(np.arange(k), k), cm.ravel())
    if names is None:
        return classification_report(y_true, y_pred)
    return classification_report(y_true, y_pred, target_names=list(names))


def save_confusion(summary: InferSummary, path: str | os.PathLike, force: bool = False) -> Path:
    """Write the confusion matrix: .csv as counts, anything else as a PNG figure."""
    from digitkit.artifacts import atomic_path, guard_output

    p = Path(path)
    guard_output(p, force)
    cm = summary.confusion
    if p.suffix.lower() == ".csv":
        import csv
        import io

        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["true\\pred", *summary.names])
        for t, name in enumerate(summary.names):
            w.writerow([name, *cm[t]])
        text = buf.getvalue()
        with atomic_path(p) as tmp:
            tmp.write_text(text, encoding="utf-8")
        return p
    from digitkit.reports import save_confusion_matrix_png

    with atomic_path(p) as tmp:
        save_confusion_matrix_png(cm, tmp, f"Confusion matrix ({summary.labelled:,} images)",
                                  target_names=list(summary.names))
    return p
