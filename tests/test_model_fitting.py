"""digitkit.model.fitting: a model trained on constants no preset has gets them fitted from
the labelled calibration images (and its adapted copy then gives its own labels); a model
trained on a preset keeps the preset; the rules against fitting noise (images per class, the
two halves) hold; declared constants skip the fit; the fit is paid once and cached.

The models are numpy MLPs written as NCHW ONNX files (what a PyTorch tutorial exports), so
these tests run on the base install's ONNX Runtime, no TensorFlow."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from _cli import run_cli
from _foreign_models import train_numpy_mlp, write_nchw_onnx
from digitkit.model.conventions import (
    LOGITS,
    MNIST_MEAN,
    MNIST_STD,
    NO_FLAGS,
    ConventionFlags,
    InputConvention,
)
from digitkit.model.detect import (
    DECLARED,
    DEFAULT_DETECTION_IMAGES,
    ConventionError,
    detect_convention,
    predict_under,
)
from digitkit.model.fitting import (
    MIN_PER_CLASS,
    FittedDetection,
    constants_text,
    cross_entropy,
    halves_apart,
    nelder_mead,
)
from digitkit.model.resolve import resolve_convention

pytestmark = pytest.mark.usefixtures("private_cache")

#: Constants no preset has (the issue's example).
TRUE_MEAN, TRUE_STD = 0.2, 0.45
#: How close the fit must land. The mean fixes the labels and is pinned by them; the std
#: mostly scales the logits, so the cross-entropy fixes it only through the model's
#: confidence on unseen images (see fitting's docstring): looser.
MEAN_TOL = 0.02
STD_RTOL = 0.15
#: Trained on all 60,000 MNIST training images for 100 steps of 600 (one epoch): about as
#: confident on unseen images as on its training images, so its cross-entropy is lowest
#: near its training std. Seconds in numpy.
STEPS = 100


def _train(mnist_dir, mean, std, tmp_path_factory, name):
    from digitkit.data import read_idx

    x, _ = read_idx(mnist_dir / "train-images-idx3-ubyte.gz")
    y, _ = read_idx(mnist_dir / "train-labels-idx1-ubyte.gz")
    weights = train_numpy_mlp((x.astype(np.float32) / 255 - mean) / std, y, steps=STEPS)
    path = write_nchw_onnx(tmp_path_factory.mktemp("fit") / f"{name}.onnx", weights)
    return path, weights


def _own_labels(weights, pixels, mean, std):
    """The model's own labels under its real preprocessing, computed in numpy."""
    w1, b1, w2, b2 = weights
    v = ((pixels.reshape(len(pixels), -1) / 255 - mean) / std).astype(np.float32)
    return (np.maximum(v @ w1 + b1, 0) @ w2 + b2).argmax(1)


@pytest.fixture(scope="module")
def off_preset(mnist_dir, tmp_path_factory):
    return _train(mnist_dir, TRUE_MEAN, TRUE_STD, tmp_path_factory, "off_preset")


@pytest.fixture(scope="module")
def on_preset(mnist_dir, tmp_path_factory):
    return _train(mnist_dir, MNIST_MEAN, MNIST_STD, tmp_path_factory, "on_preset")


@pytest.fixture(scope="module")
def held_out(mnist_test):
    """The MNIST test images detection and the fit do NOT see, with their labels."""
    x, y = mnist_test
    seen = np.zeros(len(x), bool)
    seen[(np.arange(DEFAULT_DETECTION_IMAGES) * len(x)) // DEFAULT_DETECTION_IMAGES] = True
    return x[~seen].astype(np.float32), y[~seen]


def _resolve(path, mnist_test, flags=NO_FLAGS):
    from digitkit.predictors.adapted import open_source

    source = open_source(path)
    return source, resolve_convention(source, *mnist_test, flags)


def test_fitted_constants_land_near_the_truth_and_the_copy_gives_the_models_labels(
        off_preset, mnist_test, held_out):
    import onnx

    from digitkit.model.adapters import onnx_convention
    from digitkit.predictors.adapted import adapted_onnx
    from digitkit.predictors.ort import OnnxPredictor

    path, weights = off_preset
    source, d = _resolve(path, mnist_test)
    assert isinstance(d, FittedDetection) and d.fit.used, "\n".join([d.summary(), *d.table()])
    c = d.convention
    assert c.scale == "standardized" and c.outputs == LOGITS and c.layout == "NCHW"
    assert abs(c.mean - TRUE_MEAN) <= MEAN_TOL, d.summary()
    assert abs(c.std - TRUE_STD) <= STD_RTOL * TRUE_STD, d.summary()
    preset = d.fit.preset.convention
    assert (preset.mean, preset.std) == (MNIST_MEAN, MNIST_STD)  # the nearest preset
    # Constants as typed: at most 2 decimals here, and the line the issue asks for.
    assert c.mean == round(c.mean, 2) and c.std == round(c.std, 2)
    line = d.summary()
    assert line.startswith(f"fitted: {d.fit.fitted_text()} (logits: softmax added), ")
    assert f"nearest preset {preset.describe()}, " in line and d.fit.fitted.loss < \
        d.fit.preset.loss
    # The table: the fitted row beside every preset candidate.
    table = d.table()
    assert table[1].startswith(f"fitted {d.fit.fitted_text()} ") and len(table) == 2 + 12
    assert any(row.startswith(preset.describe() + " ") for row in table[2:])
    assert d.to_dict()["fit"]["used"] and d.to_dict()["convention"]["mean"] == c.mean

    # The adapted copy (ONNX adapter nodes) carries the fitted constants and, on images the
    # fit never saw, gives the model's own labels; under the nearest preset it does not.
    x, _ = held_out
    own = _own_labels(weights, x, TRUE_MEAN, TRUE_STD)
    copy = adapted_onnx(path, c)
    assert onnx_convention(onnx.load(str(copy))) == c
    fitted_agree = float(np.mean(OnnxPredictor(copy).predict(x).argmax(1) == own))
    preset_agree = float(np.mean(predict_under(source, preset, x).argmax(1) == own))
    assert fitted_agree >= 0.998, (fitted_agree, preset_agree)
    assert preset_agree <= 0.99, (fitted_agree, preset_agree)


FAR_MEAN, FAR_STD = 0.3, 0.15


@pytest.fixture(scope="module")
def far(mnist_dir, tmp_path_factory):
    return _train(mnist_dir, FAR_MEAN, FAR_STD, tmp_path_factory, "far")


def test_constants_far_from_every_preset_are_fitted_where_detection_refuses(
        far, mnist_test, held_out):
    """(x/255-0.3)/0.15: no preset makes it credible (78% under the nearest, below 80%), so
    detection alone refuses; the fit from the affine presets finds the constants."""
    far_mean, far_std = FAR_MEAN, FAR_STD
    path, weights = far
    source, d = _resolve(path, mnist_test)
    with pytest.raises(ConventionError, match="no input convention makes it a credible"):
        detect_convention(source, *mnist_test)
    assert isinstance(d, FittedDetection) and d.fit.used, "\n".join([d.summary(), *d.table()])
    assert abs(d.convention.mean - far_mean) <= MEAN_TOL, d.summary()
    assert abs(d.convention.std - far_std) <= STD_RTOL * far_std, d.summary()
    assert d.fit.fitted.credible and not d.fit.preset.credible
    x, _ = held_out
    own = _own_labels(weights, x, far_mean, far_std)
    assert np.mean(predict_under(source, d.convention, x).argmax(1) == own) >= 0.998


def test_a_model_trained_on_a_preset_keeps_it(on_preset, mnist_test):
    path, _ = on_preset
    _, d = _resolve(path, mnist_test)
    assert (d.convention.scale, d.convention.mean, d.convention.std) == (
        "standardized", MNIST_MEAN, MNIST_STD), "\n".join([d.summary(), *d.table()])
    assert isinstance(d, FittedDetection) and not d.fit.used
    assert d.summary().startswith(f"detected: {d.convention.describe()} ")
    assert "preset kept: " in d.summary()
    assert "not lower by 3%" in d.summary() or "the model's confidence, not its answers" in \
        d.summary()
    assert d.table()[1].startswith("fitted ") and "(not used)" in d.table()[1]
    assert not d.to_dict()["fit"]["used"]


def test_the_fit_is_paid_once_then_read_from_the_cache(off_preset, mnist_dir, tmp_path):
    """infer's path (predictors.runnable): the first start fits and writes the adapted copy;
    the next start reads the fit back (no passes) and runs the same copy."""
    from digitkit.data import cache_dir
    from digitkit.model.fitting import CACHE_DIR
    from digitkit.predictors.runnable import runnable_model

    path, _ = off_preset
    first = runnable_model(path, data=mnist_dir)
    assert first.detection.fit.used and not first.detection.fit.cached
    assert first.detection.fit.passes > 20
    assert len(list((cache_dir() / CACHE_DIR).glob("*.json"))) == 1
    again = runnable_model(path, data=mnist_dir)
    assert again.detection.fit.cached and again.detection.fit.passes == 0
    assert again.convention == first.convention and again.path == first.path
    assert "fitted: " in again.line() and again.line() == first.line()


def test_too_few_images_per_class_fit_nothing_and_say_so(off_preset, mnist_test):
    x, y = mnist_test
    few = np.concatenate([np.flatnonzero(y == k)[:2 * MIN_PER_CLASS - 1 if k == 3 else 40]
                          for k in range(10)])
    _, d = _resolve(off_preset[0], (x[few], y[few]))
    assert isinstance(d, FittedDetection) and d.fit.fitted is None and not d.fit.used
    assert (d.convention.mean, d.convention.std) == (MNIST_MEAN, MNIST_STD)
    assert (f"not fitted (class '3' has {2 * MIN_PER_CLASS - 1} calibration images, a fit "
            f"needs {2 * MIN_PER_CLASS}") in d.summary()
    assert "--input-mean" in d.summary() and "--input-std" in d.summary()


def test_halves_that_disagree_are_refused(off_preset, mnist_test, monkeypatch):
    """The rule at work: here the two 1,000-image halves' means differ by ~0.01-0.03, so a
    rule allowing no difference at all refuses, in one line naming the flags."""
    import digitkit.model.fitting as fitting

    monkeypatch.setattr(fitting, "STABLE_MEAN", 1e-9)
    with pytest.raises(ConventionError) as err:
        _resolve(off_preset[0], mnist_test)
    text = str(err.value)
    assert "\n" not in text and "but not stably: the two halves of the 2,000" in text
    assert "--input-mean" in text and "--input-std" in text


def test_halves_whose_labels_differ_beyond_the_fits_effect_are_refused(far, mnist_test,
                                                                       monkeypatch):
    """The label rule at work: this model's halves (82% accurate) label ~1% of the 2,000
    images differently, the fit relabels far more; a rule allowing a hundredth of the fit's
    effect refuses, in one line naming the flags."""
    import digitkit.model.fitting as fitting

    monkeypatch.setattr(fitting, "STABLE_LABELS", 0.01)
    with pytest.raises(ConventionError) as err:
        _resolve(far[0], mnist_test)
    text = str(err.value)
    assert "\n" not in text and "but not stably: the two halves of the 2,000" in text
    assert "differently (the means may differ by 0.05, the labels on at most 0.01 of the " \
        in text
    assert "--input-mean" in text and "--input-std" in text


def test_declared_constants_skip_detection_and_the_fit(off_preset, mnist_test):
    flags = ConventionFlags(scale="standardized", mean=TRUE_MEAN, std=TRUE_STD)
    _, d = _resolve(off_preset[0], mnist_test, flags)
    assert d.how == DECLARED and not isinstance(d, FittedDetection)
    assert (d.convention.mean, d.convention.std) == (TRUE_MEAN, TRUE_STD)


def test_export_puts_the_fitted_constants_in_every_copy(off_preset, mnist_dir, tmp_path):
    import onnx

    from digitkit.model.adapters import CONVENTION_KEY

    out = tmp_path / "export"
    result = run_cli("export", off_preset[0], "--out", out, "--data", mnist_dir, "--images",
                     "100", "--quantize", "int8")
    assert result.exit_code == 0, result.output
    assert "fitted: (x/255-" in result.output and "nearest preset (x/255-0.1307)/0.3081" \
        in result.output
    manifest = json.loads((out / "export.json").read_text())
    recorded = manifest["source"]["convention"]
    conv = InputConvention.from_dict(recorded)
    assert abs(conv.mean - TRUE_MEAN) <= MEAN_TOL
    for name in ("model.onnx", "model.int8.onnx"):
        props = {p.key: p.value for p in onnx.load(str(out / name)).metadata_props}
        assert InputConvention.from_dict(json.loads(props[CONVENTION_KEY])) == conv, name


# ------------------------------------------------------------------------ the pieces


def test_nelder_mead_finds_a_valley_floor():
    def f(v):
        return (v[0] - 0.2) ** 2 + 10 * (v[1] - math.log(0.45)) ** 2

    x, value, evals = nelder_mead(f, (0.1307, math.log(0.3081)), (0.05, 0.25), 200, 1e-6)
    assert abs(x[0] - 0.2) < 1e-3 and abs(math.exp(x[1]) - 0.45) < 1e-3 and value < 1e-6
    assert evals <= 200


def test_halves_apart_constants_text_and_cross_entropy():
    assert halves_apart(((0.2,), (0.45,)), ((0.25,), (0.5,))) == pytest.approx(
        (0.05, 0.5 / 0.45))
    assert halves_apart(((0.49, 0.48, 0.45), (0.25, 0.24, 0.26)),
                        ((0.49, 0.50, 0.45), (0.25, 0.24, 0.13))) == pytest.approx((0.02, 2.0))
    assert constants_text((0.2,), (0.45,), (2, 2)) == "(x/255-0.20)/0.45"
    assert constants_text((-0.0,), (1.4,), (1, 1)) == "(x/255-0.0)/1.4"
    assert constants_text((0.4914, 0.4822, 0.4465), (0.247, 0.2435, 0.2616), (2, 2)) == \
        "(x/255-(0.49,0.48,0.45))/(0.25,0.24,0.26)"
    z = np.array([[2.0, 0.0], [0.0, 50.0]])
    ce = cross_entropy(z, np.array([0, 0]))
    assert ce[0] == pytest.approx(math.log(1 + math.exp(-2)))
    assert ce[1] == pytest.approx(-math.log(1e-7))  # clipped as detection's loss is


def test_calibration_halves_hold_every_class():
    from digitkit.model.fitting import _halves

    y = np.repeat(np.arange(5), 7)
    a, b = _halves(y)
    assert len(set(a) | set(b)) == len(y) and not set(a) & set(b)
    assert all(abs(np.sum(y[a] == k) - np.sum(y[b] == k)) <= 1 for k in range(5))
