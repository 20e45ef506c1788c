"""Reading image files: one decoded image per file, or an ImageError with the reason.

What is read: only regular files, never more than `max_file_size` bytes, checked before
anything is opened (`digitkit.images.reading`). Every decoder then works on those bytes in
memory, never on the path.

Plain 8-bit grayscale PNGs (MNIST-like files, the bulk of any batch) go through OpenCV's
libpng decoder, much cheaper per file than Pillow's (BENCHMARKS.md, "Batch inference, local
engine"); everything else through Pillow (an animation or a multi-page TIFF gives its first
frame), asked for the supported formats alone (`digitkit.images.formats`): any other format
is refused by name, never decoded. Both give the same pixels for the files the fast decoder
takes (see `_fast_gray_png`); any doubt or failure goes to Pillow, so error reasons stay
Pillow's. Decompression bombs are refused from the header, before any pixel is decoded.

`load_image` and `load_images` then put each image into the MNIST convention
(`digitkit.images.mnist_convention`) and refuse one that holds no digit ("blank: ...").

Test-only fault injection (`digitkit.images.faults`): unset, it costs one test per file.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from collections.abc import Callable
from contextlib import contextmanager

import numpy as np
from PIL import Image, UnidentifiedImageError

from digitkit.errors import ImageError
from digitkit.images.faults import FAULTS, inject_fault
from digitkit.images.formats import PILLOW_FORMATS, unsupported_reason
from digitkit.images.mnist_convention import (
    MIN_INK_PIXELS,
    SIZE,
    WORK_SIDE,
    blank_reason,
    follows_convention,
    gray_to_mnist,
    ink_counts,
    to_mnist,
)
from digitkit.images.reading import MAX_FILE_SIZE, Folder, read_file

#: Largest image accepted, in pixels. 50 MP covers 48 MP phone sensors and A4 scans at 600 dpi
#: while bounding one decode to ~150 MB of RGB per worker; beyond it a file is treated as a
#: decompression bomb (a tiny PNG can claim gigapixels).
MAX_PIXELS = 50_000_000


def load_image(path: str | os.PathLike, max_file_size: int = MAX_FILE_SIZE) -> np.ndarray:
    """Decode one file and return its MNIST-convention array, uint8 (28, 28).

    Raises ImageError(path, reason) for anything that is not a usable image: missing, not a
    regular file, over `max_file_size` bytes, unreadable, empty, truncated, not an image,
    over MAX_PIXELS, blank.
    """
    data, a = _decode(path, max_file_size)
    out = _with_image(path, data, to_mnist) if a is None else gray_to_mnist(a)
    reason = blank_reason(int(ink_counts(out)))
    if reason:
        raise ImageError(path, reason)
    return out


def load_images(paths: list, max_file_size: int = MAX_FILE_SIZE,
                on_file: Callable[[], object] | None = None) -> tuple[np.ndarray, list[str]]:
    """`load_image` over many files, errors as values: (uint8 (n_good, 28, 28) in order, one
    reason per path, "" for a good file). Same results as `load_image`, faster in bulk: files
    already 28x28 8-bit grayscale are checked for the convention all at once.

    `on_file()` is called before each file is read (the engines arm a per-file time limit
    with it)."""
    n = len(paths)
    buf = np.empty((n, SIZE, SIZE), np.uint8)
    raw = [False] * n  # 28x28 gray as decoded: still to be checked for the convention

    def put(i, p, data):
        a = _fast_gray(data, p)
        if a is None:
            buf[i], raw[i] = _with_image(p, data, _raw_or_mnist)
        elif a.shape == _SHAPE:
            buf[i] = a
            raw[i] = True
        else:
            buf[i] = to_mnist(Image.fromarray(a))

    reasons = decode_each(paths, put, max_file_size, on_file)
    for i in np.flatnonzero(np.array(raw, bool) & ~follows_convention(buf)):
        buf[i] = to_mnist(Image.fromarray(buf[i]))
    for i in np.flatnonzero(ink_counts(buf) < MIN_INK_PIXELS):
        if not reasons[i]:
            reasons[i] = blank_reason(int(ink_counts(buf[i])))
    return kept(buf, reasons), reasons


def decode_each(paths: list, put: Callable[[int, object, bytes], object],
                max_file_size: int = MAX_FILE_SIZE,
                on_file: Callable[[], object] | None = None) -> list[str]:
    """The batch rule every decoder shares: each file read (regular files only, capped) and
    handed to `put(i, path, data)`, errors as values: one reason per path, "" for a good
    file; one strange file never stops the batch. `on_file()` is called before each file is
    read (the engines arm a per-file time limit with it)."""
    reasons = [""] * len(paths)
    folder = Folder()
    with _native_stderr_silenced():
        try:
            for i, p in enumerate(paths):
                if on_file is not None:
                    on_file()
                try:
                    if FAULTS:
                        inject_fault(p)
                    put(i, p, read_file(p, max_file_size, folder))
                except ImageError as e:
                    reasons[i] = e.reason
                except Exception as e:  # one strange file must never stop a batch
                    reasons[i] = f"cannot decode ({type(e).__name__}: {e})"
        finally:
            folder.close()
    return reasons


def kept(buf: np.ndarray, reasons: list[str]) -> np.ndarray:
    """The slots of the files that decoded (reason ""), in order."""
    good = [i for i, r in enumerate(reasons) if not r]
    return buf if len(good) == len(reasons) else buf[good]

_SHAPE = (SIZE, SIZE)


def _raw_or_mnist(im: Image.Image) -> tuple[np.ndarray, bool]:
    """A slot from Pillow's image: a 28x28 gray one as is, True (the batch checks it for the
    convention); anything else converted now, False."""
    if im.mode == "L" and im.size == _SHAPE:
        return np.asarray(im), True
    return to_mnist(im), False


def _decode(path, max_file_size: int) -> tuple[bytes, np.ndarray | None]:
    """The file's bytes, and its pixels if the fast decoder takes it (else None: Pillow's)."""
    if FAULTS:
        inject_fault(path)
    data = read_file(path, max_file_size)
    with _native_stderr_silenced():
        return data, _fast_gray(data, path)


@contextmanager
def _native_stderr_silenced():
    """libpng (inside OpenCV) prints its own warnings about a file's ancillary chunks
    ("libpng warning: bKGD: invalid") straight to the process's stderr, naming no file, for
    files that decode all the same: noise among the run's own warnings. So while files are
    decoded, stderr (fd 2) points at /dev/null: four system calls a chunk of files, not a
    file. Nothing else of ours writes there meanwhile: a bad file's reason is its row's."""
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to silence
        yield
        return
    null = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


# -- the fast decoder -----------------------------------------------------------------------

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: Chunks that change nothing in the gray pixels either decoder returns: text, physical
#: size, time, colour space hints (neither decoder applies gamma or ICC profiles). Anything
#: else (tRNS, eXIf, APNG's acTL, sBIT, private chunks) sends the file to Pillow.
_HARMLESS_CHUNKS = frozenset({b"tEXt", b"zTXt", b"iTXt", b"pHYs", b"tIME", b"gAMA", b"cHRM",
                              b"sRGB", b"iCCP", b"bKGD"})
_TEXT_CHUNKS = frozenset({b"tEXt", b"zTXt", b"iTXt"})
_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # an IEND chunk is always these 12 bytes
_IHDR = struct.Struct(">IIBBBBBI")
_CHUNK_HEAD = struct.Struct(">I4s")
_CRC = struct.Struct(">I")
_cv2 = None


def _fast_gray(data: bytes, path) -> np.ndarray | None:
    """The pixels if `data` is a plain 8-bit grayscale PNG that OpenCV decodes (uint8,
    (h, w)); None for anything else, to be decoded by Pillow.

    Raises ImageError for a decompression bomb (from the header, before any pixel is
    decoded), with the reason the Pillow path gives.
    """
    size = _fast_gray_png(data)
    if size is None:
        return None
    w, h = size
    if w * h > MAX_PIXELS:
        raise ImageError(path, f"decompression bomb: {w}x{h} pixels is over the "
                               f"{MAX_PIXELS:,} pixel limit")
    cv2 = _cv2 or _import_cv2()
    if cv2 is False:
        return None
    # IMREAD_UNCHANGED: the stored gray values as they are, without the colour conversion
    # IMREAD_GRAYSCALE runs even on gray input.
    try:
        a = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error:
        return None
    if a is None or a.dtype != np.uint8 or a.shape != (h, w):
        return None
    return a


def _import_cv2():
    global _cv2
    try:
        import cv2
    except ImportError:  # the fast path is an optimisation: Pillow does it all too
        _cv2 = False
    else:
        _cv2 = cv2
    return _cv2


def _fast_gray_png(data: bytes) -> tuple[int, int] | None:
    """(width, height) if `data` is a whole, well-formed, non-interlaced 8-bit grayscale PNG
    with nothing but harmless chunks (every CRC checked, IEND last); else None.

    Anything unusual, damaged or truncated goes to Pillow, so Pillow decides what is an error
    and says why, exactly as before the fast path existed. It reads the header and the CRCs
    only, so it costs a small part of the decode it saves.
    """
    iend = len(data) - 12
    if (iend < 45 or not data.startswith(_PNG_SIGNATURE) or data[12:16] != b"IHDR"
            or not data.endswith(_IEND)):
        return None
    w, h, depth, colour, _, _, interlace, ihdr_crc = _IHDR.unpack_from(data, 16)
    if (depth != 8 or colour != 0 or interlace != 0 or not w or not h
            or data[8:12] != b"\x00\x00\x00\x0d" or zlib.crc32(data[12:29]) != ihdr_crc):
        return None
    view, crc32, unpack = memoryview(data), zlib.crc32, _CHUNK_HEAD.unpack_from
    pos, idat = 33, False
    while pos < iend:
        length, ctype = unpack(data, pos)
        stop = pos + 8 + length
        if stop + 4 > iend or crc32(view[pos + 4:stop]) != _CRC.unpack_from(data, stop)[0]:
            return None
        if ctype == b"IDAT":
            idat = True
        elif ctype not in _HARMLESS_CHUNKS:
            return None
        elif ctype in _TEXT_CHUNKS and data.startswith(b"Raw profile type", pos + 8):
            # ImageMagick stores EXIF (orientation) in a "Raw profile type exif" text chunk,
            # and Pillow applies it.
            return None
        pos = stop + 4
    return (w, h) if idat and pos == iend else None


# -- Pillow, and the reasons a file is not a usable image -----------------------------------


@contextmanager
def open_image(path, data: bytes):
    """The file's bytes opened by Pillow (header only: nothing decoded yet), for the body of a
    `with`; bombs refused from the header, and every failure, in the body too, -> ImageError
    with its reason. The one place any decoder of digitkit opens an image with Pillow."""
    try:
        # Pillow itself only warns between its MAX_IMAGE_PIXELS (89 MP) and twice that, and
        # fails beyond; our lower limit is checked before any pixel is decoded.
        # formats=: only the supported formats are even parsed (digitkit.images.formats);
        # PostScript would otherwise run Ghostscript, and dozens of other parsers be exposed.
        with Image.open(io.BytesIO(data), formats=PILLOW_FORMATS) as im:
            w, h = im.size
            if w * h > MAX_PIXELS:
                raise ImageError(path, f"decompression bomb: {w}x{h} pixels is over the "
                                       f"{MAX_PIXELS:,} pixel limit")
            yield im
    except ImageError:
        raise
    except UnidentifiedImageError as err:
        raise ImageError(path, unsupported_reason(data)) from err
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageError(path, f"decompression bomb: {err}") from err
    except OSError as err:
        msg = str(err) or type(err).__name__
        if "truncated" in msg or "broken data stream" in msg:
            raise ImageError(path, f"truncated image ({msg})") from err
        raise ImageError(path, f"cannot decode ({msg})") from err
    except (SyntaxError, ValueError, EOFError, MemoryError, IndexError, TypeError) as err:
        # Pillow's plugins report malformed headers with SyntaxError/ValueError and friends.
        raise ImageError(path, f"cannot decode ({type(err).__name__}: {err})") from err


def _with_image(path, data: bytes, fn):
    """Open the file's bytes with Pillow (`open_image`), decode, and return fn(image)."""
    with open_image(path, data) as im:
        if im.format == "JPEG" and max(im.size) > 2 * WORK_SIDE:
            # DCT-domain downscaling: decodes a 12 MP photo at 1/4 or 1/8 size, far faster.
            im.draft(im.mode, (WORK_SIDE, WORK_SIDE))
        im.load()
        return fn(im)
