import numpy as np
import pytest

from digitkit.architectures import ARCHITECTURES, build_model
from digitkit.errors import UsageError
from digitkit.model.contract import INPUT_NAME, OUTPUT_NAME


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_input_output_contract(arch, mnist_test):
    import keras

    keras.utils.set_random_seed(0)
    model = build_model(arch)
    assert model.inputs[0].name == INPUT_NAME
    assert tuple(model.inputs[0].shape) == (None, 28, 28)
    assert model.inputs[0].dtype == "float32"
    assert model.layers[-1].name == OUTPUT_NAME
    x = mnist_test[0][:7].astype(np.float32)  # raw 0..255, an odd batch size
    probs = np.asarray(model(x, training=False))
    assert probs.shape == (7, 10) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert (probs >= 0).all()


def test_seed_mlp_normalises_like_the_original_script(mnist_test):
    """The classic script ran keras.utils.normalize(x, axis=1) outside the model."""
    import keras

    model = build_model("seed-mlp")
    x = mnist_test[0][:16].astype(np.float32)
    inside = np.asarray(model.get_layer("normalize")(x))
    outside = keras.utils.normalize(x, axis=1)
    np.testing.assert_allclose(inside, outside, atol=1e-6)
    dense = [layer.units for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    assert dense == [64, 32, 10]


def test_unknown_architecture():
    with pytest.raises(UsageError, match="unknown architecture 'resnet'"):
        build_model("resnet")
