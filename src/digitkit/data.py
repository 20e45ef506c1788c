"""MNIST data: IDX and npz parsing with validation, source resolution, verified download.

Resolution order for `load_mnist(path)`:
  1. `path` (the CLI's --data): a directory of IDX files (gzipped or not), a `mnist.npz`,
     or a labelled image folder (see `load_image_folder`)
  2. the DIGITKIT_DATA environment variable, same forms
  3. the user cache directory (DIGITKIT_CACHE, else $XDG_CACHE_HOME/digitkit, else ~/.cache/digitkit)
  4. a download from the public mirrors into that cache, verified by md5 of the decompressed bytes
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from digitkit.errors import DataError

ENV_DATA = "DIGITKIT_DATA"
ENV_CACHE = "DIGITKIT_CACHE"
ENV_MIRRORS = "DIGITKIT_MIRRORS"  # comma-separated base URLs, tried in order

#: The canonical files and the md5 of their decompressed bytes (LeCun, Cortes, Burges).
MNIST_FILES = {
    "train_images": ("train-images-idx3-ubyte", "6bbc9ace898e44ae57da46a324031adb", 60000),
    "train_labels": ("train-labels-idx1-ubyte", "a25bea736e30d166cdddb491f175f624", 60000),
    "test_images": ("t10k-images-idx3-ubyte", "2646ac647ad5339dbf082846283269ea", 10000),
    "test_labels": ("t10k-labels-idx1-ubyte", "27ae3e4e09519cfbb04c329615203637", 10000),
}

#: Public mirrors serving the gzipped IDX files; the original host is last because it is
#: often unavailable.
DEFAULT_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)

_IDX_IMAGES_MAGIC = 0x00000803
_IDX_LABELS_MAGIC = 0x00000801


@dataclass
class MnistData:
    x_train: np.ndarray  # (N, 28, 28) uint8
    y_train: np.ndarray  # (N,) uint8
    x_test: np.ndarray
    y_test: np.ndarray
    source: str  # human-readable description of where the data came from
    checksums: dict = field(default_factory=dict)  # file name -> md5 of decompressed bytes


def read_idx(path: str | os.PathLike, expect_md5: str | None = None) -> tuple[np.ndarray, str]:
    """Read one IDX file (gzipped or raw). Returns (array, md5 of the decompressed bytes)."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise DataError(p, "no such file") from None
    except OSError as e:
        raise DataError(p, f"cannot read ({e.strerror or e})") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(p, f"corrupt or truncated gzip data ({e})") from None
    md5 = hashlib.md5(raw).hexdigest()
    if len(raw) < 8:
        raise DataError(p, f"too short for an IDX header ({len(raw)} bytes)")
    magic = struct.unpack(">I", raw[:4])[0]
    if magic not in (_IDX_IMAGES_MAGIC, _IDX_LABELS_MAGIC):
        raise DataError(p, f"not an MNIST IDX file (magic 0x{magic:08x}, "
                        f"expected 0x{_IDX_IMAGES_MAGIC:08x} or 0x{_IDX_LABELS_MAGIC:08x})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(p, "truncated IDX header")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    if magic == _IDX_IMAGES_MAGIC and dims[1:] != (28, 28):
        raise DataError(p, f"images are {'x'.join(map(str, dims[1:]))}, expected 28x28")
    expected = int(np.prod(dims, dtype=np.int64))
    body = len(raw) - header
    if body != expected:
        what = "truncated" if body < expected else "has trailing bytes"
        raise DataError(p, f"{what}: header promises {expected} data bytes, file holds {body}")
    if expect_md5 is not None and md5 != expect_md5:
        raise DataError(p, f"checksum mismatch: md5 {md5}, expected {expect_md5}")
    arr = np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)
    if magic == _IDX_LABELS_MAGIC and arr.size and int(arr.max()) > 9:
        raise DataError(p, f"label {int(arr.max())} out of range 0..9")
    return arr, md5
