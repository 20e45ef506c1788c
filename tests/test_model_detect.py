"""digitkit.model.detect: each foreign model's input convention is found from evidence on real
MNIST test images, declared conventions skip the search, and models that cannot be called
(ambiguous, not credible, not a digit classifier) are refused with one line."""

from __future__ import annotations

import numpy as np
import pytest

from _foreign_models import DETECTABLE, FIXTURES, minmax_source
from digitkit.errors import ModelError
from digitkit.model.conventions import (
    BLACK_ON_WHITE,
    LOGITS,
    PROBABILITIES,
    ConventionFlags,
    InputConvention,
)
from digitkit.model.detect import (
    MIN_ACCURACY,
    ConventionError,
    detect_convention,
    detection_sample,
    output_kind,
    softmax,
)
from digitkit.model.foreign import SourceModel, check_classes
from digitkit.model.resolve import resolve_convention


@pytest.fixture(scope="module")
def detections(zoo, mnist_test):
    """Detection on every detectable fixture, run once: {name: Detection}."""
    x, y = mnist_test
    return {name: detect_convention(zoo.source(name), x, y) for name in DETECTABLE}


def _one_line(e: Exception) -> str:
    text = str(e)
    assert "\n" not in text
    return text


@pytest.mark.parametrize("name", DETECTABLE)
def test_detection_picks_the_training_convention(detections, name):
    d = detections[name]
    expected = FIXTURES[name][1]
    assert d.convention == expected, "\n".join([d.summary(), *d.table()])
    assert not d.declared and d.images == 2000
    assert d.best.convention == expected and d.best.accuracy >= MIN_ACCURACY
    assert len(d.scores) == 12 and d.scores[0].loss == min(s.loss for s in d.scores)
    head = f"detected: {expected.describe()}"
    assert d.summary().startswith(head) and "; next best: " in d.summary()
    if expected.outputs == LOGITS:
        assert "(logits: softmax added)" in d.summary()
    record = d.to_dict()
    assert InputConvention.from_dict(record["convention"]) == expected
    assert record["how"] == "detected" and len(record["candidates"]) == 12


def test_relu_convnet_trap_is_told_apart_by_the_loss(detections):
    """Fed 0..255 instead of 0..1, the ReLU convnet keeps its accuracy while its probabilities
    saturate: accuracy alone cannot choose, the loss does."""
    scores = {s.convention.describe(): s for s in detections["convnet-unit"].scores}
    unit, raw = scores["/255"], scores["raw 0..255"]
    assert abs(unit.accuracy - raw.accuracy) < 0.02
    assert raw.loss > 2 * unit.loss


def test_notebook_summary_names_the_runner_up(detections):
    line = detections["notebook-axis1"].summary()
    assert line.startswith("detected: keras.utils.normalize(axis=1), ")
    assert "next best: keras.utils.normalize(axis=-1)" in line


def test_digitkit_models_present_the_contract(seed_mlp_h5, linear_onnx, mnist_test):
    """digitkit's own models and exports are named "pixels" -> "probabilities": nothing to
    detect or adapt. (Detection could not even choose for the seed-mlp: it normalises inside,
    so raw, /255 and L2 over axis 1 give it the same outputs, and L2 over the other axis
    nearly the same.) Any flag given makes the model foreign again."""
    from digitkit.model.foreign import keras_source, onnx_source
    from digitkit.model.loading import load_keras_model
    from digitkit.predictors.ort import open_session

    seed = keras_source(load_keras_model(seed_mlp_h5, check_contract=False))
    linear = onnx_source(open_session(linear_onnx), linear_onnx.name)
    for source in (seed, linear):
        assert source.honours_contract
        d = resolve_convention(source, *mnist_test)
        assert d.how == "contract" and d.convention.is_contract
        assert d.best.accuracy > MIN_ACCURACY and len(d.scores) == 1
        assert d.summary().startswith("digitkit contract: raw 0..255, ")
    declared = resolve_convention(linear, *mnist_test, flags=ConventionFlags(scale="unit"))
    assert declared.declared and declared.convention.scale == "unit"


def test_equivalent_conventions_choose_the_simplest(zoo, mnist_test):
    d = detect_convention(minmax_source(zoo.nchw_weights()), *mnist_test)
    assert d.convention == InputConvention(outputs=LOGITS)
    assert len(d.equivalent) == 3
    assert d.runner_up.convention.scale == "l2"


def test_too_close_to_call_is_refused(zoo, mnist_test):
    ambiguous = minmax_source(zoo.nchw_weights(), tilt=0.05, name="tilted.onnx")
    with pytest.raises(ConventionError) as refused:
        detect_convention(ambiguous, *mnist_test)
    line = _one_line(refused.value)
    assert line.startswith("tilted.onnx: input convention too close to call: ")
    assert "--input-scale" in line and "--ink" in line and "--outputs" in line


def test_no_credible_convention_is_refused(zoo, mnist_test):
    with pytest.raises(ConventionError) as refused:
        detect_convention(zoo.source("untrained"), *mnist_test)
    line = _one_line(refused.value)
    assert "no input convention makes it a credible digit classifier" in line
    assert "below 80%" in line and "--input-scale" in line


def test_flags_narrow_the_candidates(zoo, mnist_test):
    """--ink black-on-white on a white-on-black model leaves no credible candidate."""
    with pytest.raises(ConventionError, match="credible"):
        detect_convention(zoo.source("nchw-onnx-unit"), *mnist_test,
                          flags=ConventionFlags(ink=BLACK_ON_WHITE))


def test_not_a_digit_classifier_is_a_general_one(zoo):
    """A 28x28 model with 5 outputs is no digit classifier: it is a general one (issue 18), and
    without labelled images of its own classes its convention is refused, not guessed."""
    source = zoo.source("five-classes")
    assert not source.contract.is_digit and source.contract.num_classes == 5
    assert source.contract.input_shape == (28, 28, 1)
    with pytest.raises(ConventionError) as refused:
        resolve_convention(source, None, None)
    line = _one_line(refused.value)
    assert "cannot be told" in line and "--calibration DIR" in line and "--preprocess" in line
    with pytest.raises(ModelError, match="expected \\(N, 10\\)"):
        check_classes("x.onnx", ["batch", 1000])
    # a source that states no output shape is caught on its first call
    blind = SourceModel("blind", (None, 784), lambda x: np.zeros((len(x), 3)))
    with pytest.raises(ModelError, match="outputs \\(N, 3\\)"):
        blind(np.zeros((2, 784), np.float32))


class _Counting:
    def __init__(self, source):
        self.source, self.calls = source, 0

    def __call__(self, x):
        self.calls += 1
        return self.source.call(x)


def test_declared_convention_skips_detection(zoo, mnist_test):
    nchw = zoo.source("nchw-onnx-unit")
    counting = _Counting(nchw)
    source = SourceModel(nchw.name, nchw.input_shape, counting, nchw.output_shape)
    # a wrong declaration is obeyed, not second-guessed: the user said so
    d = resolve_convention(source, *mnist_test, flags=ConventionFlags(scale="standardized"))
    assert d.declared and counting.calls == 4  # 2,000 images in batches of 500, one pass
    assert d.convention == InputConvention(layout="NCHW", scale="standardized", outputs=LOGITS)
    assert len(d.scores) == 1 and d.summary().startswith("declared: (x/255-0.1307)/0.3081")
    assert d.to_dict()["how"] == "declared"
    # no labels: nothing scored, the outputs still read off the model
    bare = resolve_convention(source, mnist_test[0], None, ConventionFlags(scale="unit"))
    assert bare.convention.outputs == LOGITS and bare.scores == ()
    with pytest.raises(ConventionError, match="--outputs logits"):
        resolve_convention(source, *mnist_test,
                           flags=ConventionFlags(scale="unit", outputs=PROBABILITIES))


def test_resolve_without_flags_detects(zoo, mnist_test):
    source = zoo.source("nchw-onnx-unit")
    assert not source.honours_contract
    d = resolve_convention(source, *mnist_test)
    assert d.convention == FIXTURES["nchw-onnx-unit"][1] and d.how == "detected"
    with pytest.raises(ConventionError, match="needs labelled MNIST test images"):
        resolve_convention(zoo.source("nchw-onnx-unit"), mnist_test[0], None)


def test_output_kind():
    logits = np.array([[2.0, -1.0, 0.5]])
    assert output_kind(logits) == LOGITS
    assert output_kind(softmax(logits)) == PROBABILITIES
    assert output_kind(softmax(logits), np.array([[0.5, 0.6, 0.0]])) == LOGITS
    assert output_kind(np.log(softmax(logits))) == LOGITS  # log-softmax: softmax restores it
    np.testing.assert_allclose(softmax(np.log(softmax(logits))), softmax(logits), rtol=1e-6)


def test_detection_sample_spans_the_set():
    x = np.arange(10000)
    xs, ys = detection_sample(x, x, 2000)
    assert len(xs) == 2000 and xs[0] == 0 and xs[-1] >= 9995 and np.all(np.diff(xs) == 5)
    assert len(detection_sample(x[:50], x[:50], 2000)[0]) == 50


# ------------------------------------------------------------------ general image classifiers


from _general_models import GENERAL_NAMES  # noqa: E402


@pytest.fixture(scope="module")
def general_sources(general_zoo):
    """Every general fixture loaded the way commands load it, with --calibration naming its
    classes: {name: SourceModel}."""
    from digitkit.predictors.adapted import load_source

    return {name: load_source(general_zoo.path(name), calibration=general_zoo.image_set).source
            for name in GENERAL_NAMES}


@pytest.mark.parametrize("name", GENERAL_NAMES)
def test_calibration_detects_each_general_convention(general_zoo, general_sources, name):
    """tf mode, torch mean/std (NCHW), caffe BGR, Rescaling inside, logits out, a gray model,
    and an NCHW ONNX with ImageNet mean/std and logits: detection on the labelled folder picks
    the convention each was trained on, by loss, and says what it scored."""
    from digitkit.model.detect import DETECTED, calibration_data, load_calibration

    source = general_sources[name]
    assert source.contract.class_names == ("astronaut", "brick", "cat", "coffee", "coins")
    cal = load_calibration(source.contract, general_zoo.image_set)
    found = resolve_convention(source, cal.pixels, cal.labels, data=calibration_data(cal))
    assert found.how == DETECTED
    assert found.convention == general_zoo.convention(name), found.table()
    assert found.best.accuracy >= found.best.floor
    assert f"on {len(cal)} calibration images in " in found.evidence()
    assert found.to_dict()["data"].startswith("calibration images in ")


def test_credible_floor_is_relative_to_chance():
    from digitkit.model.detect import credible_floor

    assert credible_floor(5, 200) == pytest.approx(0.6)
    assert credible_floor(1000, 50_000) == pytest.approx(0.5005)
    assert credible_floor(2, 20) == pytest.approx(0.5 + 3 * (0.25 / 20) ** 0.5)


def test_untrained_general_model_is_not_credible(general_zoo):
    """A model that cannot tell the classes apart under any convention is refused, with the
    floor stated against chance for its K classes."""
    import keras

    from digitkit.model.foreign import keras_source

    keras.utils.set_random_seed(3)
    inp = keras.Input(shape=(24, 24, 3))
    out = keras.layers.Dense(5, activation="softmax")(keras.layers.Flatten()(inp))
    model = keras.Model(inp, out)
    source = keras_source(model, "untrained.keras", general_zoo.contract("tf"))
    cal = general_zoo.labelled
    with pytest.raises(ConventionError) as refused:
        resolve_convention(source, cal.pixels, cal.labels)
    line = _one_line(refused.value)
    assert "credible classifier of its 5 classes" in line and "below 60%: chance is 20%" in line
    assert "--calibration DIR" in line


def test_without_calibration_a_general_model_says_it_or_is_refused(general_zoo):
    """No labelled images: a Keras model whose graph begins with its own Rescaling takes raw
    pixels (stated by its layers; outputs read off it); a declared preset is taken as given;
    anything else is refused in one line naming --calibration and the flags."""
    from digitkit.model.detect import DECLARED, STATED
    from digitkit.predictors.adapted import load_source

    inside = load_source(general_zoo.path("rescaling-inside")).source
    found = resolve_convention(inside, None, None)
    assert found.how == STATED and found.convention == general_zoo.convention(
        "rescaling-inside").__class__(layout="NHWC", contract=inside.contract)
    assert found.summary().startswith("stated by its own layers (Rescaling layer 'rescale'")
    onnx_src = load_source(general_zoo.path("nchw-onnx")).source
    assert onnx_src.contract.class_names == ("0", "1", "2", "3", "4")
    declared = resolve_convention(onnx_src, None, None, ConventionFlags(preset="torch"))
    assert declared.how == DECLARED and declared.convention.outputs == LOGITS
    assert declared.convention.layout == "NCHW" and declared.convention.preset == "torch"
    with pytest.raises(ConventionError) as refused:
        resolve_convention(onnx_src, None, None)
    line = _one_line(refused.value)
    assert line.startswith("nchw.onnx: its input convention cannot be told")
    assert "--calibration DIR" in line and "--preprocess {tf,torch,caffe}" in line
    with pytest.raises(Exception, match="--ink is for digit models"):
        resolve_convention(onnx_src, None, None, ConventionFlags(ink=BLACK_ON_WHITE))


def test_an_embedded_record_states_the_convention(general_zoo, tmp_path):
    """A Keras file that records its contract and convention (digitkit.model.embedded) needs
    no flags and no data: names and convention come from the record."""
    import shutil

    from digitkit.model.detect import STATED
    from digitkit.model.embedded import write_contract
    from digitkit.predictors.adapted import load_source

    path = tmp_path / "recorded.keras"
    shutil.copyfile(general_zoo.path("caffe"), path)
    conv = general_zoo.convention("caffe")
    write_contract(path, conv.contract, conv.to_dict())
    source = load_source(path).source
    assert source.contract == conv.contract
    found = resolve_convention(source, None, None)
    assert found.how == STATED and found.convention == conv
    assert found.summary() == "stated by its embedded record: caffe BGR x-ImageNet mean"
