"""Evaluation reports: the per-class classification report, confusion matrix, training curves.

The text report follows scikit-learn's `classification_report` layout, because that is what
people in this field read; it is computed here with numpy rather than pulling in scikit-learn
and SciPy (~50 MB) for forty lines of arithmetic.
"""

from __future__ import annotations

import numpy as np

from digitkit.model.contract import DIGIT_CONTRACT

CLASS_NAMES = DIGIT_CONTRACT.class_names  # the default: digit reports
#: Past this many classes a confusion matrix's cells carry colour only, no count.
MAX_CELL_TEXT = 30


def confusion_matrix(y_true, y_pred, num_classes: int = len(CLASS_NAMES)) -> np.ndarray:
    """Rows are true classes, columns predicted classes (scikit-learn's convention)."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    idx = y_true * num_classes + y_pred
    return np.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class_metrics(cm: np.ndarray) -> dict:
    """Precision, recall, f1 and support per class; 0 where undefined (scikit-learn's default)."""
    tp = np.diag(cm).astype(np.float64)
    predicted = cm.sum(axis=0).astype(np.float64)
    support = cm.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        denom = precision + recall
        f1 = np.where(denom > 0, 2 * precision * recall / denom, 0.0)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support}


def classification_report(y_true, y_pred, target_names=CLASS_NAMES, digits: int = 4) -> str:
    """Text report in scikit-learn's layout (4 digits: differences at 99.5% live in the third)."""
    cm = confusion_matrix(y_true, y_pred, len(target_names))
    m = per_class_metrics(cm)
    total = int(m["support"].sum())
    width = max(len("weighted avg"), max(len(n) for n in target_names), digits)
    headers = ("precision", "recall", "f1-score", "support")
    out = ("{:>{w}s} " + " {:>9}" * 4).format("", *headers, w=width) + "\n\n"
    row = "{:>{w}s} " + " {:>9.{d}f}" * 3 + " {:>9}\n"
    for i, name in enumerate(target_names):
        out += row.format(name, m["precision"][i], m["recall"][i], m["f1"][i],
                          int(m["support"][i]), w=width, d=digits)
    out += "\n"
    accuracy = float(np.trace(cm)) / total if total else 0.0
    out += ("{:>{w}s} " + " {:>9}" * 2 + " {:>9.{d}f} {:>9}\n").format(
        "accuracy", "", "", accuracy, total, w=width, d=digits)
    weights = m["support"] / total if total else np.zeros(len(target_names))
    for label, avg in (("macro avg", np.mean), ("weighted avg", None)):
        vals = [avg(m[k]) if avg else float(np.sum(m[k] * weights))
                for k in ("precision", "recall", "f1")]
        out += row.format(label, *vals, total, w=width, d=digits)
    return out


def report_dict(y_true, y_pred, target_names=CLASS_NAMES) -> dict:
    """The same figures as `classification_report`, for JSON records."""
    cm = confusion_matrix(y_true, y_pred, len(target_names))
    m = per_class_metrics(cm)
    total = int(m["support"].sum())
    return {
        "accuracy": float(np.trace(cm)) / total if total else 0.0,
        "per_class": {
            name: {"precision": float(m["precision"][i]), "recall": float(m["recall"][i]),
                   "f1": float(m["f1"][i]), "support": int(m["support"][i])}
            for i, name in enumerate(target_names)
        },
        "confusion_matrix": cm.tolist(),
    }


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: works on headless machines and never opens a window
    import matplotlib.pyplot as plt

    return plt


def save_confusion_matrix_png(cm: np.ndarray, path, title: str = "Confusion matrix",
                              target_names=CLASS_NAMES) -> None:
    from digitkit.artifacts import atomic_path

    plt = _pyplot()
    cm = np.asarray(cm)
    k = len(target_names)
    # Class names, not indices, on both axes: the figure grows with the classes, long names
    # are slanted, and past MAX_CELL_TEXT classes the counts would be unreadable, so only
    # the colours remain.
    side = min(24.0, max(6.0, 0.35 * k + 2.5))  # (7, 6) up to 10 classes, as for digits
    fig, ax = plt.subplots(figsize=(side + 1.0, side), dpi=110)
    # Log-ish colour scale would hide the diagonal; row-normalised colours show recall per class
    # while the cell text keeps the raw counts.
    rows = cm.sum(axis=1, keepdims=True).astype(np.float64)
    norm = np.divide(cm, rows, out=np.zeros(cm.shape), where=rows > 0)
    im = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    ticks = np.arange(k)
    long = max((len(str(n)) for n in target_names), default=0) > 2
    small = 7 if k > 20 else None
    ax.set_xticks(ticks, labels=target_names, rotation=45 if long else 0,
                  ha="right" if long else "center", fontsize=small)
    ax.set_yticks(ticks, labels=target_names, fontsize=small)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if k <= MAX_CELL_TEXT:
        for i in range(cm.shape[0]):
            for j in range(cm.shape[1]):
                if cm[i, j]:
                    ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if norm[i, j] > 0.5 else "black")
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def save_history_png(history: dict, path, title: str = "Training history",
                     validation_label: str = "validation") -> None:
    """Loss and accuracy per epoch, train and validation, side by side."""
    from digitkit.artifacts import atomic_path

    plt = _pyplot()
    epochs = np.arange(1, len(history.get("loss", [])) + 1)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=110)
    for ax, key, label in ((axes[0], "loss", "loss"), (axes[1], "accuracy", "accuracy")):
        if key in history:
            ax.plot(epochs, history[key], "o-", label=f"train {label}")
        if f"val_{key}" in history:
            ax.plot(epochs, history[f"val_{key}"], "s--", label=f"{validation_label} {label}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.set_xticks(epochs)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
