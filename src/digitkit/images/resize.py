"""Resize geometry for general (non-digit) models: which part of a picture becomes the model's
(H, W) input, and how big a JPEG must be decoded for it (groundwork of issue 18).

Three policies, named as the flag will name them:

- ``squash``: the whole picture to (H, W), aspect ratio not kept. What Keras'
  `image_dataset_from_directory` and `load_img(target_size=...)` do by default.
- ``center-crop``: the largest centred box of the target's aspect ratio, shrunk by the crop
  fraction on each side (1.0 keeps that whole box, as Keras' ``crop_to_aspect_ratio=True``
  does; 0.875 is timm's usual ``crop_pct``), to (H, W). For a square target this is timm's
  "resize the shorter side to size / crop_pct, then centre-crop", in one step: the box is
  fractional, so no rounding happens between the two.
- ``letterbox``: the whole picture scaled to fit inside (H, W), aspect ratio kept, centred,
  the rest filled with the pad colour (Keras' ``pad_to_aspect_ratio=True`` pads with black).

Interpolation (Pillow's filters, which widen with the scale factor when shrinking, so a
downscale averages every source pixel it covers and does not alias):

- ``bilinear`` (default): a triangle filter; what Keras, timm and torchvision default to.
- ``bicubic``: timm's choice for many ImageNet models.
- ``area``: the mean of the source pixels each output pixel covers (Pillow's BOX, OpenCV's
  INTER_AREA). Meant for shrinking; enlarging with it repeats pixels.

The geometry is computed from the picture's full size in display orientation, so the output
is the same whether a JPEG is decoded whole or at a reduced size (`draft_size`); only the
pixels differ a little (a reduced decode averages 8x8 blocks before the resize filter).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from PIL import Image

from digitkit.model.policy import INTERPOLATION_NAMES, RESIZE_MODES

#: Interpolation name -> Pillow filter (one table; the policy validates against its keys).
INTERPOLATIONS = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "area": Image.Resampling.BOX,
}
assert tuple(INTERPOLATIONS) == INTERPOLATION_NAMES  # one list of names, in model.contract


@dataclass(frozen=True)
class Geometry:
    """Where a picture of a given size goes in the (H, W) output.

    `box` (left, top, right, bottom, floats, in source pixels) is resized to `size` (w, h)
    and pasted at `offset` (x, y); anything of the output it leaves uncovered is padding
    (letterbox only)."""

    box: tuple[float, float, float, float]
    size: tuple[int, int]
    offset: tuple[int, int]

    def scaled(self, fx: float, fy: float) -> Geometry:
        """The same geometry for the picture decoded at (fx, fy) times its full size."""
        left, top, right, bottom = self.box
        return Geometry((left * fx, top * fy, right * fx, bottom * fy), self.size, self.offset)


def geometry(mode: str, width: int, height: int, out_h: int, out_w: int,
             crop_fraction: float = 1.0) -> Geometry:
    """The geometry of `mode` for a `width` x `height` picture and an (out_h, out_w) output."""
    if mode == "squash":
        return Geometry((0.0, 0.0, float(width), float(height)), (out_w, out_h), (0, 0))
    if mode == "center-crop":
        aspect = out_w / out_h
        if width / height > aspect:  # wider than the target: keep the full height
            box_w, box_h = height * aspect, float(height)
        else:
            box_w, box_h = float(width), width / aspect
        box_w, box_h = box_w * crop_fraction, box_h * crop_fraction
        left, top = (width - box_w) / 2, (height - box_h) / 2
        return Geometry((left, top, left + box_w, top + box_h), (out_w, out_h), (0, 0))
    if mode == "letterbox":
        scale = min(out_w / width, out_h / height)
        w = min(out_w, max(1, round(width * scale)))
        h = min(out_h, max(1, round(height * scale)))
        return Geometry((0.0, 0.0, float(width), float(height)), (w, h),
                        ((out_w - w) // 2, (out_h - h) // 2))
    raise ValueError(f"unknown resize mode {mode!r}")


#: How much larger than the output the box of a reduced JPEG decode must stay. At 1 the
#: DCT-scaled picture may be just the output's size, and its 8x8 block means (chroma
#: replicated, not interpolated) then filtered again stray further from a full decode than at
#: 2, for little more time (both measured in BENCHMARKS.md, benchmarks/bench_decode_reduced.py).
DRAFT_MARGIN = 2


def draft_size(g: Geometry, width: int, height: int, margin: float | None = None
               ) -> tuple[int, int]:
    """The smallest decoded size (w, h) of a `width` x `height` picture at which `g`'s box
    still spans `margin` (DRAFT_MARGIN by default, at least 1) times its output size in both
    directions: a JPEG decoded at reduced size (DCT scaling, Pillow's `Image.draft`) to at
    least this size is never enlarged afterwards. Pillow's draft picks the largest 1/2, 1/4 or
    1/8 scale whose result is at least the size asked for, so asking for this one is safe."""
    m = max(1.0, DRAFT_MARGIN if margin is None else margin)
    left, top, right, bottom = g.box
    w = math.ceil(m * width * g.size[0] / (right - left) - 1e-9)
    h = math.ceil(m * height * g.size[1] / (bottom - top) - 1e-9)
    return min(width, max(1, w)), min(height, max(1, h))


def resize(im: Image.Image, g: Geometry, out_h: int, out_w: int, interpolation: str,
           pad: int | tuple[int, int, int]) -> Image.Image:
    """`im` (mode L or RGB) put into an (out_h, out_w) image of the same mode by `g`."""
    box = g.box
    if g.size == im.size and box == (0.0, 0.0, float(im.width), float(im.height)):
        part = im  # already the right size: no filter pass (it would blur nothing, but costs)
    else:
        part = im.resize(g.size, INTERPOLATIONS[interpolation], box=box)
    if g.size == (out_w, out_h):
        return part
    canvas = Image.new(im.mode, (out_w, out_h), pad)
    canvas.paste(part, g.offset)
    return canvas

__all__ = ["DRAFT_MARGIN", "INTERPOLATIONS", "RESIZE_MODES", "Geometry", "draft_size", "geometry",
           "resize"]
