"""A generated hostile corpus for batch inference (issue 11): made by the test in a temporary
folder, nothing committed.

`make_corpus(root, x, y, indices)` writes:
- good/<label>/: real MNIST digits in every supported container (PNG, JPEG, BMP, GIF, TIFF,
  WebP; gray, RGB, palette, alpha, 16-bit, upscaled), and the same digits under odd names:
  commas, quotes, a newline, a carriage return, leading dashes, a backslash, spaces,
  non-ASCII and a name that is not valid UTF-8;
- damaged/: the good files with flipped, truncated, duplicated and zeroed byte runs;
- lies/: PNG headers that lie about the size, a GIF of many frames, a multi-page TIFF;
- blank/: all black, all white, fully transparent, a single pixel, a speck on a page;
- unsupported/: the same digit in formats digitkit does not read (JPEG 2000, AVIF, TGA, QOI,
  DDS, PCX, SGI, IM, ICO, PPM, ...), each named .png, and a PostScript file named x.png (with
  a logging `gs` first on PATH, `fake_ghostscript`, a decoder that ran it would leave a log);
- deep/: folders nested past the system's 4,096-byte path limit: a digit whose own path is
  over the limit in a folder under it (read through the folder's handle, classified), and the
  first folder that cannot be reached by its path (one row for it, "cannot list directory
  (path too long ...)");
- locked/ (only with `locked=True`, for a run that obeys permissions: `obey_permissions`): a
  folder that cannot be listed (a row for the folder), and a folder without search permission
  (a row for each file and subfolder in it: "permission denied");
- special/: a FIFO, a UNIX socket, links to /dev/zero, /dev/null, /dev/urandom and a
  dangling one, a link loop, a sparse file over the size limit, an empty file, text named
  .png, and a folder named dir.png (holding one good digit, which must be found);
- faults/: files the test-only decoder hook crashes or hangs on (when it is enabled).

It returns a `Corpus`: every file entry (the rows expected, one each), the good ones with
their true label, and the reason expected for the special ones.
"""

from __future__ import annotations

import ctypes
import os
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

#: Containers and modes each good digit is saved in: (suffix, how).
CONTAINERS = {
    "gray.png": lambda d: (Image.fromarray(d), {}),
    "inverted.png": lambda d: (Image.fromarray(255 - d), {}),
    "rgb.jpg": lambda d: (Image.fromarray(255 - d).resize((84, 84)).convert("RGB"),
                          {"quality": 95}),
    "gray.jpeg": lambda d: (Image.fromarray(d).resize((56, 56)), {"quality": 95}),
    "palette.bmp": lambda d: (Image.fromarray(255 - d).convert("P"), {}),
    "frames.gif": lambda d: (Image.fromarray(d), {}),
    "scan16.tif": lambda d: (Image.fromarray((255 - d).astype(np.uint16) * 257), {}),
    "page.tiff": lambda d: (Image.fromarray(255 - d).resize((112, 112)), {}),
    "alpha.webp": lambda d: (Image.merge("RGBA", [Image.new("L", (28, 28), 0)] * 3
                                         + [Image.fromarray(d)]), {"lossless": True}),
    "la.png": lambda d: (Image.merge("LA", [Image.new("L", (28, 28), 255),
                                            Image.fromarray(d)]), {}),
}
#: Names that break naive CSV writers, shells and decoders; each holds a real digit.
ODD_NAMES = ["a,b.png", 'quo"te.png', "new\nline.png", "-leading-dash.png", "--help.png",
             "back\\slash.png", "sp ace .png", "ünïcødé.png", "tab\there.png",
             "carriage\rreturn.png", "cr-lf\r\n.png"]
NOT_UTF8 = b"caf\xe9-\xff.png"
#: Formats Pillow can write and digitkit must not decode: Pillow's name -> (the name the
#: reason gives, the image mode to save).
UNSUPPORTED = {"JPEG2000": ("JPEG2000", "L"), "AVIF": ("AVIF", "RGB"), "TGA": ("TGA", "L"),
               "QOI": ("QOI", "RGB"), "DDS": ("DDS", "RGB"), "PCX": ("PCX", "L"),
               "SGI": ("SGI", "L"), "IM": ("IM", "L"), "ICO": ("ICO", "L"), "PPM": ("PPM", "L"),
               "EPS": ("EPS", "L"), "PDF": ("PDF", "L"), "MSP": ("MSP", "1"),
               "XBM": ("XBM", "1"), "DIB": ("DIB", "L")}


def unsupported_files(folder: Path, digit: np.ndarray) -> dict[Path, str]:
    """The digit saved in every UNSUPPORTED format Pillow here can write, each named .png,
    plus PostScript named x.png: path -> the reason's start."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for fmt, (name, mode) in UNSUPPORTED.items():
        im = Image.fromarray(digit).convert(mode)
        path = folder / f"{fmt.lower()}.png"
        try:
            im.save(path, format=fmt)
        except (OSError, KeyError, ValueError):  # a Pillow built without that writer
            path.unlink(missing_ok=True)
            continue
        out[path] = f"unsupported format ({name}"
    ps = folder / "x.png"
    ps.write_bytes(b"%!PS-Adobe-3.0\n%%BoundingBox: 0 0 28 28\n"
                   b"newpath 4 4 moveto 24 24 lineto 10 setlinewidth stroke showpage\n")
    out[ps] = "unsupported format (EPS"
    return out


def fake_ghostscript(bin_dir: Path, log: Path) -> Path:
    """A `gs` that only records that it ran (its arguments, in `log`): put `bin_dir` first on
    PATH, and any decoder that starts Ghostscript leaves the log behind."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    gs = bin_dir / "gs"
    gs.write_text(f"#!/bin/sh\necho \"$@\" >> '{log}'\nexit 1\n")
    gs.chmod(0o755)
    return gs


@dataclass
class Corpus:
    root: Path
    entries: list[str] = field(default_factory=list)  # every file entry, as discovery sees it
    labels: dict[str, int] = field(default_factory=dict)  # good file -> true label
    reasons: dict[str, str] = field(default_factory=dict)  # special file -> reason prefix


#: The system's path limit (bytes, with the terminating NUL): a path this long or longer
#: cannot be named whole.
PATH_MAX = 4096
#: Linux capabilities that let root ignore file permissions (linux/capability.h).
_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH, _PR_CAPBSET_DROP = 1, 2, 24


def obey_permissions() -> None:
    """A `preexec_fn`: the command it starts obeys file permissions even when the tests run as
    root (as here): CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH leave the bounding set, so the
    program exec'd next holds neither. A no-op for any other user."""
    if os.geteuid() != 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH):
        if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def permissions_can_be_obeyed(tmp: Path) -> bool:
    """Whether `obey_permissions` works here (a container may refuse to drop capabilities):
    a child started with it cannot list a folder of mode 000."""
    locked = tmp / "probe-locked"
    locked.mkdir()
    locked.chmod(0)
    try:
        r = subprocess.run([sys.executable, "-c", "import os, sys; os.listdir(sys.argv[1])",
                            str(locked)], preexec_fn=obey_permissions, capture_output=True)
    except OSError:
        return False
    finally:
        locked.chmod(0o755)
    return r.returncode != 0 and b"PermissionError" in r.stderr


def make_deep(root: Path, digit: np.ndarray) -> tuple[dict[str, str], dict[str, str]]:
    """Folders nested past PATH_MAX, made through folder handles (no path that long can be
    named whole): ({digit over the limit, read through its folder: its path}, {the first
    folder past the limit: the reason's start})."""
    import io

    buf = io.BytesIO()
    Image.fromarray(digit).save(buf, format="PNG")
    root.mkdir(parents=True, exist_ok=True)
    path, fd = str(root), os.open(root, os.O_DIRECTORY)
    good, unreachable, fname = {}, {}, "f" * 240 + ".png"
    try:
        for level in range(PATH_MAX):
            if not good and len(os.fsencode(path + os.sep + fname)) >= PATH_MAX:
                out = os.open(fname, os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
                os.write(out, buf.getvalue())
                os.close(out)
                good[path + os.sep + fname] = path
            name = f"{level:02d}-" + "d" * 200
            os.mkdir(name, dir_fd=fd)
            nfd = os.open(name, os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd, path = nfd, path + os.sep + name
            if len(os.fsencode(path)) >= PATH_MAX:
                os.mkdir("unseen", dir_fd=fd)  # one more level, never reached
                unreachable[path] = "cannot list directory (path too long"
                break
    finally:
        os.close(fd)
    return good, unreachable


def make_locked(root: Path, digit: np.ndarray) -> dict[str, str]:
    """A folder that cannot be listed and one without search permission (with a digit and a
    subfolder in each): entry -> the reason's start, for a run that `obey_permissions`.
    `unlock(root)` gives the permissions back."""
    unlistable, unsearchable = root / "unlistable", root / "unsearchable"
    for d in (unlistable, unsearchable):
        (d / "sub").mkdir(parents=True)
        Image.fromarray(digit).save(d / "a.png")
        Image.fromarray(digit).save(d / "sub" / "b.png")
    unlistable.chmod(0o311)  # search, no read: its names cannot be listed
    unsearchable.chmod(0o644)  # read, no search: listed, but nothing in it can be reached
    return {str(unlistable): "cannot list directory (permission denied)",
            str(unsearchable / "a.png"): "permission denied",
            str(unsearchable / "sub"): "permission denied"}


def unlock(root: Path) -> None:
    for d in ("unlistable", "unsearchable"):
        if (root / d).exists():
            (root / d).chmod(0o755)


def make_corpus(root: Path, x: np.ndarray, y: np.ndarray, indices: list[int],
                faults: bool = False, locked: bool = False) -> Corpus:
    c = Corpus(root)
    rng = np.random.default_rng(11)
    good_pngs = []
    for n, i in enumerate(indices):
        folder = root / "good" / str(int(y[i]))
        folder.mkdir(parents=True, exist_ok=True)
        for suffix, how in CONTAINERS.items():
            im, kw = how(x[i])
            path = folder / f"{n}-{suffix}"
            im.save(path, **kw)
            c.labels[str(path)] = int(y[i])
            if suffix == "gray.png":
                good_pngs.append(path)
    for n, name in enumerate(ODD_NAMES):
        path = root / "good" / "odd" / name
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(x[indices[n % len(indices)]]).save(path, format="PNG")
        c.labels[str(path)] = int(y[indices[n % len(indices)]])
    raw = os.path.join(os.fsencode(root / "good" / "odd"), NOT_UTF8)
    with open(raw, "wb") as f:
        Image.fromarray(x[indices[0]]).save(f, format="PNG")
    c.labels[os.fsdecode(raw)] = int(y[indices[0]])

    _damaged(root / "damaged", good_pngs, rng, c)
    _lies(root / "lies", x[indices[0]], c)
    _blank(root / "blank", x[indices[0]], c)
    _special(root / "special", x[indices[0]], int(y[indices[0]]), c)
    for path, reason in unsupported_files(root / "unsupported", x[indices[0]]).items():
        c.reasons[str(path)] = reason
    deep_good, deep_bad = make_deep(root / "deep", x[indices[0]])
    c.labels.update(dict.fromkeys(deep_good, int(y[indices[0]])))
    c.reasons.update(deep_bad)
    if locked:
        c.reasons.update(make_locked(root / "locked", x[indices[0]]))
    if faults:
        d = root / "faults"
        d.mkdir()
        for name in ("crash-segv.png", "crash-abort.png", "crash-kill.png", "hang.png"):
            Image.fromarray(x[indices[0]]).save(d / name)
            c.reasons[str(d / name)] = "timed out" if name == "hang.png" else "crashed"
    c.entries = sorted(set(c.entries) | set(c.labels) | set(c.reasons))
    return c


def _damaged(d: Path, sources: list[Path], rng, c: Corpus) -> None:
    d.mkdir(parents=True)
    for src in sources[:3]:
        data = src.read_bytes()
        n = len(data)
        a, b = sorted(rng.integers(8, n, 2))
        variants = {
            "flipped": data[:a] + bytes(v ^ 0xFF for v in data[a:b]) + data[b:],
            "truncated": data[: n // 2],
            "duplicated": data[:b] + data[a:b] + data[b:],
            "zeroed": data[:a] + bytes(b - a) + data[b:],
            "header-only": data[:33],
        }
        for kind, blob in variants.items():
            path = d / f"{src.stem}-{kind}.png"
            path.write_bytes(blob)
            c.entries.append(str(path))


def _lies(d: Path, digit: np.ndarray, c: Corpus) -> None:
    import io
    import zlib

    d.mkdir(parents=True)
    buf = io.BytesIO()
    Image.fromarray(digit).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    for name, (w, h) in {"claims-huge.png": (100_000, 100_000), "claims-tiny.png": (3, 3),
                         "claims-wide.png": (5000, 28)}.items():
        lie = bytearray(data)
        lie[16:24] = w.to_bytes(4, "big") + h.to_bytes(4, "big")
        lie[29:33] = zlib.crc32(bytes(lie[12:29])).to_bytes(4, "big")
        (d / name).write_bytes(bytes(lie))
        c.entries.append(str(d / name))
    c.reasons[str(d / "claims-huge.png")] = "decompression bomb"  # before any pixel
    frames = [Image.fromarray(np.roll(digit, k, axis=1)) for k in range(300)]
    frames[0].save(d / "many-frames.gif", save_all=True, append_images=frames[1:])
    frames[0].save(d / "many-pages.tiff", save_all=True, append_images=frames[1:100])
    c.entries += [str(d / "many-frames.gif"), str(d / "many-pages.tiff")]


def _blank(d: Path, digit: np.ndarray, c: Corpus) -> None:
    d.mkdir(parents=True)
    page = Image.new("L", (600, 800), 235)
    page.putpixel((300, 400), 20)  # a speck of dust
    images = {
        "black.png": Image.new("L", (28, 28), 0),
        "white.jpg": Image.new("RGB", (200, 100), (255, 255, 255)),
        "transparent.png": Image.new("RGBA", (64, 64), (0, 0, 0, 0)),
        "one-pixel.png": Image.new("L", (1, 1), 255),
        "speck.png": page,
        "faint.png": Image.fromarray((digit * 0.15).astype(np.uint8)),  # peak ~38 of 255
    }
    for name, im in images.items():
        im.save(d / name)
        c.reasons[str(d / name)] = "blank"


def _special(d: Path, digit: np.ndarray, label: int, c: Corpus) -> None:
    d.mkdir(parents=True)
    os.mkfifo(d / "fifo.png")
    c.reasons[str(d / "fifo.png")] = "not a regular file (FIFO)"
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(d / "socket.png"))
        c.reasons[str(d / "socket.png")] = "not a regular file (socket)"
    except OSError:  # a path too long for a UNIX socket: leave it out
        pass
    finally:
        sock.close()
    for dev in ("zero", "null", "urandom"):
        os.symlink(f"/dev/{dev}", d / f"dev-{dev}.png")
        c.reasons[str(d / f"dev-{dev}.png")] = "not a regular file (character device)"
    os.symlink(d / "nowhere.png", d / "dangling.png")
    c.reasons[str(d / "dangling.png")] = "broken symbolic link"
    os.symlink(d / "loop-b.png", d / "loop-a.png")
    os.symlink(d / "loop-a.png", d / "loop-b.png")
    for name in ("loop-a.png", "loop-b.png"):
        c.reasons[str(d / name)] = "symbolic link loop"
    with open(d / "sparse-huge.png", "wb") as f:
        f.truncate(300 * 2**20)  # over the 256 MiB default, and no disk used
    c.reasons[str(d / "sparse-huge.png")] = "file too large"
    (d / "empty.png").write_bytes(b"")
    c.reasons[str(d / "empty.png")] = "empty file"
    (d / "text.png").write_text("this is not a picture\n")
    c.reasons[str(d / "text.png")] = "not an image"
    inner = d / "dir.png" / str(label)
    inner.mkdir(parents=True)
    Image.fromarray(digit).save(inner / "inside.png")
    c.labels[str(inner / "inside.png")] = label
