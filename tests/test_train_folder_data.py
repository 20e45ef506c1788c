"""`digitkit.train.folder_data`: layout, the input rule, parallel decoding into the cache,
the splits and their refusals (no training here: no TensorFlow needed)."""

import numpy as np
import pytest
from PIL import Image

from _train_folders import BAD_FILES, labelled_copy, split_copy
from digitkit.errors import DataError, UsageError
from digitkit.images.pixels import PixelPolicy, load_pixels_batch
from digitkit.train import folder_data as fd


@pytest.fixture(scope="module")
def flat(image_set, tmp_path_factory):
    return labelled_copy(image_set, tmp_path_factory.mktemp("flat") / "set")


def test_layout_flat_split_and_stray_folder(flat, image_set, tmp_path):
    assert not fd.find_layout(flat).split
    s = split_copy(image_set, tmp_path / "s")
    layout = fd.find_layout(s)
    assert layout.split and layout.train == str(s / "train")
    assert layout.val == str(s / "val") and layout.test == str(s / "test")
    (s / "extra").mkdir()
    with pytest.raises(DataError, match="holds train/ and also extra/"):
        fd.find_layout(s)


def test_input_rule_from_the_data():
    scan = fd.Scan(sizes=[(100, 60), (120, 90), (140, 70)], gray=3)
    size, c, why = fd.choose_input(scan, 300, transfer=False)
    assert size == (64, 64) and c == 1  # median 120x70, capped at 64 for a small set
    assert "3 of 3 files scanned are gray" in why
    size, c, _ = fd.choose_input(fd.Scan(sizes=[(100, 60)] * 3, gray=2), 5_000, False)
    assert size == (104, 64) and c == 3  # one colour file makes the model RGB; 100 -> 104
    size, _, _ = fd.choose_input(fd.Scan(sizes=[(10, 12)], gray=0), 50, False)
    assert size == (32, 32)  # never below MIN_SIDE
    size, c, why = fd.choose_input(scan, 300, transfer=True)
    assert size == fd.TRANSFER_SIZE and c == 3 and "backbone" in why
    size, c, why = fd.choose_input(scan, 300, False, size=(40, 48), channels=3)
    assert (size, c) == ((40, 48), 3) and "--input-size" in why and "--channels" in why


def test_scan_sees_gray_files_and_displayed_sizes(tmp_path, flat):
    folder = tmp_path / "g"
    folder.mkdir()
    paths = []
    for i, mode in enumerate(("L", "LA", "I;16")):
        p = folder / f"{i}.png"
        Image.new(mode, (50 + i, 30)).save(p)
        paths.append(str(p))
    scan = fd.scan_headers(paths)
    assert scan.gray == 3 and scan.sizes == [(30, 50), (30, 51), (30, 52)]
    _, files = fd.list_training_files(fd.find_layout(flat))
    mixed = fd.scan_headers(files)
    assert 0 < mixed.gray < mixed.scanned  # the image set holds both


def test_parallel_decoding_gives_infer_pipeline_tensors(flat, tmp_path, monkeypatch):
    """The cache holds exactly what load_pixels_batch (infer's pipeline) gives, as uint8,
    whether decoded in one process or a pool, in memory or memory-mapped on disk."""
    _, files = fd.list_training_files(fd.find_layout(flat))
    policy = PixelPolicy((24, 20), 3, resize="letterbox")
    want, reasons = load_pixels_batch(files, policy)
    serial = fd.Decoder(policy, workers=1)
    got, got_reasons = serial(files)
    assert got.dtype == np.uint8 and got_reasons == reasons
    np.testing.assert_array_equal(got.astype(np.float32), want)
    pooled, _ = fd.Decoder(policy, workers=2)(files)
    np.testing.assert_array_equal(pooled, got)
    monkeypatch.setattr(fd, "MEMORY_FRACTION", 0.0)
    disk = fd.Decoder(policy, workers=2, cache_dir=str(tmp_path))
    mapped, _ = disk(files)
    assert disk.storage == ["disk"] and isinstance(mapped.base, np.memmap)
    np.testing.assert_array_equal(mapped, got)
    assert sum(bool(r) for r in reasons) == len(BAD_FILES)


def test_stratified_split_is_seeded_and_disjoint(flat):
    layout = fd.find_layout(flat)
    decode = fd.Decoder(PixelPolicy((16, 16), 1))
    a = fd.load_splits(layout, decode, 0.25, seed=3)
    b = fd.load_splits(layout, decode, 0.25, seed=3)
    c = fd.load_splits(layout, decode, 0.25, seed=4)
    assert a.val.paths == b.val.paths and a.val.paths != c.val.paths
    assert not set(a.val.paths) & set(a.train.paths)
    assert len(a.val) + len(a.train) == 200  # 5 x 40, the bad files skipped
    assert set(a.val.counts(a.class_names).values()) == {10}  # a quarter of every class
    assert sorted(p for p, _ in a.failures) == sorted(
        str(flat / cls / name) for cls, name, _ in BAD_FILES)
    # What a split feeds the model is its own rows of the shared cache.
    i = a.val.paths.index(a.val.paths[3])
    one, _ = load_pixels_batch([a.val.paths[3]], PixelPolicy((16, 16), 1))
    np.testing.assert_array_equal(a.val.images(slice(i, i + 1)), one)
    assert a.balance()["largest_to_smallest"] == 1.0


def test_split_folders_and_their_refusals(image_set, tmp_path):
    s = split_copy(image_set, tmp_path / "s", classes=("cat", "coins"))
    decode = fd.Decoder(PixelPolicy((16, 16), 3))
    data = fd.load_splits(fd.find_layout(s), decode, None, 0)
    assert data.class_names == ("cat", "coins")
    assert (len(data.train), len(data.val), len(data.test)) == (48, 16, 16)
    assert data.evaluated is data.test
    with pytest.raises(UsageError, match="--val-fraction applies to a folder without val/"):
        fd.load_splits(fd.find_layout(s), decode, 0.1, 0)
    (s / "test" / "dog").mkdir()
    Image.new("RGB", (8, 8)).save(s / "test" / "dog" / "a.png")
    with pytest.raises(DataError, match="'dog' not among the model's 2 class names"):
        fd.load_splits(fd.find_layout(s), decode, None, 0)


def test_a_class_with_too_few_images_is_refused(image_set, tmp_path):
    s = labelled_copy(image_set, tmp_path / "s", bad=False, per_class=8, classes=("cat", "coins"))
    for f in sorted((s / "coins").iterdir())[4:]:
        f.unlink()
    (s / "coins" / "broken.png").write_bytes(b"\x89PNG")  # a bad file does not count
    with pytest.raises(DataError) as err:
        fd.load_splits(fd.find_layout(s), fd.Decoder(PixelPolicy((16, 16), 3)), None, 0)
    assert str(err.value) == (f"{s / 'coins'}: 4 decodable images; a class needs at least "
                              f"{fd.MIN_PER_CLASS} to be trained on")
