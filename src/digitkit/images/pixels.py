"""Files to tensors for general (non-digit) image classifiers: bytes -> gray or RGB pixels ->
the model's (H, W), as float32 0..255 (groundwork of issue 18; not yet used by `infer` or
`export`, which still serve digit models through `digitkit.images.decode`).

How a file becomes pixels, in order (each rule stated once, here):

1. Read: only regular files, size-capped (`digitkit.images.reading.read_file`).
2. Open: only PNG, JPEG, BMP, GIF, TIFF and WebP (the README's list, passed to Pillow as
   `formats=`, so no other parser, and no external program, ever sees the bytes). Pictures
   over `decode.MAX_PIXELS` are refused from the header. An animation or a multi-page TIFF
   gives its first frame.
3. A JPEG much larger than the model input is decoded at 1/2, 1/4 or 1/8 size by libjpeg's
   DCT scaling (`Image.draft`), never smaller than the final resize needs
   (`resize.draft_size`), so the picture is only ever shrunk afterwards.
4. EXIF orientation (JPEG, PNG, TIFF, WebP) is applied: the picture is classified the way
   every viewer shows it.
5. Pixel formats: 16-bit gray (PNG, TIFF) is scaled to 8 bits, 0..65535 -> 0..255 rounded
   (Pillow's own conversion clips it at 255 instead); 16-bit colour is reduced by Pillow to
   its high byte (within one level of the same scaling). Palette, bilevel, CMYK and YCbCr
   pictures become RGB by Pillow's conversions (CMYK without colour management, as every
   training loader converts it: PIL's ``convert("RGB")``). Colour profiles are not applied,
   for the same reason. 32-bit integer and float samples have no stated range: refused.
6. Transparency (an alpha channel, LA, palette or single-colour transparency) is composited
   onto the policy's background colour, white by default: the colour stored under
   transparent pixels is arbitrary (often black), so dropping alpha, as
   ``convert("RGB")`` does, would make results depend on how the file was saved; white is
   what a viewer shows.
7. Gray output from colour uses ITU-R 601-2 luma (Pillow's ``convert("L")``, the same as
   Keras' ``color_mode="grayscale"`` and ``tf.image.rgb_to_grayscale``); RGB output from gray
   repeats the gray value.
8. Resize by the policy (`digitkit.images.resize`): squash, center-crop or letterbox.

Errors are ImageError(path, reason) with the reasons `digitkit.images.decode` gives.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import ExifTags, Image, ImageOps

from digitkit.errors import ImageError
from digitkit.images.decode import decode_each, kept, open_image
from digitkit.images.faults import FAULTS, inject_fault
from digitkit.images.formats import PILLOW_FORMATS
from digitkit.images.reading import MAX_FILE_SIZE, read_file
from digitkit.images.resize import draft_size, geometry, resize
from digitkit.model.policy import MAX_SIDE, PixelPolicy  # noqa: F401  (the images layer's names)

#: The formats decoded (Pillow's names): the one allow-list, `digitkit.images.formats`.
FORMATS = PILLOW_FORMATS


_SIXTEEN_BIT = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
_ORIENTATION = ExifTags.Base.Orientation


# -- one file ----------------------------------------------------------------------------


def load_pixels(path: str | os.PathLike, policy: PixelPolicy,
                max_file_size: int = MAX_FILE_SIZE) -> np.ndarray:
    """One file as the model's input, float32 (H, W, C) 0..255.

    Raises ImageError(path, reason) for anything that is not a usable picture: missing, not a
    regular file, over `max_file_size` bytes, empty, truncated, not an image or not a
    supported format, over MAX_PIXELS, an unsupported pixel format.
    """
    if FAULTS:
        inject_fault(path)
    return pixels_from_bytes(read_file(path, max_file_size), policy, path)


def pixels_from_bytes(data: bytes, policy: PixelPolicy, path="<bytes>",
                      reduce_jpeg: bool = True) -> np.ndarray:
    """`load_pixels` for bytes already read (an object-store fetch); `path` names them in
    errors. `reduce_jpeg=False` decodes every JPEG at full size (the benchmark's and the
    tests' reference)."""
    out = _to_policy(data, policy, path, reduce_jpeg)
    a = np.asarray(out, dtype=np.float32)
    return a[:, :, None] if a.ndim == 2 else a


def load_pixels_batch(paths: list, policy: PixelPolicy, max_file_size: int = MAX_FILE_SIZE,
                      on_file: Callable[[], object] | None = None
                      ) -> tuple[np.ndarray, list[str]]:
    """`load_pixels` over many files, errors as values: (float32 (n_good, H, W, C) in order,
    one reason per path, "" for a good file), as `decode.load_images` gives for digits.

    `on_file()` is called before each file is read (the engines arm a per-file time limit
    with it)."""
    h, w = policy.size
    buf = np.empty((len(paths), h, w, policy.channels), np.float32)

    def put(i, p, data):
        out = _to_policy(data, policy, p, True)
        buf[i] = np.asarray(out, np.float32).reshape(h, w, policy.channels)

    reasons = decode_each(paths, put, max_file_size, on_file)
    return kept(buf, reasons), reasons


@dataclass(frozen=True)
class PolicyDecoder:
    """`load_pixels_batch` under one policy, called as the digit decoder is
    (`decode.load_images(paths, max_file_size, on_file)`): what the engines' workers and the
    Ray actors run for a general classifier. A value, so it pickles to every worker."""

    policy: PixelPolicy

    def __call__(self, paths: list, max_file_size: int = MAX_FILE_SIZE,
                 on_file: Callable[[], object] | None = None) -> tuple[np.ndarray, list[str]]:
        return load_pixels_batch(paths, self.policy, max_file_size, on_file)


# -- the steps -----------------------------------------------------------------------------


def _to_policy(data: bytes, policy: PixelPolicy, path, reduce_jpeg: bool) -> Image.Image:
    """The file's bytes as a Pillow image of the policy's mode (L or RGB) and size."""
    out_h, out_w = policy.size
    mode = "L" if policy.channels == 1 else "RGB"
    with open_image(path, data) as im:
        w, h = im.size
        scale, display = 1.0, None
        if reduce_jpeg and im.format in ("JPEG", "MPO"):
            # The draft is asked for before decoding, in stored orientation; the geometry is
            # the one the full picture gets, scaled by the draft's exact 1/s (Pillow's box:
            # a side not divisible by s is rounded up in pixels).
            turned = _orientation(im) in (5, 6, 7, 8)
            display = (h, w) if turned else (w, h)
            need = draft_size(geometry(policy.resize, *display, out_h, out_w,
                                       policy.crop_fraction), *display)
            drafted = im.draft(mode, need[::-1] if turned else need)
            if drafted is not None:
                scale = drafted[1][2] / w
        im.load()
        # Pillow applies a TIFF's orientation while loading (the tag is gone after it);
        # JPEG, PNG and WebP keep theirs for this.
        if _orientation(im) not in (1, None):
            im = ImageOps.exif_transpose(im)
        im = _to_mode(im, mode, policy.background, path)
        g = geometry(policy.resize, *(display or im.size), out_h, out_w, policy.crop_fraction)
        if scale != 1.0:
            g = g.scaled(scale, scale)
        pad = policy.pad if mode == "RGB" else _luma(policy.pad)
        return resize(im, g, out_h, out_w, policy.interpolation, pad)


def _orientation(im: Image.Image) -> int | None:
    try:
        return im.getexif().get(_ORIENTATION)
    except Exception:  # a damaged EXIF block: the picture is shown unrotated, as viewers do
        return None


def _to_mode(im: Image.Image, mode: str, background: tuple[int, int, int], path) -> Image.Image:
    """`im` as mode L or RGB, 16-bit scaled, transparency composited on `background`."""
    if im.mode in _SIXTEEN_BIT:
        im = _sixteen_to_eight(im)
    elif im.mode in ("I", "F"):
        kind = "32-bit integer" if im.mode == "I" else "floating-point"
        raise ImageError(path, f"unsupported pixel format ({kind} samples have no stated "
                               f"range; 8- and 16-bit pictures are read)")
    if im.mode in _ALPHA_MODES or "transparency" in im.info:
        rgba = im.convert("RGBA")
        base = Image.new("RGBA", im.size, (*background, 255))
        base.alpha_composite(rgba)
        im = base.convert("RGB")
    if im.mode not in ("L", "RGB", "1", "P"):
        im = im.convert("RGB")  # CMYK, YCbCr, RGBX, ...: Pillow's conversion to RGB
    return im if im.mode == mode else im.convert(mode)


def _sixteen_to_eight(im: Image.Image) -> Image.Image:
    """A 16-bit gray picture as 8-bit gray (LA if it has a transparent value), scaled."""
    a = np.asarray(im)
    a8 = ((a.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)  # round(a*255/65535)
    out = Image.fromarray(a8, "L")
    t = im.info.get("transparency")
    if isinstance(t, int):
        alpha = np.where(a == t, 0, 255).astype(np.uint8)
        out = Image.merge("LA", (out, Image.fromarray(alpha, "L")))
    return out


def _luma(c: tuple[int, int, int]) -> int:
    """A colour as gray, by the same rule as every picture (Pillow's convert("L"))."""
    return Image.new("RGB", (1, 1), c).convert("L").getpixel((0, 0))


__all__ = ["FORMATS", "PixelPolicy", "PolicyDecoder", "load_pixels", "load_pixels_batch",
           "pixels_from_bytes"]
