"""`digitkit infer` on digit classifiers made elsewhere (issue 10): never run silently on a
convention they were not trained for. The convention is detected once (said once on stderr)
or declared, and the adapted copy is what every engine and worker runs; digitkit's own models
run as before, with no detection and no data."""

from __future__ import annotations

import csv
import os

import numpy as np
import pytest

from _cli import run_cli
from _foreign_models import FIXTURES
from _infer_folders import FIRST_TEST_INDEX, class_folders
from digitkit.model.conventions import InputConvention
from digitkit.model.detect import predict_under


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DIGITKIT_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def folder(png_test_dir, tmp_path_factory):
    """10 real test PNGs per class, in class folders."""
    return class_folders(png_test_dir, tmp_path_factory.mktemp("pngs") / "test", per_class=10)


def _rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _own_answers(rows, mnist_test, source, convention):
    """The source model's own probabilities, under its own convention, on the IDX arrays of
    the same images: an answer the inference pipeline cannot influence."""
    idx = [int(os.path.basename(r["path"])[:-4]) - FIRST_TEST_INDEX for r in rows]
    return predict_under(source, convention, mnist_test[0][idx].astype(np.float32))


def test_nchw_onnx_runs_through_its_adapter(zoo, folder, tmp_path, mnist_dir, mnist_test):
    """Story 4: the NCHW ONNX trained on x/255 (issue: run on raw pixels without a word,
    confidences all 1.000000). Its worker processes run the adapted copy."""
    name = "nchw-onnx-unit"
    out = tmp_path / "out.csv"
    r = run_cli("infer", zoo.path(name), folder, "-o", out, "--data", mnist_dir,
                "--workers", "1")
    assert r.exit_code == 0, r.output
    said = [ln for ln in r.output.splitlines() if "detected:" in ln]
    assert len(said) == 1 and said[0].startswith("digitkit: nchw_unit.onnx: detected: /255 ")
    assert "running it through digitkit's adapter" in said[0]
    rows = _rows(out)
    own = _own_answers(rows, mnist_test, zoo.source(name), FIXTURES[name][1])
    assert [int(x["label"]) for x in rows] == own.argmax(1).tolist()
    conf = np.array([float(x["confidence"]) for x in rows])
    np.testing.assert_allclose(conf, own.max(1), atol=2e-6)  # printed with 6 decimals
    assert conf.min() < 0.99  # not saturated by 0..255 pixels


def test_declared_flags_override_detection(zoo, folder, tmp_path, mnist_dir, mnist_test):
    name = "nchw-onnx-unit"
    out = tmp_path / "raw.csv"
    r = run_cli("infer", zoo.path(name), folder, "-o", out, "--data", mnist_dir,
                "--workers", "0", "--input-scale", "raw")
    assert r.exit_code == 0, r.output
    assert "detected" not in r.output and "declared: raw 0..255 (logits: softmax " in r.output
    rows = _rows(out)
    declared = InputConvention(layout="NCHW", scale="raw", outputs="logits")
    own = _own_answers(rows, mnist_test, zoo.source(name), declared)
    assert [int(x["label"]) for x in rows] == own.argmax(1).tolist()


def test_keras_notebook_runs_on_tensorflow_adapted(zoo, folder, tmp_path, mnist_dir,
                                                   mnist_test):
    name = "notebook-axis1"
    out = tmp_path / "nb.csv"
    r = run_cli("infer", zoo.path(name), folder, "-o", out, "--data", mnist_dir,
                "--workers", "0")
    assert r.exit_code == 0, r.output
    assert "detected: keras.utils.normalize(axis=1), " in r.output
    rows = _rows(out)
    own = _own_answers(rows, mnist_test, zoo.source(name), FIXTURES[name][1])
    assert [int(x["label"]) for x in rows] == own.argmax(1).tolist()


def test_contract_models_need_no_detection_and_no_data(linear_onnx, folder, tmp_path):
    r = run_cli("infer", linear_onnx, folder / "3", "-o", tmp_path / "o.csv", "--workers", "0",
                "--data", tmp_path / "no-such-data")
    assert r.exit_code == 0, r.output
    assert "detected" not in r.output and "adapter" not in r.output


@pytest.mark.parametrize("name, message", [
    ("untrained", "no input convention makes it a credible digit classifier"),
    ("five-classes", "its input convention cannot be told"),
])
def test_models_that_are_no_digit_classifiers_are_refused(zoo, folder, tmp_path, mnist_dir,
                                                          name, message):
    out = tmp_path / "o.csv"
    r = run_cli("infer", zoo.path(name), folder / "3", "-o", out, "--data", mnist_dir)
    assert r.exit_code == 1
    line = r.output.strip()
    assert "\n" not in line and line.startswith("digitkit: error: ") and message in line
    assert not out.exists()


def test_bad_flags_are_usage_errors(zoo, folder, tmp_path):
    r = run_cli("infer", zoo.path("nchw-onnx-unit"), folder / "3", "--input-layout", "NHWC",
                "--input-scale", "unit")
    assert r.exit_code == 2 and "does not fit the model's input shape" in r.output
    r = run_cli("infer", zoo.path("nchw-onnx-unit"), folder / "3", "--l2-axis", "1")
    assert r.exit_code == 2 and "--l2-axis needs --input-scale l2" in r.output


def test_too_close_to_call_is_refused_in_one_line(seed_mlp_h5, folder, tmp_path, mnist_dir):
    """A flag that only narrows the candidates (--ink) makes even digitkit's own model a
    question for detection; the seed MLP normalises inside, so raw and L2 inputs give it
    nearly the same outputs: refused rather than guessed, naming the flags."""
    out = tmp_path / "o.csv"
    r = run_cli("infer", seed_mlp_h5, folder / "3", "-o", out, "--data", mnist_dir,
                "--ink", "white-on-black")
    assert r.exit_code == 1
    line = r.output.strip()
    assert "\n" not in line and "input convention too close to call" in line
    assert "--input-scale" in line and not out.exists()


def test_the_library_adapts_too(zoo, folder, tmp_path, mnist_dir, mnist_test):
    """`run_infer` itself resolves the convention: a program calling the library with a
    foreign model gets the same adapted rows as the CLI, and hears what was detected."""
    from digitkit.infer import InferSpec, run_infer

    name = "nchw-onnx-unit"
    said = []
    out = tmp_path / "lib.csv"
    spec = InferSpec(zoo.path(name), workers=0, data=mnist_dir)
    summary = run_infer(spec, [folder], out, warn=said.append)
    assert summary.failed == 0
    assert sum("detected: /255" in line for line in said) == 1
    rows = _rows(out)
    own = _own_answers(rows, mnist_test, zoo.source(name), FIXTURES[name][1])
    assert [int(x["label"]) for x in rows] == own.argmax(1).tolist()


def test_resume_under_another_convention_is_refused(zoo, folder, tmp_path, mnist_dir):
    """Issue 19: a run under the detected convention, resumed with --input-scale raw, gave
    rows of both conventions and one blended accuracy. The record names the convention."""
    name = "nchw-onnx-unit"
    out = tmp_path / "out.csv"
    r = run_cli("infer", zoo.path(name), folder / "3", "-o", out, "--data", mnist_dir,
                "--workers", "0", "-q")
    assert r.exit_code == 0, r.output
    before = out.read_bytes()
    r = run_cli("infer", zoo.path(name), folder, "-o", out, "--data", mnist_dir,
                "--workers", "0", "-q", "--resume", "--input-scale", "raw")
    assert r.exit_code == 1, r.output
    line = r.output.strip().splitlines()[-1]
    assert f"{out}: cannot resume: made with input convention " in line and "raw" in line
    assert out.read_bytes() == before
    r = run_cli("infer", zoo.path(name), folder, "-o", out, "--data", mnist_dir,
                "--workers", "0", "-q", "--resume")
    assert r.exit_code == 0 and len(_rows(out)) == 100, r.output
