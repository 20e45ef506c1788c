"""MNIST data: IDX and npz parsing with validation, source resolution, verified download.

Resolution order for `load_mnist(path)`:
  1. `path` (the CLI's --data): a directory of IDX files (gzipped or not), a `mnist.npz`,
     or a labelled image folder (see `load_image_folder`)
  2. the DIGITKIT_DATA environment variable, same forms
  3. the user cache directory: DIGITKIT_CACHE, else $XDG_CACHE_HOME/digitkit,
     else ~/.cache/digitkit
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
    except FileNotFoundError as err:
        raise DataError(p, "no such file") from err
    except OSError as err:
        raise DataError(p, f"cannot read ({err.strerror or err})") from err
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise DataError(p, f"corrupt or truncated gzip data ({err})") from err
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


def _find_idx(directory: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        p = directory / name
        if p.is_file():
            return p
    return None


def load_idx_dir(directory: str | os.PathLike, verify: bool = True) -> MnistData:
    """Load the four canonical IDX files from `directory` (gzipped or not)."""
    d = Path(directory)
    arrays, checksums = {}, {}
    for key, (stem, md5, count) in MNIST_FILES.items():
        p = _find_idx(d, stem)
        if p is None:
            raise DataError(d / (stem + ".gz"), "missing (also looked for the uncompressed name)")
        arr, digest = read_idx(p, md5 if verify else None)
        if arr.shape[0] != count and verify:
            raise DataError(p, f"holds {arr.shape[0]} records, expected {count}")
        arrays[key], checksums[p.name] = arr, digest
    return _assemble(arrays, f"IDX files in {d}", checksums)


def _assemble(arrays: dict, source: str, checksums: dict) -> MnistData:
    for split in ("train", "test"):
        x, y = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if len(x) != len(y):
            raise DataError(source, f"{split} split has {len(x)} images but {len(y)} labels")
    return MnistData(arrays["train_images"], arrays["train_labels"], arrays["test_images"],
                     arrays["test_labels"], source, checksums)


def load_npz(path: str | os.PathLike) -> MnistData:
    """Load Keras's `mnist.npz` (arrays x_train, y_train, x_test, y_test)."""
    p = Path(path)
    try:
        with np.load(p, allow_pickle=False) as z:  # no pickles: an npz must not run code
            missing = {"x_train", "y_train", "x_test", "y_test"} - set(z.files)
            if missing:
                raise DataError(p, f"not an MNIST npz: missing arrays {', '.join(sorted(missing))}")
            a = {k: z[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    except DataError:
        raise
    except FileNotFoundError as err:
        raise DataError(p, "no such file") from err
    except Exception as err:
        # np.load raises ValueError for pickled content, zipfile.BadZipFile (not an OSError)
        # for junk, and zlib/EOF errors for truncation: all one message naming the file.
        raise DataError(p, f"not a readable npz file ({type(err).__name__}: {err})") from err
    for k in ("x_train", "x_test"):
        if a[k].ndim != 3 or a[k].shape[1:] != (28, 28) or a[k].dtype != np.uint8:
            raise DataError(p, f"{k} is {a[k].dtype} {a[k].shape}, expected uint8 (N, 28, 28)")
    for k in ("y_train", "y_test"):
        if a[k].ndim != 1 or (a[k].size and (a[k].min() < 0 or a[k].max() > 9)):
            raise DataError(p, f"{k} must be a 1-D array of labels 0..9")
        a[k] = a[k].astype(np.uint8)
    arrays = {"train_images": a["x_train"], "train_labels": a["y_train"],
              "test_images": a["x_test"], "test_labels": a["y_test"]}
    return _assemble(arrays, f"npz file {p}", {p.name: _md5_file(p)})


def _md5_file(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def cache_dir() -> Path:
    if os.environ.get(ENV_CACHE):
        return Path(os.environ[ENV_CACHE])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "digitkit"


def _load_path(p: Path) -> MnistData:
    if p.is_file():
        if p.suffix == ".npz":
            return load_npz(p)
        raise DataError(p, "expected a directory of MNIST IDX files, an mnist.npz, "
                           "or an image folder")
    if p.is_dir():
        if any(_find_idx(p, stem) for stem, _md5, _n in MNIST_FILES.values()):
            return load_idx_dir(p)
        if (p / "mnist.npz").is_file():
            return load_npz(p / "mnist.npz")
        if (p / "train").is_dir() and (p / "test").is_dir():
            return load_image_folder_splits(p)
        raise DataError(p, "holds no MNIST IDX files, no mnist.npz and no "
                           "train/ + test/ image folders")
    raise DataError(p, "no such file or directory")


def load_mnist(path: str | os.PathLike | None = None, *, download: bool = True,
               mirrors: list[str] | tuple[str, ...] | None = None, progress=None) -> MnistData:
    """Resolve and load MNIST (see the module docstring for the order)."""
    if path is not None:
        return _load_path(Path(path))
    if os.environ.get(ENV_DATA):
        return _load_path(Path(os.environ[ENV_DATA]))
    cache = cache_dir() / "mnist"
    tried = ["--data (not given)", f"${ENV_DATA} (not set)"]
    if _find_idx(cache, MNIST_FILES["train_images"][0]):
        return load_idx_dir(cache)
    tried.append(f"cache {cache} (empty)")
    if not download:
        raise DataError("MNIST", "not found; tried " + "; ".join(tried))
    if mirrors is None and os.environ.get(ENV_MIRRORS):
        mirrors = [m.strip() for m in os.environ[ENV_MIRRORS].split(",") if m.strip()]
    download_mnist(cache, mirrors=mirrors or DEFAULT_MIRRORS, progress=progress, tried=tried)
    return load_idx_dir(cache)


def download_mnist(dest: str | os.PathLike, mirrors=DEFAULT_MIRRORS, progress=None,
                   tried: list[str] | None = None, timeout: float = 30.0) -> Path:
    """Fetch the four gzipped IDX files into `dest`, each verified before it is moved into place.

    A file already present and valid is kept. Each file is written to a temporary name and
    renamed only after its decompressed md5 matches, so an interrupted or corrupt download
    never leaves a file that looks good.
    """
    import tempfile
    import urllib.error
    import urllib.request

    d = Path(dest)
    d.mkdir(parents=True, exist_ok=True)
    tried = list(tried or [])
    for stem, md5, _count in MNIST_FILES.values():
        target = d / (stem + ".gz")
        if target.is_file():
            try:
                read_idx(target, md5)
                continue
            except DataError:
                pass  # a stale or corrupt cached copy is replaced below
        errors = []
        for base in mirrors:
            url = base.rstrip("/") + "/" + stem + ".gz"
            fd, tmp = tempfile.mkstemp(prefix=f".{stem}.", suffix=".part", dir=d)
            try:
                with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as r:
                    total = int(r.headers.get("Content-Length") or 0)
                    done = 0
                    while block := r.read(1 << 16):
                        out.write(block)
                        done += len(block)
                        if progress:
                            progress(stem, done, total)
                read_idx(tmp, md5)
                os.replace(tmp, target)
                break
            except (urllib.error.URLError, OSError, DataError, ValueError) as e:
                reason = getattr(e, "reason", None) or e
                errors.append(f"{url} ({reason})")
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        else:
            raise DataError(stem + ".gz", "download failed; tried " + "; ".join(tried + errors))
    return d


# --- labelled image folders -------------------------------------------------------------------

def load_image_folder(directory: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Load `directory/<0..9>/<images>` through the same preprocessing as `digitkit infer`.

    Returns (x uint8 (N,28,28), y uint8 (N,), skipped) where skipped lists one line per file
    that could not be decoded: a bad file never takes the good ones down with it.
    """
    from digitkit.errors import ImageError
    from digitkit.images import class_label_of, find_images, load_image

    d = Path(directory)
    if not d.is_dir():
        raise DataError(d, "not a directory")
    paths, labels = [], []
    for p in find_images([d]):
        label = class_label_of(p)
        if label is not None:
            paths.append(p)
            labels.append(label)
    if not paths:
        raise DataError(d, "no images in class folders 0..9")
    xs, ys, skipped = [], [], []
    for p, label in zip(paths, labels, strict=True):
        try:
            xs.append(load_image(p))
            ys.append(label)
        except ImageError as e:
            skipped.append(str(e))
    if not xs:
        raise DataError(d, f"none of the {len(paths)} images could be read")
    return np.stack(xs), np.asarray(ys, dtype=np.uint8), skipped


def load_image_folder_splits(directory: str | os.PathLike) -> MnistData:
    """`directory/train/<label>/...` and `directory/test/<label>/...` as an MnistData."""
    d = Path(directory)
    x_tr, y_tr, _ = load_image_folder(d / "train")
    x_te, y_te, _ = load_image_folder(d / "test")
    return MnistData(x_tr, y_tr, x_te, y_te, f"image folders in {d}", {})


def write_png_folder(x: np.ndarray, y: np.ndarray, out_dir: str | os.PathLike,
                     first_index: int = 0) -> int:
    """Write images as `out_dir/<label>/<index>.png` (8-bit grayscale), the image-folder layout.

    File names are `first_index + i`, so the MNIST test set written with first_index=60000
    matches the naming of the public mnist-pngs collection. Existing files are never replaced.
    """
    from PIL import Image

    from digitkit.errors import OutputExistsError

    out = Path(out_dir)
    for label in range(10):
        (out / str(label)).mkdir(parents=True, exist_ok=True)
    written = 0
    for i, (img, label) in enumerate(zip(x, y, strict=True)):
        path = out / str(int(label)) / f"{first_index + i}.png"
        if path.exists():
            raise OutputExistsError(path, "choose an empty output directory")
        Image.fromarray(img, mode="L").save(path, format="PNG")
        written += 1
    return written
