"""`digitkit train DIR` end to end: a small labelled set (RGB and gray, several sizes and
formats, a few bad files) trained for seconds; the model file carries its names and pixel
policy; the tensors training saw are the ones infer builds; bad files reported."""

import json

import numpy as np
import pytest

from _cli import run_cli
from _train_folders import BAD_FILES, labelled_copy, split_copy
from digitkit.images.pixels import load_pixels_batch
from digitkit.model.embedded import read_contract, read_record
from digitkit.train import FOLDER_ARTIFACTS, FolderConfig, FolderTrainer

QUICK = ("--input-size", "24x24", "--epochs", "2", "--quiet")


@pytest.fixture(scope="module")
def split_set(image_set, tmp_path_factory):
    """train/ val/ test/ folders, with the bad files in train/."""
    s = split_copy(image_set, tmp_path_factory.mktemp("split") / "set")
    for cls, name, data in BAD_FILES:
        (s / "train" / cls / name).write_bytes(data)
    return s


@pytest.fixture(scope="module")
def trained(split_set, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "run"
    result = run_cli("train", split_set, "--out", out, *QUICK)
    assert result.exit_code == 0, result.output
    return out, result


def test_writes_every_artifact_and_reports_bad_files(trained, split_set):
    out, result = trained
    assert sorted(p.name for p in out.iterdir()) == sorted(FOLDER_ARTIFACTS)  # cache removed
    for cls, name, _ in BAD_FILES:
        assert f"skipped {split_set / 'train' / cls / name}: " in result.output
    assert "test accuracy" in result.output and "on 40 images" in result.output
    rec = json.loads((out / "train.json").read_text())
    assert sorted(b["path"] for b in rec["data"]["bad_files"]) == sorted(
        str(split_set / "train" / c / n) for c, n, _ in BAD_FILES)
    assert rec["data"]["train_images"] == 120 and rec["data"]["validation_images"] == 40
    assert rec["data"]["balance"]["train"] == dict.fromkeys(
        ("astronaut", "brick", "cat", "coffee", "coins"), 24)
    assert rec["test"]["split"] == "test" and rec["test"]["images"] == 40
    assert len(rec["history"]["val_accuracy"]) == 2
    assert rec["config"]["arch"] == "small-cnn" and rec["config"]["weights"] == "none"


def test_names_and_policy_round_trip_into_the_model_file(trained):
    import keras

    out, _ = trained
    contract = read_contract(out / "model.keras")
    assert contract.class_names == ("astronaut", "brick", "cat", "coffee", "coins")
    assert contract.pixels_shape == (24, 24, 3) and not contract.is_digit
    rec = json.loads((out / "train.json").read_text())
    assert contract.pixel_policy.to_dict() == rec["input"]["pixel_policy"]
    assert read_record(out / "model.keras")["model"] == rec["contract"]
    model = keras.models.load_model(out / "model.keras")
    assert model.inputs[0].name == "pixels" and tuple(model.inputs[0].shape) == (None, 24, 24, 3)
    assert model.layers[-1].name == "probabilities" and model.outputs[0].shape[-1] == 5
    report = (out / "classification_report.txt").read_text()
    assert all(name in report for name in contract.class_names)


def test_training_tensors_are_the_ones_infer_builds(trained, split_set):
    """No training/serving skew: the pixels fit read for every file equal what
    load_pixels_batch builds for it under the policy the model file carries."""
    out, _ = trained
    policy = read_contract(out / "model.keras").pixel_policy
    trainer = FolderTrainer(FolderConfig(input_size=(24, 24)), split_set, out / "again")
    trainer.check_output()
    _, used, _, data, _ = trainer.prepare()
    assert used == policy
    for split in (data.train, data.val, data.test):
        served, reasons = load_pixels_batch(split.paths, policy)
        assert not any(reasons)
        np.testing.assert_array_equal(split.images(), served)


def test_record_accuracy_is_the_model_on_the_test_folder(trained, split_set):
    import keras

    out, _ = trained
    contract = read_contract(out / "model.keras")
    model = keras.models.load_model(out / "model.keras")
    hits = total = 0
    for k, name in enumerate(contract.class_names):
        files = sorted(str(p) for p in (split_set / "test" / name).iterdir())
        x, _ = load_pixels_batch(files, contract.pixel_policy)
        hits += int((model.predict(x, verbose=0).argmax(1) == k).sum())
        total += len(files)
    rec = json.loads((out / "train.json").read_text())
    assert hits / total == pytest.approx(rec["test"]["accuracy"], abs=1e-9)


def test_gray_folder_trains_a_gray_model(image_set, tmp_path):
    from PIL import Image

    s = labelled_copy(image_set, tmp_path / "s", bad=False, per_class=10,
                      classes=("brick", "coins"))
    for f in s.rglob("*.*"):  # every file gray: the rule picks one channel
        with Image.open(f) as im:
            im.convert("L").save(f.with_suffix(".png"))
        if f.suffix != ".png":
            f.unlink()
    result = run_cli("train", s, "--out", tmp_path / "r", "--epochs", "1", "--quiet",
                     "--input-size", "16x16", "--val-fraction", "0.3", "--resize", "letterbox")
    assert result.exit_code == 0, result.output
    contract = read_contract(tmp_path / "r" / "model.keras")
    assert contract.pixels_shape == (16, 16, 1)
    assert contract.pixel_policy.resize == "letterbox"
    rec = json.loads((tmp_path / "r" / "train.json").read_text())
    assert "channels: 1 (20 of 20 files scanned are gray)" in rec["input"]["rule"]
    assert rec["test"]["split"] == "validation" and rec["data"]["validation_images"] == 6


@pytest.fixture(scope="module")
def backbone_weights(tmp_path_factory):
    """A Keras weights file of MobileNetV3Small without its top at 32x32 (seeded random
    weights: what --weights FILE takes where Keras cannot download ImageNet's)."""
    import keras

    keras.utils.set_random_seed(5)
    backbone = keras.applications.MobileNetV3Small(
        input_shape=(32, 32, 3), include_top=False, weights=None, pooling="avg",
        include_preprocessing=True)
    path = tmp_path_factory.mktemp("weights") / "backbone.weights.h5"
    backbone.save_weights(path)
    return path, backbone.get_weights()


def test_the_backbone_starts_from_the_weights_file(backbone_weights):
    from digitkit.architectures import backbone_of, build_model

    path, want = backbone_weights
    model = build_model("mobilenet-v3-small", (32, 32, 3), 2, str(path))
    for got, w in zip(backbone_of(model).get_weights(), want, strict=True):
        np.testing.assert_array_equal(got, w)


@pytest.mark.slow  # TensorFlow traces MobileNetV3's whole backward pass for fine-tuning
def test_transfer_learning_frozen_then_fine_tuned(image_set, tmp_path, backbone_weights):
    """From a weights FILE (no network in CI), frozen, then fine-tuned: both phases run,
    the record says so."""
    s = labelled_copy(image_set, tmp_path / "s", bad=False, per_class=8,
                      classes=("cat", "coffee"))
    result = run_cli("train", s, "--arch", "mobilenet-v3-small", "--weights",
                     backbone_weights[0], "--input-size", "32x32", "--epochs", "1",
                     "--fine-tune-epochs", "1", "--batch-size", "8", "--out", tmp_path / "r",
                     "--quiet")
    assert result.exit_code == 0, result.output
    rec = json.loads((tmp_path / "r" / "train.json").read_text())
    assert [p["name"] for p in rec["phases"]] == ["head", "fine-tune"]
    assert rec["phases"][1]["learning_rate"] == pytest.approx(1e-4)
    assert len(rec["history"]["loss"]) == 2
    assert read_contract(tmp_path / "r" / "model.keras").pixels_shape == (32, 32, 3)


def test_a_weights_file_that_is_not_the_backbones_is_one_line(image_set, tmp_path):
    s = labelled_copy(image_set, tmp_path / "s", bad=False, per_class=6,
                      classes=("cat", "coffee"))
    junk = tmp_path / "junk.weights.h5"
    junk.write_bytes(b"not hdf5")
    result = run_cli("train", s, "--arch", "efficientnet-v2-b0", "--weights", junk,
                     "--input-size", "32x32", "--epochs", "1", "--out", tmp_path / "r")
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert lines[-1].startswith(f"digitkit: error: {junk}: not weights of EfficientNetV2B0")
    assert not (tmp_path / "r" / "model.keras").exists()


def _serves_general_models() -> bool:
    """Whether this checkout's export and infer take a general image classifier (issue 18):
    the Keras loader holds a model to the contract its file records (`keras_contract`), and
    infer's rows name a general model's classes (`row_names`)."""
    from digitkit.infer.results import rows
    from digitkit.model import loading

    return hasattr(loading, "keras_contract") and hasattr(rows, "row_names")


@pytest.mark.skipif(not _serves_general_models(),
                    reason="export/infer of general image classifiers not on this branch yet")
def test_export_and_infer_need_no_flags(trained, split_set, tmp_path):
    """From the trained folder model to served labels with no flags: the ONNX copy's rows on
    the held-out test/ folder name the classes the Keras model gives on the same tensors."""
    import csv
    import shutil

    import keras

    out, _ = trained
    model = tmp_path / "model.keras"
    shutil.copyfile(out / "model.keras", model)
    r = run_cli("export", model, "--format", "onnx", "--out", tmp_path / "export")
    assert r.exit_code == 0, r.output
    r = run_cli("infer", tmp_path / "export" / "model.onnx", split_set / "test",
                "-o", tmp_path / "rows.csv")
    assert r.exit_code == 0, r.output
    with open(tmp_path / "rows.csv", newline="") as f:
        served = {row["path"]: row["label"] for row in csv.DictReader(f)}
    contract = read_contract(model)
    paths = sorted(served)
    x, reasons = load_pixels_batch(paths, contract.pixel_policy)
    assert not any(reasons) and len(paths) == 40
    probs = keras.models.load_model(model).predict(x, verbose=0)
    assert [served[p] for p in paths] == [contract.class_names[k] for k in probs.argmax(1)]


def test_imagenet_weights_without_network_is_one_line(image_set, tmp_path, monkeypatch):
    """--weights imagenet (the transfer networks' default) where the network is closed: the
    download's failure is one line saying what to pass instead. The machine's network is
    closed for real by Keras' own download function failing as offline ones do."""
    import urllib.error

    import keras.src.backend.config as keras_config
    import keras.src.utils.file_utils as file_utils

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(keras_config, "_KERAS_DIR", str(tmp_path / "keras"))  # none cached
    monkeypatch.setattr(file_utils, "urlretrieve", offline)
    s = labelled_copy(image_set, tmp_path / "s", bad=False, per_class=6,
                      classes=("cat", "coffee"))
    r = run_cli("train", s, "--arch", "mobilenet-v3-small", "--input-size", "32x32",
                "--out", tmp_path / "r", "--quiet")
    assert r.exit_code == 1
    line = r.output.strip().splitlines()[-1]
    assert line.startswith("digitkit: error: --arch mobilenet-v3-small: could not fetch "
                           "Keras' ImageNet weights (")
    assert line.endswith("pass --weights FILE or --weights none")
    assert not (tmp_path / "r" / "model.keras").exists()


def test_image_augmentation_is_seeded_and_keeps_the_picture():
    from digitkit.train.pipeline import image_augment

    x = np.random.default_rng(1).uniform(0, 255, (6, 20, 28, 3)).astype(np.float32)
    x[:, 6:14, 8:20] = 255.0  # a bright block the small transforms keep, roughly in place
    a = np.asarray(image_augment(0, False)(np.int64(3), x))
    b = np.asarray(image_augment(0, False)(np.int64(3), x))
    c = np.asarray(image_augment(0, False)(np.int64(4), x))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c) and a.shape == x.shape
    assert a.min() >= 0.0 and a.max() <= 255.0
    assert (a[:, 8:12, 11:17].mean(axis=(1, 2, 3)) > 170).all()
