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
