#!/usr/bin/env python
"""Build a small labelled image set, or a large photo JPEG, from the sample photos that ship
inside scikit-image (`skimage.data`; nothing is downloaded). Deterministic for a seed.

    python scripts/make_image_set.py OUT [--per-class 40] [--seed 0]
    python scripts/make_image_set.py --large-jpeg OUT.jpg [--size 1920x1080]

The set (issue 18's fixture for general image classifiers): OUT/<class>/<NNN>.<ext>, one
subfolder per class (CLASSES: five photos, three in colour and two gray), each image a
seeded random crop (aspect 0.6..1.7) of its class's photo, maybe mirrored, brightness
jittered, resized to a long side of 40..200 pixels, and stored as one of KINDS in turn: RGB
and gray PNG and JPEG, RGBA and LA PNG (transparent border, black stored under it), palette
PNG and GIF, CMYK JPEG, a JPEG, PNG or TIFF with an EXIF orientation (pixels stored turned,
so the picture shows upright only when the tag is applied), 16-bit gray PNG and TIFF, BMP,
WebP. OUT/manifest.json lists every file with its class, kind and displayed size.

The large JPEG (for benchmarks/bench_decode_reduced.py): a 4x2 collage of the photos, each
cell scaled at most 1.35x (so the picture keeps a photo's detail), quality 90, 4:2:0.

Refuses an OUT that exists and is not empty (nothing is overwritten).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

#: class name -> the skimage.data photo it is cut from.
CLASSES = {"astronaut": "astronaut", "brick": "brick", "cat": "chelsea", "coffee": "coffee",
           "coins": "coins"}
KINDS = ("png-rgb", "jpeg-rgb", "png-gray", "jpeg-gray", "png-rgba", "jpeg-exif", "png-gray16",
         "png-la", "png-palette", "tiff-gray16", "jpeg-cmyk", "webp-rgb", "png-exif", "bmp-rgb",
         "gif-palette", "tiff-exif")
#: EXIF orientation -> the transpose that stores a displayed picture so that applying the
#: orientation (PIL.ImageOps.exif_transpose) shows it upright again.
STORE = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90,
         8: Image.Transpose.ROTATE_270, 5: Image.Transpose.TRANSPOSE,
         7: Image.Transpose.TRANSVERSE, 2: Image.Transpose.FLIP_LEFT_RIGHT}
_SUFFIX = {"png": ".png", "jpeg": ".jpg", "tiff": ".tif", "webp": ".webp", "bmp": ".bmp",
           "gif": ".gif"}
_COLLAGE = ("astronaut", "coffee", "rocket", "hubble_deep_field", "retina",
            "immunohistochemistry", "brick", "grass")


def photo(name: str) -> Image.Image:
    from skimage import data

    a = getattr(data, name)()
    return Image.fromarray(a).convert("RGB")


def make_image_set(out: Path, per_class: int = 40, seed: int = 0) -> dict:
    """Write the set under `out` (must not exist, or be empty); return the manifest."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"{out}: exists and is not empty; choose a new folder")
    rng = np.random.default_rng(seed)
    files = []
    for c, (name, source) in enumerate(CLASSES.items()):
        src = photo(source)
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            im = _variant(src, rng)
            kind = KINDS[(i + 3 * c) % len(KINDS)]
            path = folder / f"{i:03d}{_SUFFIX[kind.split('-')[0]]}"
            orientation = _save(im, kind, path, rng)
            files.append({"path": f"{name}/{path.name}", "class": name, "kind": kind,
                          "size": list(im.size), "orientation": orientation})
    manifest = {"classes": sorted(CLASSES), "seed": seed, "files": files}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def _variant(src: Image.Image, rng) -> Image.Image:
    """A seeded crop of `src`: aspect 0.6..1.7, 45..90% of the shorter side, maybe mirrored,
    brightness x0.85..1.15, long side 40..200."""
    w, h = src.size
    aspect = float(np.exp(rng.uniform(np.log(0.6), np.log(1.7))))
    side = rng.uniform(0.45, 0.9) * min(w, h)
    cw, ch = min(w, side * np.sqrt(aspect)), min(h, side / np.sqrt(aspect))
    left, top = rng.uniform(0, w - cw), rng.uniform(0, h - ch)
    long_side = int(rng.integers(40, 201))
    scale = long_side / max(cw, ch)
    size = (max(8, round(cw * scale)), max(8, round(ch * scale)))
    im = src.resize(size, Image.Resampling.BICUBIC, box=(left, top, left + cw, top + ch))
    if rng.random() < 0.5:
        im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    a = np.asarray(im, np.float32) * rng.uniform(0.85, 1.15)
    return Image.fromarray(np.clip(a + 0.5, 0, 255).astype(np.uint8), "RGB")


def _save(im: Image.Image, kind: str, path: Path, rng) -> int:
    """Store `im` (RGB, as displayed) as `kind`; return the EXIF orientation written (1: none)."""
    fmt, _, variant = kind.partition("-")
    pil_format = {"jpeg": "JPEG", "png": "PNG", "tiff": "TIFF", "webp": "WEBP", "bmp": "BMP",
                  "gif": "GIF"}[fmt]
    if variant == "exif":
        orientation = int(rng.choice(sorted(STORE)))
        exif = Image.Exif()
        exif[0x0112] = orientation
        stored = im.transpose(STORE[orientation])
        extra = {"tiffinfo": {0x0112: orientation}} if fmt == "tiff" else {"exif": exif}
        stored.save(path, pil_format, **extra)
        return orientation
    if variant == "gray":
        im = im.convert("L")
    elif variant == "gray16":
        g = np.asarray(im.convert("L"), np.uint16) * 257  # 0..255 -> 0..65535 exactly
        im = Image.fromarray(g)  # mode I;16
    elif variant in ("rgba", "la"):
        alpha = _border_alpha(im.size)
        base = im if variant == "rgba" else im.convert("L")
        # Black under the transparent pixels, as many tools store them: a decoder that drops
        # alpha sees a black frame, one that composites sees the background.
        black = Image.new(base.mode, base.size, 0)
        im = Image.composite(base, black, Image.fromarray((alpha > 0).astype(np.uint8) * 255))
        im.putalpha(Image.fromarray(alpha))
    elif variant == "palette":
        im = im.quantize(64)
    elif variant == "cmyk":
        im = im.convert("CMYK")
    im.save(path, pil_format, **({"quality": 90} if fmt in ("jpeg", "webp") else {}))
    return 1


def _border_alpha(size: tuple[int, int]) -> np.ndarray:
    """Opaque middle, a transparent frame an eighth of each side wide, half-transparent
    between."""
    w, h = size
    ys, xs = np.mgrid[0:h, 0:w]
    d = np.minimum(np.minimum(xs, w - 1 - xs) / max(1, w), np.minimum(ys, h - 1 - ys) / max(1, h))
    return np.where(d < 1 / 8, 0, np.where(d < 3 / 16, 128, 255)).astype(np.uint8)


def make_large_jpeg(path: Path, size: tuple[int, int] = (1920, 1080), quality: int = 90) -> Path:
    """A `size` (w, h) photo collage JPEG of the package's photos (4 x 2 cells)."""
    w, h = size
    cw, ch = w // 4, h // 2
    canvas = Image.new("RGB", (w, h))
    for k, name in enumerate(_COLLAGE):
        src = photo(name)
        scale = max(cw / src.width, ch / src.height)
        sw, sh = src.width * scale, src.height * scale
        box = ((sw - cw) / 2 / scale, (sh - ch) / 2 / scale)
        cell = src.resize((cw, ch), Image.Resampling.BICUBIC,
                          box=(box[0], box[1], box[0] + cw / scale, box[1] + ch / scale))
        canvas.paste(cell, ((k % 4) * cw, (k // 4) * ch))
    path = Path(path)
    canvas.save(path, "JPEG", quality=quality, subsampling="4:2:0")
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", nargs="?", type=Path, help="folder for the labelled set")
    ap.add_argument("--per-class", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--large-jpeg", type=Path, help="write the large collage JPEG here instead")
    ap.add_argument("--size", default="1920x1080", help="the large JPEG's WxH")
    args = ap.parse_args(argv)
    if args.large_jpeg:
        if args.large_jpeg.exists():
            raise SystemExit(f"{args.large_jpeg}: already exists")
        w, h = (int(v) for v in args.size.lower().split("x"))
        print(make_large_jpeg(args.large_jpeg, (w, h)))
        return 0
    if args.out is None:
        ap.error("give OUT (a folder for the set) or --large-jpeg FILE")
    m = make_image_set(args.out, args.per_class, args.seed)
    print(f"{args.out}: {len(m['files'])} images in {len(m['classes'])} classes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
