"""digitkit.model.conventions: the numpy reference of every input convention, its records,
the candidates for a model's input shape, and the flags that declare one."""

from __future__ import annotations

import numpy as np
import pytest

from digitkit.errors import ModelError, UsageError
from digitkit.model.conventions import (
    BLACK_ON_WHITE,
    LOGITS,
    MNIST_MEAN,
    MNIST_STD,
    ConventionFlags,
    InputConvention,
    candidates,
    declared_convention,
    l2_normalize,
    layout_of,
)


@pytest.fixture(scope="module")
def pixels(mnist_test):
    """Eight real test images plus one all-black image (the zero-norm case)."""
    x = mnist_test[0][:8].astype(np.float32)
    return np.concatenate([x, np.zeros((1, 28, 28), np.float32)])


def test_contract_is_the_default():
    assert InputConvention().is_contract
    assert not InputConvention(scale="unit").is_contract
    assert not InputConvention(outputs=LOGITS).is_contract


@pytest.mark.parametrize("layout, shape", [("NHW", (28, 28)), ("NHWC", (28, 28, 1)),
                                           ("NCHW", (1, 28, 28)), ("flat", (784,))])
def test_apply_layouts_reshape_only(pixels, layout, shape):
    out = InputConvention(layout=layout).apply(pixels)
    assert out.shape == (len(pixels), *shape) and out.dtype == np.float32
    np.testing.assert_array_equal(out.reshape(pixels.shape), pixels)


def test_apply_values(pixels):
    np.testing.assert_array_equal(InputConvention(scale="unit").apply(pixels), pixels / 255)
    std = InputConvention(scale="standardized").apply(pixels)
    np.testing.assert_array_equal(std, (pixels / np.float32(255) - np.float32(MNIST_MEAN))
                                  / np.float32(MNIST_STD))
    own = InputConvention(scale="standardized", mean=0.5, std=0.25).apply(pixels)
    np.testing.assert_allclose(own, (pixels / 255 - 0.5) / 0.25, rtol=1e-6)
    inverted = InputConvention(scale="unit", ink=BLACK_ON_WHITE).apply(pixels)
    np.testing.assert_allclose(inverted, (255 - pixels) / 255, rtol=1e-6)
    with pytest.raises(ValueError):
        InputConvention().apply(pixels.reshape(len(pixels), 784))


@pytest.mark.parametrize("axis", [1, -1, 2])
def test_l2_is_keras_utils_normalize_exactly(pixels, axis):
    keras = pytest.importorskip("keras")
    conv = InputConvention(scale="l2", l2_axis=axis)
    ours = conv.apply(pixels)
    theirs = keras.utils.normalize(pixels, axis=axis)
    assert ours.dtype == np.float32
    np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_array_equal(ours[-1], 0)  # the all-black image: zero norm reads as 1
    # The notebook normalises uint8 arrays (float64 maths); float32 agrees to rounding.
    from_uint8 = keras.utils.normalize(pixels.astype(np.uint8), axis=axis)
    np.testing.assert_allclose(ours, from_uint8, atol=1e-7)
    np.testing.assert_array_equal(l2_normalize(pixels, axis), theirs)


def test_l2_axis_aliases_and_default():
    assert InputConvention(scale="l2").l2_axis == -1  # keras.utils.normalize's default
    assert InputConvention(scale="l2", l2_axis=2) == InputConvention(scale="l2", l2_axis=-1)
    assert InputConvention(scale="l2", l2_axis=-2).l2_axis == 1


def test_describe():
    assert InputConvention(scale="l2", l2_axis=1).describe() == "keras.utils.normalize(axis=1)"
    assert InputConvention(scale="l2").describe() == "keras.utils.normalize(axis=-1)"
    assert InputConvention(scale="unit").describe() == "/255"
    assert InputConvention(scale="standardized").describe() == "(x/255-0.1307)/0.3081"
    assert InputConvention().describe() == "raw 0..255"
    assert InputConvention(scale="unit", ink=BLACK_ON_WHITE).describe() == "255-x, /255"
    full = InputConvention(layout="NCHW", scale="unit", outputs=LOGITS).describe(full=True)
    assert full == "(N,1,28,28) /255, logits (softmax added)"


def test_records_round_trip():
    for conv in candidates((None, 784), outputs=LOGITS) + [
            InputConvention(scale="standardized", mean=0.2, std=0.3)]:
        d = conv.to_dict()
        assert InputConvention.from_dict(d) == conv
        assert d["description"] == conv.describe(full=True)
    assert "mean" not in InputConvention(scale="unit").to_dict()
    with pytest.raises(ModelError, match="invalid input convention"):
        InputConvention.from_dict({"scale": "cubic"})


@pytest.mark.parametrize("shape, layout", [
    ((None, 28, 28), "NHW"), ((None, 28, 28, 1), "NHWC"), (["batch", 1, 28, 28], "NCHW"),
    ((1, 1, 28, 28), "NCHW"), ((-1, 784), "flat"), ((None, None, None, 1), "NHWC")])
def test_layout_of(shape, layout):
    assert layout_of(shape) == layout


def test_layout_of_refuses():
    with pytest.raises(ModelError, match="not a 28x28 digit image"):
        layout_of((None, 32, 32, 3))
    with pytest.raises(ModelError, match="--input-layout"):
        layout_of((None, None, None, None))


def test_candidates_cover_values_and_inks():
    found = candidates((None, 1, 28, 28))
    assert len(found) == len(set(found)) == 12
    assert {c.layout for c in found} == {"NCHW"}
    assert {c.scale for c in found} == {"raw", "unit", "standardized", "l2"}
    assert {c.ink for c in found} == {"white-on-black", "black-on-white"}
    assert {c.l2_axis for c in found if c.scale == "l2"} == {1, -1}
    assert found[0] == InputConvention(layout="NCHW")  # ties go to the simplest


@pytest.mark.parametrize("kwargs, message", [
    ({"scale": "cubic"}, "--input-scale 'cubic'"),
    ({"layout": "HWN"}, "--input-layout 'HWN'"),
    ({"ink": "red"}, "--ink 'red'"),
    ({"outputs": "scores"}, "--outputs 'scores'"),
    ({"mean": 0.1, "std": 0.3}, "need --input-scale standardized"),
    ({"scale": "unit", "l2_axis": 1}, "--l2-axis needs --input-scale l2"),
    ({"scale": "l2", "l2_axis": 0}, "--l2-axis 0"),
    ({"scale": "standardized", "mean": 0.1}, "give both --input-mean and --input-std"),
    ({"scale": "standardized", "mean": 0.1, "std": 0}, "std finite and > 0"),
])
def test_flags_refuse_with_usage_errors(kwargs, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(")):
        ConventionFlags(**kwargs)


def test_declared_convention():
    assert declared_convention(ConventionFlags(), (None, 784)) is None
    assert declared_convention(ConventionFlags(ink=BLACK_ON_WHITE), (None, 784)) is None
    flags = ConventionFlags.from_options({"input_scale": "standardized", "input_mean": 0.5,
                                          "input_std": 0.5, "outputs": "logits",
                                          "unrelated": 1})
    conv = declared_convention(flags, (None, 784))
    assert conv == InputConvention(layout="flat", scale="standardized", mean=0.5, std=0.5,
                                   outputs=LOGITS)
    assert flags.given == ["--input-scale", "--input-mean", "--input-std", "--outputs"]
    nhwc = declared_convention(ConventionFlags(layout="nhwc", scale="unit"),
                               (None, None, None, 1))
    assert nhwc.layout == "NHWC" and nhwc.ink == "white-on-black"
    with pytest.raises(UsageError, match="does not fit the model's input shape"):
        declared_convention(ConventionFlags(layout="NCHW", scale="unit"), (None, 28, 28, 1))


def test_flags_narrow_candidates():
    flags = ConventionFlags(ink=BLACK_ON_WHITE)
    kept = [c for c in candidates((None, 28, 28)) if flags.allows(c)]
    assert len(kept) == 6 and all(c.ink == BLACK_ON_WHITE for c in kept)


# ------------------------------------------------------------------ general image contracts


def _rgb_contract(channels: int = 3, size=(6, 5)):
    from digitkit.images.pixels import PixelPolicy
    from digitkit.model.contract import image_contract

    return image_contract(*size, channels, ["a", "b", "c"], PixelPolicy(size, channels))


@pytest.fixture(scope="module")
def rgb():
    """Seven random RGB pictures (6x5) with every extreme value, raw float32 0..255."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (7, 6, 5, 3)).astype(np.float32)
    x[0], x[1] = 0, 255
    return x


@pytest.mark.parametrize("mode, fields", [
    ("tf", {"scale": "tf"}),
    ("torch", {"scale": "standardized"}),
    ("caffe", {"scale": "caffe", "channel_order": "bgr"}),
])
def test_keras_modes_are_preprocess_input_exactly(rgb, mode, fields):
    """tf, torch and caffe are Keras' preprocess_input modes, to float32 rounding (caffe's
    BGR flip and BGR-ordered mean included)."""
    pytest.importorskip("keras")
    from keras.applications import imagenet_utils

    conv = InputConvention(layout="NHWC", contract=_rgb_contract(), **fields)
    assert conv.preset == mode
    theirs = imagenet_utils.preprocess_input(rgb.copy(), mode=mode, data_format="channels_last")
    np.testing.assert_allclose(conv.apply(rgb), np.asarray(theirs), rtol=1e-6, atol=1e-5)


def test_general_layouts_and_channel_order(rgb):
    contract = _rgb_contract()
    nhwc = InputConvention(layout="NHWC", scale="unit", contract=contract)
    np.testing.assert_array_equal(nhwc.apply(rgb), rgb / np.float32(255))
    nchw = InputConvention(layout="NCHW", scale="unit", contract=contract)
    np.testing.assert_array_equal(nchw.apply(rgb), (rgb / np.float32(255)).transpose(0, 3, 1, 2))
    flat = InputConvention(layout="flat", channel_order="bgr", contract=contract)
    np.testing.assert_array_equal(flat.apply(rgb), rgb[..., ::-1].reshape(7, -1))
    own = InputConvention(layout="NHWC", scale="standardized", mean=(0.5, 0.4, 0.3),
                          std=(0.2, 0.25, 0.5), contract=contract)
    np.testing.assert_allclose(own.apply(rgb), (rgb / 255 - [0.5, 0.4, 0.3]) / [0.2, 0.25, 0.5],
                               rtol=1e-5, atol=1e-5)
    one = InputConvention(layout="NHWC", scale="standardized", mean=0.5, std=0.5,
                          contract=contract)
    assert one.mean == (0.5, 0.5, 0.5)  # one value: the same for every channel
    gray = _rgb_contract(1)
    assert InputConvention(layout="NHW", contract=gray).apply(rgb[..., :1]).shape == (7, 6, 5)
    torch_gray = InputConvention(layout="NHWC", scale="standardized", contract=gray)
    assert torch_gray.mean == pytest.approx((0.449,)) and torch_gray.std == pytest.approx((0.226,))


@pytest.mark.parametrize("kwargs, message", [
    ({"layout": "NHW"}, "NHW has no channel axis"),
    ({"layout": "NHWC", "scale": "l2"}, "l2 is for digit models"),
    ({"layout": "NHWC", "ink": BLACK_ON_WHITE}, "--ink is for digit models"),
    ({"layout": "NHWC", "scale": "standardized", "mean": (0.1, 0.2), "std": (1, 1)},
     "2 values for a model with 3 channels"),
    ({"layout": "NHWC", "scale": "standardized", "mean": (0.1, 0.2, 0.3), "std": (1, 0, 1)},
     "std finite and > 0"),
])
def test_general_conventions_refuse(kwargs, message):
    with pytest.raises(UsageError, match=message):
        InputConvention(contract=_rgb_contract(), **kwargs)


def test_gray_refuses_bgr_and_caffe():
    with pytest.raises(UsageError, match="--channel-order bgr needs 3 channels"):
        InputConvention(layout="NHWC", channel_order="bgr", contract=_rgb_contract(1))
    with pytest.raises(UsageError, match="caffe.*is for RGB models"):
        InputConvention(layout="NHWC", scale="caffe", contract=_rgb_contract(1))


def test_general_records_round_trip_and_describe():
    contract = _rgb_contract()
    found = candidates((None, 3, 6, 5), outputs=LOGITS, contract=contract)
    assert len(found) == len(set(found)) == 9 and {c.layout for c in found} == {"NCHW"}
    assert [c.describe() for c in found[:5]] == [
        "raw 0..255", "/255", "tf [-1,1]", "torch (x/255-mean)/std ImageNet",
        "caffe BGR x-ImageNet mean"]
    assert found[5].describe() == "BGR, raw 0..255"
    for conv in found + [InputConvention(layout="flat", scale="standardized", mean=(0.5, .4, .3),
                                         std=(.2, .2, .2), contract=contract)]:
        d = conv.to_dict()
        assert "ink" not in d and d["channel_order"] in ("rgb", "bgr")
        assert InputConvention.from_dict(d, contract) == conv
    torch = found[3].to_dict()
    assert torch["mean"] == [0.485, 0.456, 0.406] and torch["preset"] == "torch"
    gray = candidates((None, 6, 5), contract=_rgb_contract(1))
    assert [c.describe() for c in gray] == ["raw 0..255", "/255", "tf [-1,1]",
                                           "(x/255-(0.449))/(0.226)"]
    # a digit record is exactly what it was
    assert InputConvention(scale="unit").to_dict() == {
        "layout": "NHW", "input_shape": ["N", 28, 28], "scale": "unit",
        "ink": "white-on-black", "outputs": "probabilities", "description": "(N,28,28) /255, "
        "probabilities"}


def test_general_layout_of():
    contract = _rgb_contract()
    assert layout_of((None, 6, 5, 3), contract) == "NHWC"
    assert layout_of((None, 3, 6, 5), contract) == "NCHW"
    assert layout_of((None, 90), contract) == "flat"
    with pytest.raises(ModelError, match="not a 6x5x3 image"):
        layout_of((None, 6, 5), contract)


def test_flags_presets_and_channel_lists():
    contract = _rgb_contract()
    torch = declared_convention(ConventionFlags(preset="torch"), (None, 3, 6, 5), contract)
    assert torch.preset == "torch" and torch.layout == "NCHW"
    caffe = declared_convention(ConventionFlags(preset="caffe"), (None, 6, 5, 3), contract)
    assert caffe.channel_order == "bgr" and caffe.preset == "caffe"
    own = ConventionFlags.from_options({"preprocess": "torch", "input_mean": (0.5, 0.5, 0.5),
                                        "input_std": (0.25, 0.25, 0.25)})
    conv = declared_convention(own, (None, 6, 5, 3), contract)
    assert conv.mean == (0.5, 0.5, 0.5) and conv.preset is None
    assert own.given == ["--input-mean", "--input-std", "--preprocess"]
    bgr = ConventionFlags(channel_order="bgr")
    assert not bgr.declared
    assert all(c.channel_order == "bgr" for c in candidates((None, 6, 5, 3), contract=contract)
               if bgr.allows(c))
    with pytest.raises(UsageError, match="give one"):
        ConventionFlags(preset="tf", scale="unit")
    with pytest.raises(UsageError, match="--input-mean/--input-std need"):
        ConventionFlags(preset="tf", mean=0.5, std=0.5)
    with pytest.raises(UsageError, match="--channel-order bgr is for RGB models"):
        declared_convention(ConventionFlags(scale="unit", channel_order="bgr"), (None, 784))
    with pytest.raises(UsageError, match="--ink is for digit models"):
        declared_convention(ConventionFlags(scale="unit", ink=BLACK_ON_WHITE),
                            (None, 6, 5, 3), contract)


def test_policy_flags():
    from digitkit.images.pixels import PixelPolicy
    from digitkit.model.conventions import NO_POLICY, PolicyFlags

    assert NO_POLICY.policy(6, 5, 3) == PixelPolicy((6, 5), 3)
    flags = PolicyFlags.from_options({"input_size": "96x64", "crop_fraction": 0.875,
                                      "interpolation": "bicubic"})
    assert flags.policy(None, None, 1) == PixelPolicy((96, 64), 1, resize="center-crop",
                                                      crop_fraction=0.875,
                                                      interpolation="bicubic")
    assert PolicyFlags(pad="10,20,30").policy(6, 5, 3).resize == "letterbox"
    with pytest.raises(UsageError, match="dynamic \\(\\?x\\?\\); give --input-size HxW"):
        NO_POLICY.policy(None, None, 3)
    with pytest.raises(UsageError, match="--input-size 96x64: model takes 6x5"):
        flags.policy(6, 5, 3)
    with pytest.raises(UsageError, match="--input-size 'big'"):
        PolicyFlags(input_size="big")
    with pytest.raises(UsageError, match="--resize --crop-fraction: a crop fraction applies only"):
        PolicyFlags(resize="squash", crop_fraction=0.5)
    recorded = PixelPolicy((6, 5), 3, resize="letterbox")
    assert PolicyFlags(interpolation="area").over(recorded).interpolation == "area"
    assert NO_POLICY.over(recorded) is recorded
