"""Compatibility shim: moved to digitkit.images (delete once every importer has switched)."""

from digitkit.images import (  # noqa: F401
    IMAGE_EXTENSIONS,
    class_label_of,
    find_images,
    is_image_name,
    iter_image_paths,
)
