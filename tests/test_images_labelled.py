"""A labelled folder as tensors (digitkit.images.labelled), on the image set the tests make."""

from __future__ import annotations

from functools import partial

import pytest

from digitkit.errors import DataError
from digitkit.images.labelled import list_labelled, load_labelled
from digitkit.images.pixels import PixelPolicy, load_pixels_batch

POLICY = PixelPolicy((24, 24), 3)


def test_every_class_folder_decoded_through_the_pixel_pipeline(image_set):
    s = load_labelled(image_set, partial(load_pixels_batch, policy=POLICY), per_class=6)
    assert s.class_names == ("astronaut", "brick", "cat", "coffee", "coins")
    assert s.pixels.shape == (len(s), 24, 24, 3) and set(s.counts().values()) == {6}
    first = load_pixels_batch([s.paths[0]], POLICY)[0][0]
    assert (s.pixels[0] == first).all()  # the same tensors infer builds for the file


def test_folders_match_a_models_names_and_bad_files_are_reported(tmp_path, image_set):
    import shutil

    root = tmp_path / "cal"
    for name in ("cat", "coins"):
        shutil.copytree(image_set / name, root / name)
    (root / "cat" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnope")
    names, files = list_labelled(root, ["coins", "dog", "cat"])
    assert names == ("coins", "dog", "cat") and {k for _, k in files} == {0, 2}
    s = load_labelled(root, partial(load_pixels_batch, policy=POLICY), ["coins", "dog", "cat"])
    assert [p for p, _ in s.failures] == [str(root / "cat" / "broken.png")]
    assert s.counts()["dog"] == 0
    with pytest.raises(DataError, match="'cat' not among the model's 2 class names"):
        list_labelled(root, ["coins", "dog"])
