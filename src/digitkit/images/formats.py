"""The image formats digitkit reads: one table, the allow-list every decoder follows.

A file is decoded only when its bytes are one of these formats, whatever its name says: Pillow
is asked for these formats alone (its `formats=` argument), OpenCV only for plain PNGs
(`digitkit.images.decode`). Every other format Pillow knows is refused with "unsupported
format (NAME)", named from its signature and never decoded: some of them hand the file to an
external program (PostScript to Ghostscript), and the rest are parsers no digit picture needs.
Folders are searched for these suffixes (`digitkit.images.discovery`).
"""

from __future__ import annotations

#: Format (Pillow's name) -> the file suffixes searched for in folders. JPEG includes the
#: multi-picture JPEGs of phone cameras (MPO, which Pillow's JPEG reader opens); PNG includes
#: APNG; TIFF and GIF give their first page or frame.
SUPPORTED = {
    "PNG": (".png",),
    "JPEG": (".jpg", ".jpeg"),
    "BMP": (".bmp",),
    "GIF": (".gif",),
    "TIFF": (".tif", ".tiff"),
    "WEBP": (".webp",),
}
#: What `Image.open(..., formats=)` is given.
PILLOW_FORMATS = tuple(SUPPORTED)
#: Suffixes of image files inside folders, lower case.
IMAGE_EXTENSIONS = frozenset(s for suffixes in SUPPORTED.values() for s in suffixes)
#: The list as error reasons and the README say it.
SUPPORTED_TEXT = "PNG, JPEG, BMP, GIF, TIFF or WebP"

#: Signatures of formats Pillow's own recognisers miss (no accept test in the plugin, or not a
#: format Pillow reads at all), checked after them.
_OTHER_SIGNATURES = ((b"Image type:", "IM"), (b"%PDF", "PDF"), (b"<?xml", "XML/SVG"),
                     (b"<svg", "SVG"), (b"\x8aMNG", "MNG"), (b"\xff\x0a", "JPEG XL"),
                     (b"\x00\x00\x00\x0cJXL ", "JPEG XL"))
_TGA_FOOTER = b"TRUEVISION-XFILE.\x00"


def unsupported_reason(data: bytes) -> str:
    """The error reason for `data`, which no supported format decodes: "unsupported format
    (NAME; ...)" when the signature names another format, else "not an image". Nothing here
    parses more than a signature, and nothing is decoded."""
    name = _format_name(data)
    if name is None:
        return "not an image (unrecognised format)"
    return f"unsupported format ({name}; digitkit reads {SUPPORTED_TEXT})"


def _format_name(data: bytes) -> str | None:
    from PIL import Image

    Image.init()
    prefix = data[:16]  # what Pillow's recognisers look at
    for name in Image.ID:
        accept = Image.OPEN[name][1]
        if name in SUPPORTED or accept is None:
            continue
        try:
            if accept(prefix):
                return name
        except Exception:  # noqa: BLE001 - a recogniser that trips on odd bytes: not it
            continue
    for magic, name in _OTHER_SIGNATURES:
        if data.startswith(magic):
            return name
    if data.endswith(_TGA_FOOTER):
        return "TGA"
    return None
