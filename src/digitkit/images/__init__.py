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


def decoder_for(contract=None):
    """How files become a model's pixels, as `load_images(paths, max_file_size, on_file) ->
    (pixels (n_good, *contract.pixels_shape), reasons)`: the MNIST digit decoder for digit
    models (contract None or `is_digit`), else `pixels.PolicyDecoder` of the contract's
    pixel policy (float32 (n, H, W, C) 0..255)."""
    if contract is None or contract.is_digit:
        return load_images
    from digitkit.images.pixels import PolicyDecoder

    return PolicyDecoder(contract.pixel_policy)


def no_pixels(contract=None):
    """The pixels of no file, as `decoder_for(contract)` gives them (a batch whose every
    file failed): uint8 (0, 28, 28) for digits, float32 (0, H, W, C) otherwise."""
    import numpy as np

    if contract is None or contract.is_digit:
        return np.zeros((0, 28, 28), np.uint8)
    return np.zeros((0, *contract.pixels_shape), np.float32)


__all__ = [
    "IMAGE_EXTENSIONS",
    "MAX_FILE_SIZE",
    "MAX_PIXELS",
    "class_label_of",
    "decoder_for",
    "no_pixels",
    "find_images",
    "is_image_name",
    "iter_image_paths",
    "load_image",
    "load_images",
    "to_mnist",
]
