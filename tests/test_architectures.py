import numpy as np
import pytest

from digitkit.architectures import DIGITS, IMAGES, TABLE, build_model
from digitkit.errors import UsageError
from digitkit.model.contract import INPUT_NAME, OUTPUT_NAME


@pytest.mark.parametrize("arch", [n for n, a in TABLE.items() if a.data == DIGITS])
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


@pytest.mark.parametrize("arch, shape", [
    ("small-cnn", (40, 32, 3)), ("small-cnn", (20, 12, 1)),
    ("mobilenet-v3-small", (32, 48, 1)),  # a gray model: its channel repeated for the backbone
    ("efficientnet-v2-b0", (32, 32, 3)),
])
def test_general_contract_by_name(arch, shape):
    """Any image network: "pixels" float32 (N,H,W,C) raw 0..255 in, "probabilities" (N,K)
    softmax out, normalisation inside the graph (raw and scaled-by-the-caller inputs differ)."""
    import keras

    keras.utils.set_random_seed(0)
    model = build_model(arch, shape, 4, "none")
    assert model.inputs[0].name == "pixels" and tuple(model.inputs[0].shape) == (None, *shape)
    assert model.inputs[0].dtype == "float32"
    assert model.layers[-1].name == "probabilities"
    x = np.random.default_rng(0).uniform(0, 255, (3, *shape)).astype(np.float32)
    probs = np.asarray(model(x, training=False))
    assert probs.shape == (3, 4) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_general_networks_need_their_shape():
    with pytest.raises(UsageError, match="needs an input shape and a number of classes"):
        build_model("small-cnn")


def test_every_image_network_is_tested():
    tested = {"small-cnn", "mobilenet-v3-small", "efficientnet-v2-b0"}
    assert tested == {n for n, a in TABLE.items() if a.data == IMAGES}
