"""digitkit.model.contract: the model contract as a value. The digit contract's JSON form is
pinned byte for byte (every export ever written carries it); another contract is only data,
and the convention layer follows it without a branch."""

from __future__ import annotations

import json

import numpy as np
import pytest

from digitkit.errors import ModelError, UsageError
from digitkit.model.contract import (
    DIGIT_CONTRACT,
    MNIST_DIGIT,
    ModelContract,
    Preprocessing,
    contract_from_record,
)
from digitkit.model.conventions import (
    ConventionFlags,
    InputConvention,
    candidates,
    declared_convention,
    layout_of,
)
from digitkit.model.foreign import SourceModel

#: export.json "model" as digitkit has always written it (keys in this order).
DIGIT_RECORD = (
    '{"input": {"name": "pixels", "shape": ["N", 28, 28], "dtype": "float32", '
    '"value_range": [0, 255], "ink_polarity": "white ink on black background (MNIST '
    'convention)", "preprocessing": "none: normalisation is inside the graph; feed raw pixel '
    'values"}, "output": {"name": "probabilities", "shape": ["N", 10], "dtype": "float32", '
    '"meaning": "softmax probabilities, column i is class_labels[i]"}, "class_labels": ["0", '
    '"1", "2", "3", "4", "5", "6", "7", "8", "9"]}')

#: A contract that is not digits: 32x32 gray letters, five classes (data, not code).
LETTERS = ModelContract(kind="letter", height=32, width=32, channels=1, layout="NHW",
                        class_names=("a", "b", "c", "d", "e"),
                        preprocessing=Preprocessing("squash", "digitkit.images", "resize"))


def test_the_digit_contract_json_form_is_unchanged():
    c = DIGIT_CONTRACT
    assert json.dumps(c.to_dict()) == DIGIT_RECORD
    assert (c.input_shape, c.num_classes, c.input_name, c.output_name) == (
        (28, 28), 10, "pixels", "probabilities")
    assert c.class_names == tuple("0123456789") and c.preprocessing is MNIST_DIGIT
    assert c.preprocessing.module == "digitkit.images.mnist_convention"
    meta = c.onnx_metadata()
    assert list(meta) == ["class_labels", "input_name", "input_shape", "input_dtype",
                          "input_value_range", "input_ink_polarity", "input_preprocessing",
                          "output_name", "output_meaning"]
    record = c.to_dict()
    assert meta["class_labels"] == json.dumps(record["class_labels"])
    assert meta["input_shape"] == '["N", 28, 28]' and meta["input_value_range"] == "[0, 255]"
    assert meta["input_ink_polarity"] == record["input"]["ink_polarity"]
    assert c.input_text("batch") == "pixels float32 (batch,28,28) raw 0..255 white-on-black"
    assert c.output_text() == "probabilities (N,10)"


def test_layouts_are_the_contracts_pixels_laid_out():
    c = DIGIT_CONTRACT
    assert [c.layout_shape(n) for n in ("NHW", "NHWC", "NCHW", "flat")] == [
        (28, 28), (28, 28, 1), (1, 28, 28), (784,)]
    assert LETTERS.layout_shape("flat") == (1024,)
    with pytest.raises(ValueError, match="one channel only"):
        ModelContract("x", 8, 8, 3, "NHW", ("a", "b"), MNIST_DIGIT)
    with pytest.raises(ValueError, match="at least two classes"):
        ModelContract("x", 8, 8, 1, "NHW", ("a",), MNIST_DIGIT)


def test_class_checks_name_the_contract():
    DIGIT_CONTRACT.check_classes("m.onnx", ["batch", 10])
    DIGIT_CONTRACT.check_classes("m.onnx", [None, None])  # unknown: checked when run
    with pytest.raises(ModelError) as e:
        DIGIT_CONTRACT.check_classes("m.onnx", (None, 5))
    assert str(e.value) == ("m.onnx: outputs (N, 5), expected (N, 10): one score per digit "
                            "0..9; digitkit serves digit classifiers only")
    LETTERS.check_classes("m.onnx", (None, 5))
    with pytest.raises(ModelError, match=r"expected \(N, 5\): one score per letter a..e"):
        LETTERS.check_classes("m.onnx", (None, 10))


def test_records_read_back():
    assert contract_from_record(None) is DIGIT_CONTRACT  # an export without a record
    assert contract_from_record(json.loads(DIGIT_RECORD)) is DIGIT_CONTRACT
    older = json.loads(DIGIT_RECORD)
    older["input"]["preprocessing"] = "older wording"  # prose is not what identifies it
    assert contract_from_record(older) is DIGIT_CONTRACT
    with pytest.raises(ModelError, match="export.json: records a model contract digitkit "
                                         "does not know"):
        contract_from_record(LETTERS.to_dict())


def test_conventions_follow_the_contract():
    """Layouts, candidates, declarations, the numpy reference and refusals all read the
    contract: a 32x32 letter model is data, not a new branch."""
    assert layout_of((None, 32, 32, 1), LETTERS) == "NHWC"
    assert layout_of((None, 1024), LETTERS) == "flat"
    with pytest.raises(ModelError) as e:
        layout_of((None, 28, 28), LETTERS)
    assert str(e.value) == ("model input (N, 28, 28) is not a 32x32 letter image; expected "
                            "(N,32,32), (N,32,32,1), (N,1,32,32) or (N,1024)")
    with pytest.raises(ModelError, match="not a 28x28 digit image"):
        layout_of((None, 32, 32, 1))
    found = candidates((None, 1, 32, 32), contract=LETTERS)
    assert {c.input_shape for c in found} == {(1, 32, 32)}
    assert all(c.contract is LETTERS for c in found)
    conv = declared_convention(ConventionFlags(scale="unit"), (None, 1024), LETTERS)
    assert conv.layout == "flat" and conv.describe(full=True) == "(N,1024) /255, probabilities"
    x = np.arange(2 * 32 * 32, dtype=np.float32).reshape(2, 32, 32) % 256
    np.testing.assert_array_equal(conv.apply(x), (x / np.float32(255)).reshape(2, 1024))
    with pytest.raises(ValueError, match=r"expected pixels of shape \(N, 32, 32\)"):
        conv.apply(np.zeros((2, 28, 28), np.float32))
    assert InputConvention(contract=LETTERS).is_contract
    assert InputConvention(contract=LETTERS) != InputConvention()  # other pixels
    back = InputConvention.from_dict(conv.to_dict(), LETTERS)
    assert back == conv
    with pytest.raises(UsageError, match=r"of the \(N, 32, 32\) pixels"):
        InputConvention(scale="l2", l2_axis=3, contract=LETTERS)


def test_a_source_model_is_checked_against_its_contract():
    def five(x):
        return np.full((len(x), 5), 0.2, np.float32)

    src = SourceModel("letters.onnx", (None, 32, 32), five, (None, 5), "pixels",
                      "probabilities", contract=LETTERS)
    assert src.honours_contract and src(np.zeros((3, 32, 32), np.float32)).shape == (3, 5)
    with pytest.raises(ModelError, match=r"outputs \(N, 5\), expected \(N, 10\)"):
        SourceModel("letters.onnx", (None, 32, 32), five, (None, 5))  # the digit contract


# -- general image contracts (issue 18) -------------------------------------------------------


def test_image_contract_round_trips_through_its_records():
    from digitkit.images.pixels import PixelPolicy
    from digitkit.model.contract import (
        contract_from_metadata,
        contract_from_record,
        image_contract,
    )

    policy = PixelPolicy((96, 64), 3, resize="center-crop", crop_fraction=0.875)
    c = image_contract(96, 64, 3, ["cat", "dog", "emu", "fox", "gnu"], policy)
    assert c.input_shape == (96, 64, 3) and c.num_classes == 5 and not c.is_digit
    assert c.pixel_policy == policy
    assert contract_from_record(c.to_dict()) == c
    assert contract_from_metadata(c.onnx_metadata(), "m.onnx") == c
    # the digit contract keeps its records exactly, and reads back as itself
    assert "pixel_policy" not in DIGIT_CONTRACT.to_dict()["input"]
    assert contract_from_metadata(DIGIT_CONTRACT.onnx_metadata(), "m.onnx") is DIGIT_CONTRACT
    # another policy is another contract: a record is read back whole, not by shape alone
    other = image_contract(96, 64, 3, c.class_names)
    assert other != c and contract_from_record(other.to_dict()) == other


def test_image_contract_refuses_a_policy_of_another_size():
    from digitkit.images.pixels import PixelPolicy
    from digitkit.model.contract import image_contract

    with pytest.raises(ValueError, match="does not match"):
        image_contract(32, 32, 3, ["a", "b"], PixelPolicy((28, 28), 3))


def test_a_damaged_image_record_is_one_model_error():
    from digitkit.model.contract import contract_from_record, image_contract

    record = image_contract(8, 8, 1, ["a", "b"]).to_dict()
    record["input"]["pixel_policy"]["channels"] = 7
    with pytest.raises(ModelError, match="export.json"):
        contract_from_record(record)
