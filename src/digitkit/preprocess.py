"""Compatibility shim: moved to digitkit.images (delete once every importer has switched)."""

from digitkit.images import MAX_PIXELS, load_image, load_images, to_mnist  # noqa: F401
