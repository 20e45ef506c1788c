"""A model's class names, in output order (groundwork of issue 18; not yet used by a command).

Two sources:

- a labels file (``--labels FILE``): UTF-8 text, one name per line in output order, or a
  JSON list of strings (a file whose first non-blank character is ``[`` or ``{``). A regular file
  only, at most MAX_LABELS_FILE bytes (`digitkit.inputs`, the one rule for what is read). Names are
  stripped of surrounding spaces; a blank name, a control character in a name (names go
  into CSV cells and model metadata), a repeated name, or a count that does not match the
  model's K outputs is refused in one line naming the file and the reason.
- a labelled folder: its subfolder names, sorted, hidden ones (starting with ".") ignored,
  links to folders followed: the order Keras' ``image_dataset_from_directory`` gives its
  classes, so a model trained on the folder with Keras gets its names in its output order.

Errors are DataError(path, reason), one line (exit 1).
"""

from __future__ import annotations

import json
import os
import unicodedata

from digitkit.errors import DataError
from digitkit.inputs import read_regular

#: Largest labels file read (4 MiB): ImageNet-21k's 21,843 names take ~0.5 MB.
MAX_LABELS_FILE = 4 * 2**20


def read_labels(path: str | os.PathLike, k: int | None = None) -> tuple[str, ...]:
    """The class names in the labels file `path`, in output order; with `k`, exactly k of
    them. Raises DataError(path, reason)."""
    path = os.fspath(path)
    data = read_regular(path, MAX_LABELS_FILE, error=_refused)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataError(path, f"not UTF-8 text (byte {err.start})") from err
    if text.lstrip()[:1] in ("[", "{"):  # JSON (an object is refused as not a list)
        names, where = _json_names(path, text), "name"
    else:
        names, where = _line_names(text), "line"
    return check_names(path, names, k, where)


def _refused(path, reason: str) -> DataError:
    return DataError(path, reason.replace("file too large", "labels file too large"))


def folder_class_names(root: str | os.PathLike, k: int | None = None) -> tuple[str, ...]:
    """The class names of a labelled folder: its subfolders, sorted by name (Python's string
    order, as Keras sorts them), hidden ones ignored; with `k`, exactly k of them. Raises
    DataError(root, reason)."""
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise DataError(root, "no such folder" if not os.path.lexists(root)
                        else "not a folder (a labelled folder holds one subfolder per class)")
    try:
        entries = os.listdir(root)
    except OSError as err:
        raise DataError(root, f"cannot list ({err.strerror or err})") from err
    names = sorted(n for n in entries
                   if not n.startswith(".") and os.path.isdir(os.path.join(root, n)))
    if not names:
        raise DataError(root, "no class subfolders (a labelled folder holds one subfolder per "
                              "class)")
    return check_names(root, names, k, "folder")


def check_names(path, names: list[str], k: int | None, where: str = "name") -> tuple[str, ...]:
    """`names` if they are usable class names (k of them when k is given); else
    DataError(path, reason). `where` is what a position is called in the reason (line,
    name, folder)."""
    first: dict[str, int] = {}
    for i, name in enumerate(names, 1):
        if not name:
            raise DataError(path, f"{where} {i} is a blank class name")
        bad = next((c for c in name if unicodedata.category(c) in ("Cc", "Zl", "Zp")),
                   None)
        if bad is not None:
            raise DataError(path, f"{where} {i}: class name {name!r} holds a control "
                                  f"character ({bad!r})")
        if name in first:
            raise DataError(path, f"{where}s {first[name]} and {i}: class name {name!r} "
                                  f"appears twice")
        first[name] = i
    if k is not None and len(names) != k:
        raise DataError(path, f"{len(names)} class names for a model with {k} outputs")
    if len(names) < 2:
        n = len(names)
        raise DataError(path, f"{n} class name{'' if n == 1 else 's'}; a classifier has at "
                              f"least 2")
    return tuple(names)


def _line_names(text: str) -> list[str]:
    # Trailing blank lines (an editor's final newlines) are not names; blank lines between
    # names are refused, since every later name would shift by one output.
    return [line.strip() for line in text.rstrip().splitlines()] if text.strip() else []


_JSON_KIND = {dict: "object", str: "string", int: "number", float: "number", bool: "boolean"}


def _json_names(path: str, text: str) -> list[str]:
    try:
        names = json.loads(text)
    except ValueError as err:
        raise DataError(path, f"not a JSON list of class names ({err})") from err
    if not isinstance(names, list):
        kind = _JSON_KIND.get(type(names), "value")
        raise DataError(path, f"not a JSON list of class names (a JSON {kind})")
    for i, name in enumerate(names, 1):
        if not isinstance(name, str):
            raise DataError(path, f"name {i} is not a string ({json.dumps(name)[:40]})")
    return [n.strip() for n in names]
