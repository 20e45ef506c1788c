"""How a file becomes a general model's input, as a value: `PixelPolicy` (size, channels,
resize policy, crop fraction, pad and background colours, interpolation), validated, with the
JSON form recorded in export.json and every copy's metadata.

Pure Python, so that the model contract (digitkit.model.contract), whose preprocessing it is,
and the CLI's --help read it without Pillow or numpy; digitkit.images.pixels applies it
(digitkit.images.resize implements the resize policies and interpolations named here).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from digitkit.errors import DataError, UsageError

#: The resize policies and interpolations, by name.
RESIZE_MODES = ("squash", "center-crop", "letterbox")
INTERPOLATION_NAMES = ("bilinear", "bicubic", "area")

#: Largest model input side accepted by a policy: past it a "size" is a mistake (a model
#: input of 8192x8192x3 float32 is already 800 MB per image).
MAX_SIDE = 8192

_WHITE, _BLACK = (255, 255, 255), (0, 0, 0)


@dataclass(frozen=True)
class PixelPolicy:
    """How every file becomes a model's input: float32 (H, W, C) 0..255.

    size: (H, W) of the model input. channels: 1 (gray) or 3 (RGB). resize: squash,
    center-crop or letterbox (`digitkit.images.resize`). crop_fraction: the part of the
    centred box center-crop keeps, 0 < f <= 1 (only with center-crop). pad: the letterbox
    fill colour, RGB (only with letterbox). interpolation: bilinear, bicubic or area.
    background: the colour transparent pixels are composited onto, RGB.

    Colours may be given as one gray level; they are kept as RGB triples. Validated on
    construction: a bad value raises UsageError, one line.
    """

    size: tuple[int, int]
    channels: int
    resize: str = "squash"
    crop_fraction: float = 1.0
    pad: tuple[int, int, int] = _BLACK
    interpolation: str = "bilinear"
    background: tuple[int, int, int] = _WHITE

    def __post_init__(self):
        set_ = object.__setattr__  # frozen: normalise through the back door, once
        set_(self, "size", _size(self.size))
        if type(self.channels) is not int or self.channels not in (1, 3):
            raise UsageError(f"channels must be 1 (gray) or 3 (RGB), not {self.channels!r}")
        if not isinstance(self.resize, str) or self.resize not in RESIZE_MODES:
            raise UsageError(f"resize must be one of {', '.join(RESIZE_MODES)}, "
                             f"not {self.resize!r}")
        if not isinstance(self.interpolation, str) or self.interpolation not in INTERPOLATION_NAMES:
            raise UsageError(f"interpolation must be one of {', '.join(INTERPOLATION_NAMES)}, "
                             f"not {self.interpolation!r}")
        f = self.crop_fraction
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 < f <= 1:
            raise UsageError(f"crop fraction must be a number in (0, 1], not {f!r}")
        set_(self, "crop_fraction", float(f))
        if self.crop_fraction != 1.0 and self.resize != "center-crop":
            raise UsageError(f"a crop fraction applies only to center-crop resizing, "
                             f"not {self.resize}")
        set_(self, "pad", _colour("pad colour", self.pad))
        if self.pad != _BLACK and self.resize != "letterbox":
            raise UsageError(f"a pad colour applies only to letterbox resizing, not {self.resize}")
        set_(self, "background", _colour("background colour", self.background))

    def to_dict(self) -> dict:
        """The JSON-ready form recorded in export.json and in every model copy's metadata."""
        d = asdict(self)
        d["size"], d["pad"], d["background"] = list(self.size), list(self.pad), \
            list(self.background)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_dict(cls, d, origin=None) -> PixelPolicy:
        """The policy recorded by `to_dict`. Unknown or missing fields are refused; with
        `origin` (the file or model it was read from) errors are DataError(origin, ...),
        else UsageError."""
        try:
            if not isinstance(d, dict):
                raise UsageError(f"a pixel policy is a JSON object, not {type(d).__name__}")
            unknown = sorted(set(d) - _FIELDS)
            if unknown:
                raise UsageError(f"unknown pixel policy field {unknown[0]!r}")
            missing = [k for k in ("size", "channels") if k not in d]
            if missing:
                raise UsageError(f"pixel policy field {missing[0]!r} is missing")
            return cls(**d)
        except UsageError as err:
            if origin is None:
                raise
            raise DataError(origin, err.message) from err

    @classmethod
    def from_json(cls, text: str, origin=None) -> PixelPolicy:
        try:
            d = json.loads(text)
        except (ValueError, TypeError) as err:
            msg = f"pixel policy is not JSON ({err})"
            raise (UsageError(msg) if origin is None else DataError(origin, msg)) from err
        return cls.from_dict(d, origin)


_FIELDS = frozenset(PixelPolicy.__dataclass_fields__)


def _size(size) -> tuple[int, int]:
    if (not isinstance(size, (tuple, list)) or len(size) != 2
            or not all(type(v) is int and 1 <= v <= MAX_SIDE for v in size)):
        raise UsageError(f"size must be (height, width), each 1..{MAX_SIDE}, not {size!r}")
    return int(size[0]), int(size[1])


def _colour(what: str, c) -> tuple[int, int, int]:
    if type(c) is int:
        c = (c, c, c)
    if (not isinstance(c, (tuple, list)) or len(c) != 3
            or not all(type(v) is int and 0 <= v <= 255 for v in c)):
        raise UsageError(f"{what} must be a gray level or an (R, G, B) triple, "
                         f"each 0..255, not {c!r}")
    return tuple(c)


__all__ = ["INTERPOLATION_NAMES", "MAX_SIDE", "RESIZE_MODES", "PixelPolicy"]
