"""A labelled folder as training data: layout, splits, the input chosen from the files,
parallel decoding into a cache (`digitkit.train.pipeline` makes the batches `fit` reads).

Rules (each stated once, here):

- Layout. DIR holds one subfolder per class, or `train/` (class folders) with optional
  `val/` and `test/` beside it, holding the same class names (a class may be missing from
  val/ or test/; a class not in train/ is refused). Anything else beside train/ is refused.
- Splits. Without val/, a stratified, seeded fraction of every class is held out for
  validation (`--val-fraction`, at least one file per class); `test/` is evaluated once, at
  the end. The reports (classification report, confusion matrix) are the test set's, or the
  validation set's when there is no test/.
- Too few. A class with fewer than MIN_PER_CLASS decodable training images is refused: too
  few to hold any out and still learn from.
- Decoding. Exactly infer's pipeline: `images.labelled.load_labelled` with
  `images.pixels.load_pixels_batch` and the model's `PixelPolicy`, so the tensors a file gives
  in training are the ones `infer` builds for it (no training/serving skew by construction).
  Bad files are reported and skipped. Files are decoded once, by a process pool over chunks of
  CHUNK files (one process per usable CPU), and kept decoded for every epoch.
- Cache. The decoded pictures are 8-bit (the policy's resize gives 8-bit gray or RGB), so
  they are kept as uint8, a quarter of float32; cast to float32 batch by batch. They are held
  in memory when they take at most MEMORY_FRACTION of the memory available when decoding
  starts, else in a memory-mapped file in a temporary folder inside the output directory,
  removed when training ends.
- Input. `--input-size HxW` and `--channels` win; otherwise from the training files' headers
  (up to SCAN_FILES of them, spread evenly): channels 1 when every file scanned is gray
  (gray, gray with alpha, 16-bit gray, bilevel, a gray palette), else 3; transfer networks
  take 3 (their backbones learned on RGB); the size is the median height and median width of
  the pictures as shown (EXIF orientation applied), each rounded to the nearest multiple of 8
  (halves up) and held to MIN_SIDE..cap, the cap growing with the files in the training
  folder (SIZE_CAPS: a small set cannot teach a large input); transfer networks take
  TRANSFER_SIZE, the size their ImageNet weights learned at.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from digitkit.errors import DataError, UsageError
from digitkit.images.labelled import LabelledSet, list_labelled, load_labelled
from digitkit.images.pixels import FORMATS, PixelPolicy, load_pixels_batch

MIN_PER_CLASS = 5
DEFAULT_VAL_FRACTION = 0.2
CHUNK = 64  # files per task of the decoding pool: large enough to amortise the pickling
MEMORY_FRACTION = 0.5
SCAN_FILES = 1000
MIN_SIDE = 32
#: (fewer than N training files, largest side chosen from the data)
SIZE_CAPS = ((2_000, 64), (20_000, 128), (math.inf, 224))
TRANSFER_SIZE = (224, 224)
SPLIT_FOLDERS = ("train", "val", "test")

_GRAY_MODES = frozenset({"1", "L", "LA", "La", "I;16", "I;16L", "I;16B", "I;16N"})


@dataclass
class Layout:
    """Where each split's class folders are (`val`/`test` None when absent)."""

    root: str
    train: str
    val: str | None = None
    test: str | None = None

    @property
    def split(self) -> bool:
        return self.train != self.root


def find_layout(root) -> Layout:
    root = os.fspath(root)
    train = os.path.join(root, "train")
    if not os.path.isdir(train):
        return Layout(root, root)
    others = sorted(n for n in os.listdir(root) if not n.startswith(".")
                    and os.path.isdir(os.path.join(root, n)) and n not in SPLIT_FOLDERS)
    if others:
        raise DataError(root, f"holds train/ and also {others[0]}/; a folder is either one "
                              f"subfolder per class or train/ with optional val/ and test/")
    found = {n: os.path.join(root, n) for n in ("val", "test")
             if os.path.isdir(os.path.join(root, n))}
    return Layout(root, train, found.get("val"), found.get("test"))


# -- the input chosen from the data ------------------------------------------------------


@dataclass
class Scan:
    """What the training files' headers say: displayed (height, width) and gray or not."""

    sizes: list[tuple[int, int]] = field(default_factory=list)
    gray: int = 0

    @property
    def scanned(self) -> int:
        return len(self.sizes)


def scan_headers(paths: list[str], limit: int = SCAN_FILES) -> Scan:
    """Headers of up to `limit` files spread evenly over `paths` (nothing is decoded; a
    file that cannot be opened is left to the decoder to report)."""
    from PIL import Image

    if len(paths) > limit:
        paths = [paths[(i * len(paths)) // limit] for i in range(limit)]
    scan = Scan()
    for p in paths:
        try:
            with Image.open(p, formats=FORMATS) as im:
                w, h = im.size
                if im.getexif().get(0x0112) in (5, 6, 7, 8):  # EXIF orientation: turned
                    w, h = h, w
                scan.sizes.append((h, w))
                scan.gray += _is_gray(im)
        except Exception:  # noqa: BLE001 - the decoder reports it, with its reason
            continue
    return scan


def _is_gray(im) -> bool:
    if im.mode in _GRAY_MODES:
        return True
    if im.mode in ("P", "PA"):
        pal = im.getpalette() or []
        return all(pal[i] == pal[i + 1] == pal[i + 2] for i in range(0, len(pal) - 2, 3))
    return False


def choose_input(scan: Scan, n_train: int, transfer: bool, size=None, channels=None
                 ) -> tuple[tuple[int, int], int, str]:
    """((H, W), C, the rule that chose them) by the module's rule."""
    why = []
    if channels is None:
        channels = 3 if transfer or not scan.scanned or scan.gray < scan.scanned else 1
        why.append("channels: 3, the backbone's" if transfer else
                   f"channels: {channels} ({scan.gray} of {scan.scanned} files scanned are gray)")
    else:
        why.append(f"channels: {channels} (--channels)")
    if size is None:
        if transfer:
            size = TRANSFER_SIZE
            why.append(f"size: {size[0]}x{size[1]}, what the backbone's ImageNet weights "
                       f"learned at")
        else:
            cap = next(c for n, c in SIZE_CAPS if n_train < n)
            med = np.median(np.asarray(scan.sizes or [(cap, cap)], np.float64), axis=0)
            size = tuple(int(min(cap, max(MIN_SIDE, 8 * math.floor(m / 8 + 0.5)))) for m in med)
            why.append(f"size: {size[0]}x{size[1]} (median {med[0]:g}x{med[1]:g} of "
                       f"{scan.scanned} files, multiples of 8 in {MIN_SIDE}..{cap} for "
                       f"{n_train} training files)")
    else:
        why.append(f"size: {size[0]}x{size[1]} (--input-size)")
    return (int(size[0]), int(size[1])), int(channels), "; ".join(why)


# -- decoding ----------------------------------------------------------------------------


def _decode_chunk(paths: list[str], policy: PixelPolicy) -> tuple[np.ndarray, list[str]]:
    pixels, reasons = load_pixels_batch(paths, policy)
    u8 = pixels.astype(np.uint8)
    if not np.array_equal(u8, pixels):  # the policy's resize gives 8-bit pictures
        raise AssertionError("decoded pixels are not 8-bit values")
    return u8, reasons


@dataclass
class Decoder:
    """`decode(paths) -> (uint8 pixels of the good files, one reason per path)` for
    `load_labelled`, in parallel, into memory or a memory-mapped file (the module's rule)."""

    policy: PixelPolicy
    workers: int = 1
    cache_dir: str | None = None  # where a set too large for memory is mapped
    storage: list[str] = field(default_factory=list)  # "memory" or "disk", per call

    def __call__(self, paths: list[str]) -> tuple[np.ndarray, list[str]]:
        h, w = self.policy.size
        shape = (len(paths), h, w, self.policy.channels)
        buf = self._buffer(shape)
        reasons: list[str] = []
        chunks = [paths[i:i + CHUNK] for i in range(0, len(paths), CHUNK)]
        at = 0
        for pixels, why in self._map(chunks):
            buf[at:at + len(pixels)] = pixels
            at += len(pixels)
            reasons += why
        return buf[:at], reasons

    def _buffer(self, shape) -> np.ndarray:
        need = math.prod(shape)
        if need <= MEMORY_FRACTION * _available_memory() or self.cache_dir is None:
            self.storage.append("memory")
            return np.empty(shape, np.uint8)
        self.storage.append("disk")
        fd, name = tempfile.mkstemp(suffix=".u8", dir=self.cache_dir)
        os.close(fd)
        return np.memmap(name, np.uint8, "w+", shape=shape)

    def _map(self, chunks):
        if self.workers <= 1 or len(chunks) < 2:
            yield from (_decode_chunk(c, self.policy) for c in chunks)
            return
        # fork is cheapest, but not once TensorFlow's threads exist in this process.
        ctx = mp.get_context("spawn" if "tensorflow" in sys.modules else "fork")
        with ProcessPoolExecutor(min(self.workers, len(chunks)), mp_context=ctx) as pool:
            yield from pool.map(partial(_decode_chunk, policy=self.policy), chunks)


def _available_memory() -> int:
    import psutil

    return int(psutil.virtual_memory().available)


# -- the splits ----------------------------------------------------------------------------


@dataclass
class Split:
    """One split: rows `rows` of a decoded cache `pixels` (uint8 (n, H, W, C)), their int64
    labels and files. A held-out split shares its folder's cache: nothing is copied."""

    name: str
    pixels: np.ndarray
    labels: np.ndarray
    paths: list[str]
    rows: np.ndarray | None = None  # None: every row, in order

    def __post_init__(self):
        if self.rows is None:
            self.rows = np.arange(len(self.labels))

    def __len__(self) -> int:
        return len(self.labels)

    def images(self, at=slice(None)) -> np.ndarray:
        """float32 (n, H, W, C) 0..255 of the split's rows `at`: what the model is fed."""
        return self.pixels[self.rows[at]].astype(np.float32)

    def counts(self, names) -> dict[str, int]:
        found = np.bincount(self.labels, minlength=len(names))
        return {n: int(c) for n, c in zip(names, found, strict=True)}


@dataclass
class FolderData:
    layout: Layout
    class_names: tuple[str, ...]
    train: Split
    val: Split
    test: Split | None
    failures: list[tuple[str, str]]
    validation_source: str

    @property
    def evaluated(self) -> Split:
        """What the final report is on: the test folder, else the validation images."""
        return self.test if self.test is not None else self.val

    def balance(self) -> dict:
        counts = self.train.counts(self.class_names)
        most, least = max(counts.values()), min(counts.values())
        return {"train": counts, "validation": self.val.counts(self.class_names),
                **({"test": self.test.counts(self.class_names)} if self.test else {}),
                "largest_to_smallest": round(most / least, 3) if least else None}


def list_training_files(layout: Layout) -> tuple[tuple[str, ...], list[str]]:
    names, files = list_labelled(layout.train)
    return names, [p for p, _ in files]


def load_splits(layout: Layout, decode: Decoder, val_fraction: float | None, seed: int
                ) -> FolderData:
    """Decode every split (bad files reported in `failures`, skipped) and hold out the
    validation images by the module's rule."""
    train = load_labelled(layout.train, decode)
    names = train.class_names
    failures = list(train.failures)
    _refuse_small_classes(layout.train, train)
    if layout.val is not None:
        if val_fraction is not None:
            raise UsageError(f"{layout.val}: the validation images are this folder; "
                             "--val-fraction applies to a folder without val/")
        val_set = _load_other(layout.val, decode, names, failures)
        fit = Split("train", train.pixels, train.labels, train.paths)
        val = Split("validation", val_set.pixels, val_set.labels, val_set.paths)
        source = f"{layout.val} ({len(val)} images)"
    else:
        fraction = DEFAULT_VAL_FRACTION if val_fraction is None else val_fraction
        fit, val = _stratified(train, fraction, seed)
        source = (f"{fraction:g} of every class held out from {layout.train} (stratified, "
                  f"seed {seed}; {len(val)} images)")
    test = None
    if layout.test is not None:
        t = _load_other(layout.test, decode, names, failures)
        test = Split("test", t.pixels, t.labels, t.paths)
    return FolderData(layout, names, fit, val, test, failures, source)


def _load_other(root, decode, names, failures) -> LabelledSet:
    s = load_labelled(root, decode, class_names=names)
    failures += s.failures
    return s


def _refuse_small_classes(root: str, s: LabelledSet) -> None:
    for name, n in s.counts().items():
        if n < MIN_PER_CLASS:
            raise DataError(os.path.join(root, name),
                            f"{n} decodable image{'' if n == 1 else 's'}; a class needs at "
                            f"least {MIN_PER_CLASS} to be trained on")


def _stratified(s: LabelledSet, fraction: float, seed: int) -> tuple[Split, Split]:
    """Hold out round(fraction * n) of every class (at least 1), chosen by a seeded shuffle
    of that class's files; both splits keep the folder's file order."""
    rng = np.random.default_rng(seed)
    held = np.zeros(len(s.labels), bool)
    for k in range(len(s.class_names)):
        idx = np.flatnonzero(s.labels == k)
        n_val = max(1, round(fraction * len(idx)))
        held[rng.permutation(idx)[:n_val]] = True

    def take(mask, name):
        where = np.flatnonzero(mask)
        return Split(name, s.pixels, s.labels[where], [s.paths[i] for i in where], where)

    return take(~held, "train"), take(held, "validation")


__all__ = ["CHUNK", "DEFAULT_VAL_FRACTION", "Decoder", "FolderData", "Layout",
           "MEMORY_FRACTION", "MIN_PER_CLASS", "Scan", "Split", "choose_input", "find_layout",
           "list_training_files", "load_splits", "scan_headers"]
