"""`digitkit export` of digit classifiers made elsewhere (issue 10), through the CLI: the
convention detected with its evidence printed (or declared), every copy wrapped in the
adapter, each validated against the source run under its own convention, the source's own
accuracy beside each copy's, and the refusals: not a digit classifier, no credible
convention, an ONNX source asked for a SavedModel, code-carrying layers."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from _cli import run_cli
from _foreign_models import FIXTURES, LEGACY_H5
from digitkit.model.adapters import ADAPTER_KEY, CONVENTION_KEY
from digitkit.model.conventions import InputConvention
from digitkit.model.detect import predict_under

#: Parity images per export: the edge batches are added to them, and the ONNX copy is then
#: checked against the source on 1,000 more real images below.
IMAGES = "200"


pytestmark = pytest.mark.usefixtures("private_cache")


@pytest.fixture(scope="module")
def pixels(mnist_test):
    return mnist_test[0][::10].astype(np.float32)  # 1,000 real test images, raw 0..255


def _export(src, out, mnist_dir, *args):
    result = run_cli("export", src, "--out", out, "--data", mnist_dir, "--images", IMAGES,
                     *args)
    manifest = json.loads((out / "export.json").read_text()) if result.exit_code in (0, 4) \
        else None
    return result, manifest


def _onnx_reproduces(out, source, convention, pixels):
    """The exported ONNX, fed raw pixels, gives the source's own probabilities."""
    import onnx

    from digitkit.predictors.ort import OnnxPredictor

    got = OnnxPredictor(out / "model.onnx").predict(pixels)
    ref = predict_under(source, convention, pixels)
    assert np.abs(got - ref).max() < 1e-5
    np.testing.assert_array_equal(got.argmax(1), ref.argmax(1))
    props = {p.key: p.value for p in onnx.load(str(out / "model.onnx")).metadata_props}
    assert InputConvention.from_dict(json.loads(props[CONVENTION_KEY])) == convention
    assert "digitkit adapter" in props[ADAPTER_KEY] and props["input_name"] == "pixels"


@pytest.mark.parametrize("name", ["notebook-axis1", "legacy-notebook-axis1"])
def test_the_classic_notebook_exports_and_passes(zoo, name, tmp_path, mnist_dir, pixels):
    """Story 1: the notebook's model.h5, saved by Keras 3 and by tf.keras 2."""
    out = tmp_path / "export"
    result, manifest = _export(zoo.path(name), out, mnist_dir, "--format", "onnx")
    assert result.exit_code == 0, result.output
    conv = FIXTURES[name][1]
    assert "detected: keras.utils.normalize(axis=1), " in result.output
    assert "next best: keras.utils.normalize(axis=-1), " in result.output
    assert "[ref] source " in result.output and "the source's own" in result.output
    src = manifest["source"]
    assert InputConvention.from_dict(src["convention"]) == conv
    assert src["detection"]["how"] == "detected" and len(src["detection"]["candidates"]) == 12
    assert src["copy"] == "model.h5" and "digitkit adapter" in src["adapter"]
    onnx_rec = manifest["artifacts"]["onnx"]
    assert onnx_rec["status"] == "passed" and onnx_rec["validation"]["rtol"] == 1e-5
    acc = onnx_rec["test_accuracy"]
    assert acc["test_images"] == 10000 and acc["copy"] == acc["source"] == src["test_accuracy"]
    assert acc["source"] > 0.85
    _onnx_reproduces(out, zoo.source(name), conv, pixels)


def test_convnet_h5_and_keras_export(zoo, tmp_path, mnist_dir, pixels):
    """Story 2: the (N,28,28,1) convnet trained on x/255, as .keras and as .h5."""
    import keras

    name = "convnet-unit"
    conv = FIXTURES[name][1]
    h5 = tmp_path / "convnet.h5"
    keras.models.load_model(zoo.path(name)).save(h5)
    for src, copy in ((zoo.path(name), "model.keras"), (h5, "model.h5")):
        out = tmp_path / f"export-{copy}"
        result, manifest = _export(src, out, mnist_dir, "--format", "onnx")
        assert result.exit_code == 0, result.output
        assert "detected: /255, " in result.output
        assert manifest["source"]["copy"] == copy and (out / copy).is_file()
        assert InputConvention.from_dict(manifest["source"]["convention"]) == conv
        _onnx_reproduces(out, zoo.source(name), conv, pixels)


def test_flat_logits_with_declared_flags(zoo, tmp_path, mnist_dir, pixels):
    """Story 3: a flat (N,784) model outputting logits, standardized input. Declared flags
    skip detection (and decide, even against what detection would pick)."""
    name = "flat-logits-standardized"
    out = tmp_path / "export"
    result, manifest = _export(zoo.path(name), out, mnist_dir, "--format", "onnx",
                               "--input-scale", "standardized", "--outputs", "logits")
    assert result.exit_code == 0, result.output
    assert "declared: (x/255-0.1307)/0.3081 (logits: softmax added), " in result.output
    assert "detected" not in result.output and "input convention  " not in result.output
    assert manifest["source"]["detection"]["how"] == "declared"
    right = manifest["source"]["test_accuracy"]
    _onnx_reproduces(out, zoo.source(name), FIXTURES[name][1], pixels)
    # a wrong declaration is obeyed (the outputs still read off the model), and the source's
    # own accuracy under it, printed beside every copy's, shows it
    result, manifest = _export(zoo.path(name), tmp_path / "export2", mnist_dir, "--format",
                               "onnx", "--input-scale", "unit")
    assert result.exit_code == 0, result.output
    assert "declared: /255 (logits: softmax added), " in result.output
    assert manifest["source"]["test_accuracy"] < right - 0.03


def test_onnx_source_gets_adapter_nodes(zoo, tmp_path, mnist_dir, pixels):
    """An NCHW ONNX source: --format all makes the ONNX copies it can (an ONNX graph has no
    TensorFlow graph to save); asking for a SavedModel is refused before any work."""
    name = "nchw-onnx-unit"
    out = tmp_path / "export"
    result, manifest = _export(zoo.path(name), out, mnist_dir, "--quantize", "int8")
    assert result.exit_code == 0, result.output
    assert "adapter nodes added to the source's graph" in result.output
    assert set(manifest["artifacts"]) == {"source", "onnx", "onnx-int8"}
    assert manifest["config"]["formats"] == ["onnx"] and not (out / "saved_model").exists()
    assert (out / "source.onnx").read_bytes() == zoo.path(name).read_bytes()
    _onnx_reproduces(out, zoo.source(name), FIXTURES[name][1], pixels)
    refused = run_cli("export", zoo.path(name), "--out", tmp_path / "x", "--format",
                      "savedmodel", "--data", mnist_dir)
    assert refused.exit_code == 2 and "cannot become a savedmodel copy" in refused.output
    assert not (tmp_path / "x").exists()


def test_savedmodel_source(zoo, tmp_path, mnist_dir, pixels):
    """A SavedModel directory made elsewhere (input "flat_input" (None, 784), logits)."""
    from digitkit.model.loading import import_tensorflow, load_keras_model

    tf = import_tensorflow()
    model = load_keras_model(zoo.path("flat-logits-standardized"), check_contract=False)
    module = tf.Module()
    module.model = model

    @tf.function(input_signature=[tf.TensorSpec((None, 784), tf.float32, name="flat_input")])
    def serve(flat_input):
        return {"logits": model(flat_input, training=False)}

    tf.saved_model.save(module, str(tmp_path / "sm"), signatures={"serving_default": serve})
    out = tmp_path / "export"
    result, manifest = _export(tmp_path / "sm", out, mnist_dir, "--format", "savedmodel")
    assert result.exit_code == 0, result.output
    assert manifest["source"]["copy"] == "source_saved_model"
    assert (out / "source_saved_model" / "saved_model.pb").is_file()
    from digitkit.predictors.tf import SavedModelPredictor

    got = SavedModelPredictor(out / "saved_model").predict(pixels)
    ref = predict_under(zoo.source("flat-logits-standardized"),
                        FIXTURES["flat-logits-standardized"][1], pixels)
    assert np.abs(got - ref).max() < 1e-5


@pytest.mark.parametrize("name, message", [
    ("five-classes", "its input convention cannot be told"),
    ("untrained", "no input convention makes it a credible digit classifier"),
])
def test_non_digit_models_are_refused_in_one_line(zoo, name, message, tmp_path, mnist_dir):
    result = run_cli("export", zoo.path(name), "--out", tmp_path / "out", "--data", mnist_dir)
    assert result.exit_code == 1
    line = result.output.strip()
    assert "\n" not in line and line.startswith("digitkit: error: ") and message in line
    assert "Traceback" not in result.output


def test_code_carrying_keras_is_refused(tmp_path, mnist_dir):
    import keras

    inp = keras.Input(shape=(28, 28, 1))
    x = keras.layers.Lambda(lambda t: t / 255.0, name="scale")(inp)
    keras.Model(inp, keras.layers.Dense(10)(keras.layers.Flatten()(x))).save(
        tmp_path / "lambda.keras")
    result = run_cli("export", tmp_path / "lambda.keras", "--data", mnist_dir)
    assert result.exit_code == 1
    assert "Lambda layer 'scale'" in result.output and "--trust-model" in result.output


def test_own_models_export_as_before(seed_mlp_h5, tmp_path, mnist_dir):
    """The contract rule: digitkit's own model gets no adapter, no detection, no new keys."""
    import onnx

    src = tmp_path / "seed.h5"
    shutil.copyfile(seed_mlp_h5, src)
    result, manifest = _export(src, tmp_path / "export", mnist_dir, "--format", "onnx")
    assert result.exit_code == 0, result.output
    assert "detected" not in result.output and "[ref] keras (keras " in result.output
    assert list(manifest["source"]) == ["path", "sha256", "copy"]
    assert "test_accuracy" not in manifest["artifacts"]["onnx"]
    props = {p.key for p in onnx.load(str(tmp_path / "export" / "model.onnx")).metadata_props}
    assert CONVENTION_KEY not in props and ADAPTER_KEY not in props


def test_validate_export_dir_of_a_foreign_export(zoo, tmp_path, mnist_dir):
    from digitkit.export import validate_export_dir

    out = tmp_path / "export"
    result, _ = _export(LEGACY_H5, out, mnist_dir, "--format", "onnx")
    assert result.exit_code == 0, result.output
    results = validate_export_dir(out, data=mnist_dir, n_images=100)
    assert [r.artifact for r in results] == ["onnx"] and results[0].ok
