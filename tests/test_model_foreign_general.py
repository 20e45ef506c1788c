"""digitkit.model.foreign for general image classifiers: the contract a model made elsewhere
gets from its own shapes, what it records and the flags (--labels, --calibration, the pixel
policy flags); digit shapes stay the digit contract; what a Keras model's own layers say; and
the sources load_source opens under that contract."""

from __future__ import annotations

import json

import pytest

from digitkit.errors import ModelError, UsageError
from digitkit.images.pixels import PixelPolicy
from digitkit.model.contract import DIGIT_CONTRACT, image_contract
from digitkit.model.conventions import PolicyFlags
from digitkit.model.foreign import derive_contract, image_geometry, named_contract_shape


@pytest.mark.parametrize("shape", [(None, 28, 28), (None, 784), (None, 28, 28, 1),
                                   ("batch", 1, 28, 28), (None, None, None, 1)])
def test_digit_shapes_stay_the_digit_contract(shape):
    assert derive_contract("m", shape, (None, 10)) is DIGIT_CONTRACT
    assert derive_contract("m", shape, None) is DIGIT_CONTRACT


def test_general_contracts_from_shapes():
    rgb = derive_contract("m", (None, 32, 32, 3), (None, 5))
    assert rgb == image_contract(32, 32, 3, ["0", "1", "2", "3", "4"])
    nchw = derive_contract("m", ("n", 3, 96, 64), ("n", 1000))
    assert (nchw.height, nchw.width, nchw.channels, nchw.num_classes) == (96, 64, 3, 1000)
    emnist = derive_contract("m", (None, 28, 28), (None, 47))  # 28x28 gray, 47 classes
    assert emnist.input_shape == (28, 28, 1) and emnist.num_classes == 47
    named = derive_contract("m", (None, 28, 28), (None, 10), names=list("abcdefghij"))
    assert not named.is_digit and named.class_names[0] == "a"  # --labels: not digits
    flat = derive_contract("m", (None, 24 * 20 * 3), (None, 2),
                           policy=PolicyFlags(input_size="24x20"))
    assert (flat.height, flat.width, flat.channels) == (24, 20, 3)
    sized = derive_contract("m", (None, None, None, 3), (None, 4),
                            policy=PolicyFlags(input_size="64x48", resize="letterbox"))
    assert sized.pixel_policy == PixelPolicy((64, 48), 3, resize="letterbox")
    general = derive_contract("m", (None, 28, 28, 1), (None, 10), general=True)
    assert not general.is_digit and general.input_shape == (28, 28, 1)


@pytest.mark.parametrize("shape, out, error, message", [
    ((None, 32, 32, 4), (None, 5), ModelError,
     "m: model input (N, 32, 32, 4) has 4 channels; digitkit serves gray (1 channel) or RGB"),
    ((None, 2, 32, 32, 3), (None, 5), ModelError, "is not an image"),
    ((None, 32, 32, 3), (None, 1), ModelError, "expected (N, K): one score per class, K >= 2"),
    ((None, 32, 32, 3), (None, None), ModelError, "K >= 2 stated"),
    ((None, None, None, 3), (None, 5), UsageError,
     "m: its input height and width are dynamic (?x?); give --input-size HxW"),
    ((None, 3, 32, 3), (None, 5), ModelError, "fits NHWC and NCHW; declare it with "
                                              "--input-layout"),
    ((None, 1000), (None, 5), ModelError, "give --input-size HxW"),
])
def test_general_refusals_are_one_line(shape, out, error, message):
    with pytest.raises(error) as refused:
        derive_contract("m", shape, out)
    assert "\n" not in str(refused.value) and message in str(refused.value)


def test_declared_layout_settles_an_ambiguous_shape():
    assert image_geometry("m", (None, 3, 32, 3), "NCHW") == ("NCHW", 32, 3, 3)
    with pytest.raises(UsageError, match="--input-size 32x32: m takes 24x24"):
        derive_contract("m", (None, 24, 24, 3), (None, 5), policy=PolicyFlags(input_size=32))


def test_a_recorded_contract_wins_and_flags_adjust_it():
    recorded = image_contract(24, 24, 3, ["cat", "dog"], PixelPolicy((24, 24), 3))
    assert derive_contract("m", (None, 24, 24, 3), (None, 2), record=recorded) is recorded
    renamed = derive_contract("m", (None, 24, 24, 3), (None, 2), record=recorded,
                              names=("kitten", "puppy"),
                              policy=PolicyFlags(resize="center-crop", crop_fraction=0.875))
    assert renamed.class_names == ("kitten", "puppy")
    assert renamed.pixel_policy.crop_fraction == 0.875
    with pytest.raises(ModelError, match="outputs \\(N, 3\\), expected \\(N, 2\\)"):
        derive_contract("m", (None, 24, 24, 3), (None, 3), record=recorded)


def test_named_contract_shape_is_the_one_rule():
    assert named_contract_shape("pixels", "probabilities", (None, 28, 28))
    assert named_contract_shape("pixels", "probabilities", (None, 96, 96, 3))
    assert not named_contract_shape("pixels", "probabilities", (None, None, None, 3))
    assert not named_contract_shape("image", "probabilities", (None, 96, 96, 3))
    assert not named_contract_shape("pixels", "probabilities", (None, 96, 96, 4))


def test_keras_preprocessing_is_read_from_the_graph():
    keras = pytest.importorskip("keras")
    from digitkit.model.foreign import keras_preprocessing

    inp = keras.Input(shape=(16, 16, 3))
    aug = keras.layers.RandomFlip(name="flip")(inp)
    x = keras.layers.Normalization(mean=[1, 2, 3], variance=[1, 1, 1], name="norm")(aug)
    out = keras.layers.Dense(2)(keras.layers.Flatten()(x))
    assert keras_preprocessing(keras.Model(inp, out)) == "Normalization layer 'norm' first"
    inner = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Rescaling(1 / 255,
                                                                               name="r")],
                             name="prep")
    outer = keras.Model(inp, keras.layers.Dense(2)(keras.layers.Flatten()(inner(inp))))
    assert keras_preprocessing(outer) == "Rescaling layer 'r' first in 'prep'"
    plain = keras.Model(inp, keras.layers.Dense(2)(keras.layers.Flatten()(inp)))
    assert keras_preprocessing(plain) is None


def test_load_source_names_from_labels_calibration_or_indices(general_zoo, tmp_path):
    """--labels names the classes, a calibration folder's subfolders name them otherwise,
    and without either they are "0".."K-1"; a wrong count is refused naming the file."""
    from digitkit.errors import DataError
    from digitkit.predictors.adapted import CONTRACT, FOREIGN, contract_status, load_source

    path = general_zoo.path("tf")
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps(["a", "b", "c", "d", "e"]))
    assert load_source(path, labels=labels).source.contract.class_names == tuple("abcde")
    assert load_source(path, calibration=general_zoo.image_set).source.contract.class_names[0] \
        == "astronaut"
    plain = load_source(path).source
    assert plain.contract.class_names == ("0", "1", "2", "3", "4")
    assert plain.contract.input_shape == (24, 24, 3) and not plain.honours_contract
    assert contract_status(path) == (FOREIGN, None)
    labels.write_text("a\nb\n")
    with pytest.raises(DataError, match="2 class names for a model with 5 outputs"):
        load_source(path, labels=labels)

    # digitkit's own kind of general model: "pixels" -> "probabilities", Rescaling inside
    import keras

    inp = keras.Input(shape=(24, 24, 3), name="pixels")
    x = keras.layers.Rescaling(1 / 255)(inp)
    out = keras.layers.Dense(5, activation="softmax", name="probabilities")(
        keras.layers.Flatten()(x))
    keras.Model(inp, out).save(tmp_path / "own.keras")
    assert contract_status(tmp_path / "own.keras") == (CONTRACT, None)
    own = load_source(tmp_path / "own.keras").source
    assert own.honours_contract and own.contract.num_classes == 5
    from digitkit.model.loading import load_keras_model

    load_keras_model(tmp_path / "own.keras")  # its contract checked: the general one


def test_keras_applications_model_takes_raw_pixels(tmp_path):
    """keras.applications' MobileNetV3Small (random weights, 5 classes) begins with its own
    Rescaling layer: loaded through the safe loader it is a general 32x32x3 model that states
    raw pixels, so it runs with no flags and no data, and its adapter only renames its ends."""
    keras = pytest.importorskip("keras")
    import numpy as np

    from digitkit.model.detect import STATED, predict_under
    from digitkit.model.foreign import RAW_FROM_LAYERS
    from digitkit.model.resolve import resolve_convention
    from digitkit.predictors.adapted import FOREIGN, contract_status, load_source

    model = keras.applications.MobileNetV3Small(weights=None, input_shape=(32, 32, 3),
                                                classes=5)
    model.save(tmp_path / "mobilenet.keras")
    assert contract_status(tmp_path / "mobilenet.keras") == (FOREIGN, None)
    source = load_source(tmp_path / "mobilenet.keras").source
    assert source.contract.input_shape == (32, 32, 3) and source.contract.num_classes == 5
    assert source.stated_by.startswith(f"{RAW_FROM_LAYERS} (Rescaling layer")
    found = resolve_convention(source, None, None)
    assert found.how == STATED and found.convention.scale == "raw"
    assert found.convention.outputs == "probabilities"  # read off its softmax
    x = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(predict_under(source, found.convention, x),
                               np.asarray(model(x, training=False)), rtol=1e-5, atol=1e-6)
