"""digitkit.model.loading: Keras models that carry code are refused unless trusted."""

from __future__ import annotations

from _cli import run_cli


def _lambda_h5(path):
    import keras

    inp = keras.Input(shape=(28, 28), name="pixels")
    x = keras.layers.Lambda(lambda t: t / 255.0, name="scale")(inp)
    x = keras.layers.Flatten()(x)
    out = keras.layers.Dense(10, activation="softmax", name="probabilities")(x)
    keras.Model(inp, out).save(path)
    return path


def test_lambda_model_refused_unless_trusted(tmp_path, mnist_dir):
    src = _lambda_h5(tmp_path / "lambda.h5")
    refused = run_cli("export", src, "--data", mnist_dir)
    assert refused.exit_code == 1
    line = refused.output.strip()
    assert line.startswith("digitkit: error: ") and "\n" not in line
    assert "Lambda layer 'scale'" in line and "--trust-model" in line
    assert not (tmp_path / "export").exists()
    trusted = run_cli("export", src, "--data", mnist_dir, "--format", "onnx", "--images", 100,
                      "--trust-model")
    assert trusted.exit_code == 0, trusted.output


def test_unsafe_parts_finds_custom_code():
    from digitkit.model.safety import unsafe_parts

    config = {"class_name": "Functional", "config": {"layers": [
        {"class_name": "Dense", "config": {"name": "d"}},
        {"class_name": "MyLayer", "module": "mypkg.layers", "config": {"name": "m"}},
        {"class_name": "Other", "config": {"name": "o"}},
    ]}}
    found = unsafe_parts(config, is_known_layer=lambda c: c == "Dense")
    assert any("mypkg.layers" in f for f in found)
    assert any("'o'" in f and "not a Keras layer" in f for f in found)
    assert not any("'d'" in f for f in found)
