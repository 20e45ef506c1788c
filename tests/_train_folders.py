"""Labelled folders for the `train DIR` tests, cut from the `image_set` fixture (RGB and gray,
every format and pixel kind, several sizes), with a few bad files added."""

from __future__ import annotations

import shutil
from pathlib import Path

#: The bad files `labelled_copy(bad=True)` adds: (class folder, name, bytes) and the words of
#: the reason the decoder gives for each.
BAD_FILES = (("cat", "truncated.png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"),
             ("coins", "notes.jpg", b"these are not the pixels you are looking for\n"),
             ("brick", "empty.webp", b""))


def labelled_copy(image_set: Path, dest: Path, bad: bool = True, per_class: int | None = None,
                  classes=None) -> Path:
    """A writable copy of the image set's class folders (the first `per_class` files of each
    of `classes`), plus BAD_FILES when `bad`."""
    dest = Path(dest)
    for folder in sorted(p for p in Path(image_set).iterdir() if p.is_dir()):
        if classes is not None and folder.name not in classes:
            continue
        files = sorted(folder.iterdir())[:per_class]
        (dest / folder.name).mkdir(parents=True)
        for f in files:
            shutil.copyfile(f, dest / folder.name / f.name)
    if bad:
        for cls, name, data in BAD_FILES:
            if (dest / cls).is_dir():
                (dest / cls / name).write_bytes(data)
    return dest


def split_copy(image_set: Path, dest: Path, classes=None) -> Path:
    """train/ (the first 24 files of a class), val/ (the next 8) and test/ (the rest)."""
    dest = Path(dest)
    for folder in sorted(p for p in Path(image_set).iterdir() if p.is_dir()):
        if classes is not None and folder.name not in classes:
            continue
        files = sorted(folder.iterdir())
        for split, part in (("train", files[:24]), ("val", files[24:32]),
                            ("test", files[32:])):
            (dest / split / folder.name).mkdir(parents=True)
            for f in part:
                shutil.copyfile(f, dest / split / folder.name / f.name)
    return dest
