"""The MNIST convention from any decoded image: 28x28 uint8, white ink on black, digit fitted
in a 20x20 box and centred by centre of mass, as MNIST itself was built (LeCun et al.).

The steps, in order, on an image as `digitkit.images.decode` opened it (an animation's first
frame):

1. Orientation: apply the EXIF orientation (phone cameras store it there).
2. Alpha first: an image with any transparency is composited onto a background that contrasts
   with its ink (a canvas app's black strokes on a transparent layer go onto white, white
   strokes onto black); fully opaque alpha is a no-op. Everything else is decided afterwards.
3. Grayscale: 8-bit modes through Pillow's ITU-R 601 luma (exact for gray-as-RGB), 16-bit and
   32-bit modes scaled down to 0..255.
4. Polarity rule: take the border ring (2% of the short side, at least 1 pixel) and the
   midpoint of the image's darkest and lightest values. If most border pixels (a strict
   majority, i.e. the border's median) are lighter than the midpoint, the image is dark ink on
   light paper and is inverted. The midpoint rather than a fixed 128 keeps grey paper under
   poor light and vignetted photos right; the border rather than the whole image keeps a
   bold digit that covers most of the frame right.
5. Images that already follow the convention take the fast path and come out bit-for-bit:
   28x28 with a black border (median 0) and ink that fits the 20x20 box. They are only
   shifted when their centre of mass is more than a pixel off (MNIST's own are within 0.5).
6. Everything else: subtract the background, cut the paper's noise (3 robust sigmas of the
   border, or 10% of the ink's peak, whichever is larger), scale the ink to 0..1, crop to the
   ink (trimming 0.2% of the ink mass at each side so dust specks don't shrink the digit),
   thicken pen strokes that would fade to a hairline when shrunk (photos of thin pens), fit
   into 20x20 keeping the aspect ratio (Lanczos), stretch the peak to 255, and paste into
   28x28 so the centre of mass lands on pixel (14, 14), where MNIST's own digits sit.

Blank images: the result is the model's whole view of a file, so "does it hold a digit" is
decided on it (`ink_counts`, `blank_reason`): fewer than MIN_INK_PIXELS pixels of at least
INK_LEVEL is blank (uniform, fully transparent, a single pixel, a faint smudge, a speck of
dust). The general path also treats a source whose ink covers fewer than MIN_INK_PIXELS
pixels as blank before scaling, because step 6 would otherwise blow a speck up to a 20x20
blob. A blank image still converts (all black); the decoder turns it into an error row.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps

SIZE = 28
BOX = 20
#: MNIST digits' centre of mass lies in [13.5, 14.5] on both axes: the convention is (14, 14).
CENTRE = 14.0
#: Photos are reduced to at most this long side before processing: the digit ends up in a
#: 20x20 box, and 512 px keeps strokes of a few pixels while bounding the work per image.
WORK_SIDE = 512
#: Stroke width of MNIST digits inside the 20x20 box, in pixels (measured on the training set
#: with the same estimator as `_stroke_width`: median 2.8); thinner strokes are thickened.
TARGET_STROKE = 2.8

#: A pixel is ink when it holds at least a quarter of full intensity (64 of 255): anti-aliased
#: fringes and paper noise stay below it, every stroke of a real digit is above it.
INK_LEVEL = 64
#: Fewer ink pixels than this and an image holds no digit ("blank"). MNIST's own 70,000
#: digits have at least 26 (a thin "1"; 0.1% of them have fewer than 38), so 10 leaves a wide
#: margin while catching specks, single pixels and near-uniform images.
#: tests/test_images_mnist_convention.py checks all 70,000 against it.
MIN_INK_PIXELS = 10

_ARANGE = np.arange(SIZE, dtype=np.int64)
_ARANGE_F = _ARANGE.astype(np.float64)


def to_mnist(image: Image.Image) -> np.ndarray:
    """Return `image` in the MNIST convention, uint8 (28, 28). See the module docstring."""
    if image.mode == "L" and image.size == (SIZE, SIZE):
        out = _convention_fast_path(np.asarray(image))
        if out is not None:
            return out
    image = ImageOps.exif_transpose(image) if image.getexif() else image
    if max(image.size) > 2 * WORK_SIDE:
        # Box-reduce big images early (cheap, and averaging is what a shrink needs); the few
        # modes reduce() lacks are widened first, keeping alpha and 16-bit depth.
        if image.mode == "P":
            image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        elif image.mode == "1":
            image = image.convert("L")
        elif image.mode.startswith("I;16"):
            image = image.convert("I")
        image = image.reduce(max(image.size) // WORK_SIDE)
    gray = _to_gray(image)  # float32, 0..255
    if gray.shape == (SIZE, SIZE):
        g8 = np.rint(gray).astype(np.uint8)
        inverted = 255 - g8 if _is_light_background(g8) else g8
        out = _convention_fast_path(inverted, polarity_checked=True)
        if out is not None:
            return out
    return _normalise(gray)


def gray_to_mnist(a: np.ndarray) -> np.ndarray:
    """`to_mnist` of a decoded 8-bit grayscale array, uint8 (h, w); a 28x28 one that already
    follows the convention skips the round trip through a Pillow image (most batch files)."""
    if a.shape == (SIZE, SIZE):
        out = _convention_fast_path(a)
        if out is not None:
            return out
    return to_mnist(Image.fromarray(a))


def follows_convention(a: np.ndarray) -> np.ndarray:
    """Vectorised `_convention_fast_path` test over (n, 28, 28) uint8: True where the image
    passes through unchanged (dark border, ink within 20x20, centre of mass within a pixel of
    14), so a batch of MNIST-like files is checked in a few numpy calls."""
    border = np.concatenate((a[:, 0], a[:, -1], a[:, 1:-1, 0], a[:, 1:-1, -1]), axis=1)
    dark = np.count_nonzero(border, axis=1) * 2 < border.shape[1]
    # einsum: its reduction loop sums a short axis (28) for a fraction of what numpy's sum
    # costs, and this runs on every chunk of every batch (BENCHMARKS.md, "Hostile inputs and
    # resume at scale"). int32 holds any sum (28 x 28 x 255), and the float moments below are
    # exact (integers under 2**53).
    row_mass = np.einsum("nij->ni", a, dtype=np.int32)
    col_mass = np.einsum("nij->nj", a, dtype=np.int32)
    rows, cols = row_mass > 0, col_mass > 0
    height = SIZE - rows[:, ::-1].argmax(axis=1) - rows.argmax(axis=1)
    width = SIZE - cols[:, ::-1].argmax(axis=1) - cols.argmax(axis=1)
    total = row_mass.sum(axis=1)
    blank = total == 0
    safe = np.where(blank, 1, total)
    cy = (row_mass @ _ARANGE_F) / safe
    cx = (col_mass @ _ARANGE_F) / safe
    centred = (np.abs(cy - CENTRE) <= 1) & (np.abs(cx - CENTRE) <= 1)
    fits = (height <= BOX) & (width <= BOX) & centred
    return dark & (blank | fits)


def ink_counts(a: np.ndarray) -> np.ndarray:
    """Ink pixels (>= INK_LEVEL) of each image in `a`, uint8 (..., 28, 28)."""
    # einsum over the mask's bytes: a third of count_nonzero's time per image
    return np.einsum("...ij->...", (a >= INK_LEVEL).view(np.uint8), dtype=np.int64)


def blank_reason(ink: int) -> str:
    """The error reason of an image with `ink` ink pixels: "" when it holds a digit."""
    if ink >= MIN_INK_PIXELS:
        return ""
    return (f"blank: no digit ({int(ink)} ink pixel{'' if ink == 1 else 's'}; a digit has at "
            f"least {MIN_INK_PIXELS})")


# -- fast path ------------------------------------------------------------------------------


def _convention_fast_path(a: np.ndarray, polarity_checked: bool = False) -> np.ndarray | None:
    """Pass an image already in the convention through unchanged; None if it is not.

    Runs on every 28x28 file, so it is written for few numpy calls (each has a fixed cost).
    """
    border = _border(a, 1)
    # Median of the border is 0 <=> more than half of it is 0. Such a border can't be lighter
    # than any midpoint, so MNIST-like files skip the polarity test altogether.
    if np.count_nonzero(border) * 2 >= border.size:
        if polarity_checked or not _majority_above(border, (int(a.min()) + int(a.max())) / 2):
            return None
        a = 255 - a
        if np.count_nonzero(_border(a, 1)) * 2 >= border.size:
            return None
    row_mass = a.sum(axis=1, dtype=np.int64)
    col_mass = a.sum(axis=0, dtype=np.int64)
    rows = np.flatnonzero(row_mass)
    if rows.size == 0:
        return np.array(a, dtype=np.uint8)  # blank
    cols = np.flatnonzero(col_mass)
    if rows[-1] - rows[0] >= BOX or cols[-1] - cols[0] >= BOX:
        return None
    total = int(row_mass.sum())
    cy = int(row_mass @ _ARANGE) / total
    cx = int(col_mass @ _ARANGE) / total
    if abs(cy - CENTRE) <= 1.0 and abs(cx - CENTRE) <= 1.0:
        return np.array(a, dtype=np.uint8)  # a copy: np.asarray of a PIL image is read-only
    patch = a[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    return _paste_centred(patch, cy - rows[0], cx - cols[0])


# -- general path ---------------------------------------------------------------------------


def _to_gray(image: Image.Image) -> np.ndarray:
    """Composite alpha, then return luminance as float32 0..255."""
    mode = image.mode
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode == "1":
        image = image.convert("L")
    elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        image = image.convert("RGB")
    elif mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(image, dtype=np.float32)
        if mode == "F" and a.size and float(np.nanmax(a)) <= 1.0:
            a = a * 255.0  # float images usually hold 0..1
        elif a.size and float(a.max()) > 255.0:
            a = a / 257.0  # 16-bit: 65535 -> 255
        return np.clip(np.nan_to_num(a), 0, 255).astype(np.float32)
    mode = image.mode
    if mode in ("RGBA", "LA", "RGBa", "La", "PA"):
        image = _composite_alpha(image.convert("RGBA" if mode != "LA" else "LA"))
    if image.mode != "L":
        image = image.convert("L")
    return np.asarray(image, dtype=np.float32)


def _composite_alpha(image: Image.Image) -> Image.Image:
    alpha = np.asarray(image.getchannel("A"))
    if alpha.min() == 255:
        return image.convert("RGB" if image.mode == "RGBA" else "L")
    lum = np.asarray(image.convert("L"), dtype=np.float32)
    opaque = alpha >= 128
    # The ink is whatever is drawn (opaque); put it on the background it contrasts with most.
    ink = float(lum[opaque].mean()) if opaque.any() else 0.0
    background = 0 if ink >= 128 else 255
    a = alpha.astype(np.float32) / 255.0
    return Image.fromarray(np.rint(lum * a + background * (1.0 - a)).astype(np.uint8), "L")


def _border(a: np.ndarray, width: int) -> np.ndarray:
    return np.concatenate((a[:width].ravel(), a[-width:].ravel(),
                           a[width:-width, :width].ravel(), a[width:-width, -width:].ravel()))


def _border_width(a: np.ndarray) -> int:
    return max(1, round(0.02 * min(a.shape)))


def _majority_above(border: np.ndarray, level: float) -> bool:
    return np.count_nonzero(border > level) * 2 > border.size


def _is_light_background(a: np.ndarray) -> bool:
    """The polarity rule: most of the border is lighter than the midpoint of the extremes."""
    if min(a.shape) < 3:
        return False
    return _majority_above(_border(a, _border_width(a)), (float(a.min()) + float(a.max())) / 2.0)


def _normalise(gray: np.ndarray) -> np.ndarray:
    if min(gray.shape) < 3:
        gray = np.pad(gray, 2, mode="edge")
    if _is_light_background(gray):
        gray = 255.0 - gray
    border = _border(gray, _border_width(gray))
    bg = float(np.median(border))
    ink = gray - bg
    peak = float(ink.max())
    mad = float(np.median(np.abs(border - bg)))
    cutoff = max(3.0 * 1.4826 * mad, 0.1 * peak)
    if peak <= 0 or peak <= cutoff:
        return np.zeros((SIZE, SIZE), np.uint8)  # blank: nothing stands out from the paper
    # Zero the paper's noise but keep the ink's own profile (its anti-aliased edges).
    x = np.where(ink > cutoff, ink / peak, 0.0)
    if np.count_nonzero(x >= INK_LEVEL / 255.0) < MIN_INK_PIXELS:
        return np.zeros((SIZE, SIZE), np.uint8)  # a speck: scaled up it would look like ink

    r0, r1 = _mass_span(x.sum(axis=1))
    c0, c1 = _mass_span(x.sum(axis=0))
    x = x[r0:r1 + 1, c0:c1 + 1]
    x = _thicken(x)

    h, w = x.shape
    scale = BOX / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    small = Image.fromarray(x.astype(np.float32), "F").resize(
        (nw, nh), Image.Resampling.LANCZOS, reducing_gap=3.0)
    patch = np.clip(np.asarray(small, dtype=np.float64), 0.0, 1.0)
    top = patch.max()
    if top <= 0:
        return np.zeros((SIZE, SIZE), np.uint8)
    patch = np.rint(patch * (255.0 / top)).astype(np.uint8)
    total = float(patch.sum(dtype=np.int64))
    cy = float(patch.sum(axis=1, dtype=np.int64) @ np.arange(nh)) / total
    cx = float(patch.sum(axis=0, dtype=np.int64) @ np.arange(nw)) / total
    return _paste_centred(patch, cy, cx)


def _mass_span(profile: np.ndarray, trim: float = 0.002) -> tuple[int, int]:
    """First and last index holding the middle (1 - 2*trim) of the mass; ink always kept."""
    cum = np.cumsum(profile, dtype=np.float64)
    total = cum[-1]
    lo = int(np.searchsorted(cum, trim * total, side="right"))
    hi = int(np.searchsorted(cum, (1.0 - trim) * total, side="left"))
    return min(lo, hi), max(lo, hi)


def _stroke_width(x: np.ndarray) -> float:
    """Mean stroke width in pixels: 2 * area / boundary length of the ink mask."""
    m = x > 0.5
    area = int(m.sum())
    if area == 0:
        return 0.0
    p = np.pad(m, 1)
    interior = p[1:-1, 1:-1] & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    boundary = area - int(interior.sum())
    return 2.0 * area / max(boundary, 1)


def _thicken(x: np.ndarray) -> np.ndarray:
    """Dilate strokes that the shrink into 20x20 would turn into faint hairlines."""
    scale = BOX / max(x.shape)
    if scale >= 1.0:
        return x
    needed = TARGET_STROKE / scale  # width here that ends up MNIST-like after the shrink
    width = _stroke_width(x)
    if width <= 0 or width >= 0.6 * needed:
        return x
    k = int(min(round(needed - width), 41)) | 1  # odd, and bounded: big kernels are slow
    if k < 3:
        return x
    # Pad first so the strokes can grow outwards instead of being clipped at the crop.
    return _dilate(np.pad(x, k // 2), k)


def _dilate(x: np.ndarray, k: int) -> np.ndarray:
    """Square max filter of odd size k, same shape out, as two separable passes."""
    r = k // 2
    h, w = x.shape
    p = np.pad(x, r)
    rows = p[0:h].copy()
    for i in range(1, k):
        np.maximum(rows, p[i:i + h], out=rows)
    out = rows[:, 0:w].copy()
    for j in range(1, k):
        np.maximum(out, rows[:, j:j + w], out=out)
    return out


def _paste_centred(patch: np.ndarray, cy: float, cx: float) -> np.ndarray:
    """Paste `patch` into 28x28 so its centre of mass (cy, cx) lands on (14, 14)."""
    h, w = patch.shape
    if h > SIZE or w > SIZE:
        patch = patch[:SIZE, :SIZE]
        h, w = patch.shape
    top = int(min(max(round(CENTRE - cy), 0), SIZE - h))
    left = int(min(max(round(CENTRE - cx), 0), SIZE - w))
    out = np.zeros((SIZE, SIZE), np.uint8)
    out[top:top + h, left:left + w] = patch
    return out
