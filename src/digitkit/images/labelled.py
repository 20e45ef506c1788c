"""A labelled folder (one subfolder per class) as tensors: what `--calibration DIR` (convention
detection, export validation, int8 calibration, accuracy) and `train DIR` read.

The classes are the subfolder names in Keras' order (`digitkit.model.labels.folder_class_names`),
or matched by name against a model's class names when it has them (a folder for a class the
model does not have is refused; a class with no folder is allowed: it simply has no images).
Files are found by the same discovery rules as `infer` (image names only, hidden entries
skipped, links to folders followed once), decoded by the same pixel pipeline as `infer`
(`digitkit.images.pixels`, or the MNIST digit normalisation for digit models), so the tensors
detection and validation see are exactly the ones infer feeds. A bad file is reported
(`failures`) and skipped, never the end of the run.

`per_class` caps the files read per class, taken evenly spaced over each class's sorted list
(the first files of a folder are often one session's, so a prefix would be biased).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from digitkit.errors import DataError
from digitkit.images.discovery import iter_image_paths
from digitkit.model.labels import folder_class_names


@dataclass
class LabelledSet:
    """Decoded images of a labelled folder: `pixels` float32 (n, *pixels_shape) 0..255,
    `labels` int64 (n,) indices into `class_names`, `paths` of the decoded files (same
    order), `failures` [(path, reason)] of the files that could not be decoded."""

    root: str
    class_names: tuple[str, ...]
    pixels: np.ndarray
    labels: np.ndarray
    paths: list[str]
    failures: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)

    def counts(self) -> dict[str, int]:
        """Images per class, every class named (0 where it has none)."""
        found = np.bincount(self.labels, minlength=len(self.class_names))
        return {name: int(n) for name, n in zip(self.class_names, found, strict=True)}


def list_labelled(root: str | os.PathLike, class_names=None
                  ) -> tuple[tuple[str, ...], list[tuple[str, int]]]:
    """(class names, [(path, class index)]) of a labelled folder, files in discovery order
    per class. With `class_names` (the model's), folders are matched to them by name."""
    root = os.fspath(root)
    folders = folder_class_names(root)
    if class_names is None:
        names = folders
    else:
        names = tuple(class_names)
        unknown = [f for f in folders if f not in names]
        if unknown:
            shown = ", ".join(repr(u) for u in unknown[:3])
            raise DataError(root, f"class folder{'s' if len(unknown) > 1 else ''} {shown} "
                                  f"not among the model's {len(names)} class names")
    index = {n: i for i, n in enumerate(names)}
    files = [(p, index[f]) for f in folders
             for p in iter_image_paths([os.path.join(root, f)])]
    return names, files


def _spread(items: list, n: int | None) -> list:
    if n is None or len(items) <= n:
        return items
    return [items[(i * len(items)) // n] for i in range(n)]


def load_labelled(root: str | os.PathLike, decode: Callable[[list[str]],
                  tuple[np.ndarray, list[str]]], class_names=None,
                  per_class: int | None = None) -> LabelledSet:
    """Decode a labelled folder with `decode(paths) -> (pixels of the good files, one reason
    per path)` (e.g. `functools.partial(load_pixels_batch, policy=...)`). DataError when the
    folder holds no decodable image."""
    root = os.fspath(root)
    names, files = list_labelled(root, class_names)
    chosen = []
    for k in range(len(names)):
        chosen += _spread([f for f in files if f[1] == k], per_class)
    paths = [p for p, _ in chosen]
    pixels, reasons = decode(paths)
    good = [i for i, r in enumerate(reasons) if not r]
    failures = [(paths[i], r) for i, r in enumerate(reasons) if r]
    if not good:
        why = f"; first failure: {failures[0][0]}: {failures[0][1]}" if failures else ""
        raise DataError(root, f"no decodable images in its class folders{why}")
    labels = np.asarray([chosen[i][1] for i in good], np.int64)
    return LabelledSet(root, names, pixels, labels, [paths[i] for i in good], failures)


__all__ = ["LabelledSet", "list_labelled", "load_labelled"]
