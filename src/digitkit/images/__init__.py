"""The image floor: which files a run sees (`discovery`), which of them are read and how much
(`reading`: regular files only, bounded), how a file is decoded or refused with a reason
(`decode`), and how a decoded image is put into the MNIST convention, or found blank
(`mnist_convention`). `faults` is a test-only hook that makes the decoder really crash.

Shared by batch inference (local and Ray engines), `bench --images` and training from image
folders, so a digit is found and prepared the same way whichever path it takes.
"""

from digitkit.images.decode import MAX_PIXELS, load_image, load_images
from digitkit.images.discovery import (
    IMAGE_EXTENSIONS,
    class_label_of,
    find_images,
    is_image_name,
    iter_image_paths,
)
from digitkit.images.mnist_convention import to_mnist
from digitkit.images.reading import MAX_FILE_SIZE

__all__ = [
    "IMAGE_EXTENSIONS",
    "MAX_FILE_SIZE",
    "MAX_PIXELS",
    "class_label_of",
    "find_images",
    "is_image_name",
    "iter_image_paths",
    "load_image",
    "load_images",
    "to_mnist",
]
