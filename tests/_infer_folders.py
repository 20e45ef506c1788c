"""Inputs and expected answers for the infer tests.

`class_folders` copies real MNIST test PNGs into class folders 0..9 (optionally with a `bad/`
folder of files no decoder takes); `numpy_answers` gives, for result paths of those files,
the linear model's labels and the true labels computed with numpy straight from the IDX
arrays: an answer the inference pipeline cannot influence.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from _onnx_model import predict_numpy

#: File names of the shared PNG copies are their index in the 70,000 MNIST images.
FIRST_TEST_INDEX = 60000


def class_folders(png_test_dir: Path, root: Path, per_class: int = 30,
                  bad: bool = False) -> Path:
    for d in range(10):
        (root / str(d)).mkdir(parents=True)
        for f in sorted((png_test_dir / str(d)).iterdir())[:per_class]:
            shutil.copyfile(f, root / str(d) / f.name)
    if bad:
        (root / "bad").mkdir()
        (root / "bad" / "empty.png").write_bytes(b"")
        (root / "bad" / "text.png").write_text("this is not a picture\n")
        good = next((png_test_dir / "7").iterdir()).read_bytes()
        (root / "bad" / "truncated.png").write_bytes(good[: len(good) // 2])
    return root


def numpy_answers(paths, mnist_test, w, b) -> tuple[np.ndarray, np.ndarray]:
    """(predicted labels, true labels) of the class-folder files among `paths`, in order."""
    x, y = mnist_test
    idx = [int(os.path.basename(p)[:-4]) - FIRST_TEST_INDEX for p in paths]
    return predict_numpy(w, b, x[idx]), y[idx].astype(np.int64)
