"""`digitkit export` of general image classifiers (issue 18): any size, 1 or 3 channels, any
number of classes. Every copy carries the contract (class names, input size, pixel policy)
and reads back without flags; every copy matches the source (atol + rtol) on the calibration
folder's pixels, seeded random pixels and edge inputs. Real TensorFlow, tf2onnx, ONNX
Runtime and LiteRT throughout, on models trained in seconds on the `image_set` fixture.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from _cli import run_cli
from _export_copies import copies, predict, read_back
from digitkit.export.config import GENERAL_ATOL

pytest.importorskip("tensorflow")

SIZE = (32, 32)
CLASSES = ("astronaut", "brick", "cat", "coffee", "coins")


@pytest.fixture(scope="module")
def rgb_export(image_set, tmp_path_factory):
    """A 32x32x3 5-class .keras model trained on the image set, carrying its contract,
    exported to every format with the int8 copy, calibrated on the image set."""
    from _general_models import labelled_pixels, train_pixels_model

    d = tmp_path_factory.mktemp("rgb")
    labelled = labelled_pixels(image_set, SIZE, 3)
    model_path = d / "photos.keras"
    train_pixels_model(model_path, labelled, SIZE, 3)
    out = d / "export"
    result = run_cli("export", model_path, "--format", "all", "--quantize", "int8",
                     "--calibration", image_set, "--out", out, "--max-accuracy-drop", "5")
    return model_path, out, result, labelled


def test_every_format_is_written_validated_and_recorded(rgb_export, image_set):
    model_path, out, result, labelled = rgb_export
    assert result.exit_code == 0, result.output
    assert "class names from the model's own record" in result.output
    assert "validating on 200 calibration images + 32 seeded random images" in result.output
    manifest = json.loads((out / "export.json").read_text())
    assert manifest["status"] == "passed"
    assert manifest["model"]["class_labels"] == list(CLASSES)
    assert manifest["model"]["input"]["shape"] == ["N", 32, 32, 3]
    assert manifest["model"]["input"]["pixel_policy"]["resize"] == "squash"
    cal = manifest["calibration"]
    assert cal["folder"] == str(image_set) and cal["images"] == 200
    assert cal["per_class"] == {name: 40 for name in CLASSES}
    assert manifest["source"]["class_names_from"] == "the model's own record"
    assert manifest["config"]["data_source"] == f"calibration folder {image_set}"
    assert manifest["config"]["atol"] == GENERAL_ATOL  # a digit model's is 1e-5
    for name in ("savedmodel", "onnx", "onnx-int8", "tflite"):
        art = manifest["artifacts"][name]
        assert art["status"] == "passed", (name, art["validation"])
        cases = [c["case"] for c in art["validation"]["cases"]]
        assert cases[:2] == ["calibration[:200]", "random_pixels[seed=0]"], cases
        assert not any("mnist" in c for c in cases)
    tfl = manifest["artifacts"]["tflite"]["accuracy"]
    assert tfl["test_images"] == 200 and tfl["max_difference_points"] == 0.5
    int8 = manifest["artifacts"]["onnx-int8"]["accuracy"]
    assert int8["test_images"] == 200 and int8["calibration_images"] == 200
    assert manifest["source"]["copy"] == "model.keras" and (out / "model.keras").is_file()


def test_every_copy_reads_back_its_contract_and_matches_the_source(rgb_export):
    import keras

    from digitkit.model.embedded import read_contract

    model_path, out, result, labelled = rgb_export
    assert result.exit_code == 0, result.output
    source = read_contract(model_path)
    keras_model = keras.models.load_model(model_path, compile=False)
    x = np.concatenate([labelled.pixels[::9],
                        np.random.default_rng(5).uniform(0, 255, (6, 32, 32, 3))]
                       ).astype(np.float32)
    reference = np.asarray(keras_model(x, training=False))
    for name, path in copies(out).items():
        contract = read_back(path)
        assert contract == source, name  # names, size, channels and policy, no flags
        assert contract.class_names == CLASSES and contract.pixels_shape == (32, 32, 3)
        got = predict(path, x)
        assert got.shape == (len(x), 5)
        if name == "onnx-int8":  # held to accuracy, not to atol
            assert np.mean(got.argmax(1) == reference.argmax(1)) >= 0.8
        else:
            np.testing.assert_allclose(got, reference, atol=1e-5, rtol=1e-5, err_msg=name)


def test_a_gray_model_without_a_record_takes_names_from_the_calibration_folder(
        image_set, tmp_path):
    """A 1-channel .h5 carrying no record: names from the class folders (Keras' order), the
    policy the default; the copies carry both."""
    from _general_models import labelled_pixels, train_pixels_model

    labelled = labelled_pixels(image_set, (24, 24), 1)
    model_path = tmp_path / "gray.h5"
    train_pixels_model(model_path, labelled, (24, 24), 1, epochs=3, embed=False)
    out = tmp_path / "export"
    result = run_cli("export", model_path, "--calibration", image_set, "--out", out,
                     "--resize", "center-crop", "--crop-fraction", "0.875")
    assert result.exit_code == 0, result.output
    assert "class names from the class folders of" in result.output
    manifest = json.loads((out / "export.json").read_text())
    assert manifest["model"]["input"]["shape"] == ["N", 24, 24, 1]
    assert manifest["source"]["pixel_policy_from"] == \
        "the default with --resize, --crop-fraction"
    for name in ("onnx", "savedmodel", "tflite"):
        contract = read_back(copies(out)[name])
        assert contract.class_names == CLASSES and contract.pixels_shape == (24, 24, 1)
        assert contract.pixel_policy.resize == "center-crop"
        assert contract.pixel_policy.crop_fraction == 0.875
        assert manifest["artifacts"][name]["status"] == "passed"
    # The calibration pixels went through that policy (recorded with the folder).
    assert manifest["calibration"]["pixel_policy"]["resize"] == "center-crop"


def test_a_47_class_emnist_style_model_is_accepted_without_calibration(tmp_path):
    """28x28 gray with 47 outputs is not a digit model: exported under a general contract,
    named by --labels, validated on seeded random pixels (no MNIST, no accuracy lines)."""
    from _general_models import untrained_pixels_model

    model_path = tmp_path / "emnist.keras"
    untrained_pixels_model(model_path, (28, 28), 1, 47)
    names = [str(d) for d in range(10)] + [chr(c) for c in range(ord("A"), ord("Z") + 1)] \
        + list("abdefghnqrt")
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(names) + "\n")
    out = tmp_path / "export"
    result = run_cli("export", model_path, "--labels", labels, "--out", out)
    assert result.exit_code == 0, result.output
    assert "MNIST" not in result.output
    assert "no --calibration folder" in result.output
    manifest = json.loads((out / "export.json").read_text())
    assert manifest["calibration"] == {"folder": None}
    assert manifest["source"]["labels_file"] == str(labels)
    for name in ("onnx", "savedmodel", "tflite"):
        art = manifest["artifacts"][name]
        assert art["status"] == "passed" and "accuracy" not in art
        assert art["validation"]["cases"][0]["case"] == "random_pixels[seed=0]"
        contract = read_back(copies(out)[name])
        assert contract.num_classes == 47 and list(contract.class_names) == names
        assert contract.pixels_shape == (28, 28, 1) and not contract.is_digit


@pytest.fixture(scope="module")
def small_untrained(tmp_path_factory):
    """A 16x16 RGB 4-class .keras with random weights and no record, shared read-only by
    the tests of refusals (they never write beside it)."""
    from _general_models import untrained_pixels_model

    model_path = tmp_path_factory.mktemp("small") / "m.keras"
    untrained_pixels_model(model_path, (16, 16), 3, 4)
    return model_path


def test_int8_needs_a_calibration_folder(small_untrained, tmp_path):
    model_path = small_untrained
    result = run_cli("export", model_path, "--quantize", "int8", "--out", tmp_path / "e")
    assert result.exit_code == 2
    assert result.output.splitlines()[-1] == ("digitkit: error: --quantize int8 calibrates "
                                              "on real pixels: give --calibration DIR (a "
                                              "folder of class folders)")
    assert not (tmp_path / "e").exists()


@pytest.mark.parametrize("args, message", [
    (["--labels", "{labels}"], "3 class names for a model with 4 outputs"),
    (["--input-size", "20x20"], "--input-size 20x20: m.keras takes 16x16 images (a static "
                                "size)"),
    (["--input-size", "big"], "--input-size 'big': give HxW, e.g. 224x224"),
    (["--crop-fraction", "1.5"], "crop fraction must be a number in (0, 1]"),
    (["--calibration", "{missing}"], "no such folder"),
])
def test_bad_general_options_are_one_line(small_untrained, tmp_path, args, message):
    model_path = small_untrained
    (tmp_path / "labels.txt").write_text("a\nb\nc\n")
    args = [a.format(labels=tmp_path / "labels.txt", missing=tmp_path / "nope") for a in args]
    result = run_cli("export", model_path, *args, "--out", tmp_path / "e")
    assert result.exit_code in (1, 2)
    line = result.output.strip()
    assert "\n" not in line and line.startswith("digitkit: error: ") and message in line
    assert not (tmp_path / "e" / "export.json").exists()


def test_calibration_makes_a_digit_shaped_model_general(src_h5, tmp_path, image_set):
    """--calibration says the model is a general one (the model layer's rule): a digit model
    given a five-class folder is refused in one line naming the folder, nothing written."""
    result = run_cli("export", src_h5, "--calibration", image_set, "--out", tmp_path / "e")
    assert result.exit_code == 1
    assert result.output == (f"digitkit: error: {image_set}: 5 class names for a model with "
                             "10 outputs\n")
    assert not (tmp_path / "e").exists()


def test_validate_export_dir_rechecks_a_general_export(rgb_export, tmp_path):
    """The copies re-checked against the source copy under the contract export.json records,
    on the calibration folder it names; once the folder is gone, on seeded random pixels."""
    import shutil

    from digitkit.export import validate_export_dir

    _, out, result, _ = rgb_export
    assert result.exit_code == 0, result.output
    results = validate_export_dir(out, n_images=50)
    assert sorted(r.artifact for r in results) == ["onnx", "savedmodel", "tflite"]
    assert all(r.ok for r in results), [r.to_dict() for r in results if not r.ok]
    assert results[0].cases[0].case == "calibration[:50]"
    moved = tmp_path / "export"
    shutil.copytree(out, moved)
    record = json.loads((moved / "export.json").read_text())
    record["calibration"]["folder"] = str(tmp_path / "gone")
    (moved / "export.json").write_text(json.dumps(record))
    results = validate_export_dir(moved, n_images=50)
    assert all(r.ok for r in results) and results[0].cases[0].case == "random_pixels[seed=0]"


def test_digit_exports_are_as_they_were(export_dir):
    """A digit export carries nothing new: no SavedModel asset, no LiteRT metadata entry, no
    calibration record; its cases are MNIST's."""
    from digitkit.model.embedded import TFLITE_METADATA, tflite_metadata

    assert not (export_dir / "saved_model" / "assets" / "digitkit.json").exists()
    assert TFLITE_METADATA not in tflite_metadata(export_dir / "model.tflite")
    manifest = json.loads((export_dir / "export.json").read_text())
    assert "calibration" not in manifest and "class_names_from" not in manifest["source"]
    assert manifest["artifacts"]["onnx"]["validation"]["cases"][0]["case"] == "mnist_test[:1000]"
    assert manifest["artifacts"]["tflite"]["accuracy"]["max_difference_points"] == 0.05


def test_a_dynamic_input_size_is_fixed_by_input_size(tmp_path):
    """A model taking any height and width is exported for the --input-size given: every copy
    has that static input and records it; without the flag, one line asks for it."""
    from _general_models import dynamic_size_model

    model_path = tmp_path / "any.keras"
    dynamic_size_model(model_path, 3, 4)
    result = run_cli("export", model_path, "--out", tmp_path / "none")
    assert result.exit_code == 2
    assert result.output.splitlines()[-1].endswith(
        "its input height and width are dynamic (?x?); give --input-size HxW")
    out = tmp_path / "export"
    result = run_cli("export", model_path, "--input-size", "20x18", "--out", out)
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "export.json").read_text())
    assert manifest["model"]["input"]["shape"] == ["N", 20, 18, 3]
    for name in ("onnx", "savedmodel", "tflite"):
        assert manifest["artifacts"][name]["status"] == "passed"
        assert read_back(copies(out)[name]).pixels_shape == (20, 18, 3)
    import onnx

    dims = onnx.load(str(out / "model.onnx")).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims[1:]] == [20, 18, 3]
