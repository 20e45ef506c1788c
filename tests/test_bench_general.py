"""`digitkit bench` and `view` on a general image classifier (issue 18): the input shape from
the model's contract, accuracy on a --calibration folder, the end-to-end pass through the
model's own pixel pipeline; `view` names its classes, input size and policy. The model is the
TF-free ONNX linear classifier of tests/_general_models.py, fitted on the `image_set` photos.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from _cli import run_cli
from _general_models import fit_pixel_linear, predict_pixels, write_pixel_onnx
from digitkit.images.labelled import load_labelled
from digitkit.images.pixels import PolicyDecoder
from digitkit.model.contract import image_contract

CLASSES = ("astronaut", "brick", "cat", "coffee", "coins")
QUICK = ["--runtimes", "onnxruntime", "--batch-sizes", "1,8", "--iterations", "2",
         "--warmup", "0", "--threads", "1"]


@pytest.fixture(scope="module")
def model(image_set, tmp_path_factory):
    contract = image_contract(24, 24, 3, CLASSES)
    w, b = fit_pixel_linear(image_set, contract, per_class=24)
    return contract, write_pixel_onnx(tmp_path_factory.mktemp("m") / "photos.onnx",
                                      contract, w, b), w, b


def test_bench_times_the_contracts_shape_and_scores_the_calibration_folder(model, image_set,
                                                                           tmp_path):
    contract, path, w, b = model
    out = tmp_path / "b.json"
    r = run_cli("bench", path, *QUICK, "--calibration", image_set, "--images",
                image_set / "cat", "--json", out)
    assert r.exit_code == 0, r.output
    rec = json.loads(out.read_text())
    assert "--calibration" in rec["settings"]["inputs"]
    assert rec["model_contract"]["class_labels"] == list(CLASSES)
    res = rec["models"][0]["results"]["onnxruntime"]
    s = load_labelled(image_set, PolicyDecoder(contract.pixel_policy), CLASSES)
    want = float(np.mean(predict_pixels(w, b, s.pixels).argmax(1) == s.labels))
    assert res["check"]["accuracy"] == pytest.approx(want, abs=1e-9)
    assert want > 0.5
    e2e = res["end_to_end"]
    assert [e["batch"] for e in e2e] == [1, 8] and all(e["images"] > 0 for e in e2e)


def test_bench_without_calibration_times_random_pixels_and_states_it(model, tmp_path):
    _, path, *_ = model
    out = tmp_path / "b.json"
    r = run_cli("bench", path, *QUICK, "--json", out)
    assert r.exit_code == 0, r.output
    rec = json.loads(out.read_text())
    assert "random pixel images (N,24,24,3)" in rec["settings"]["inputs"]
    assert rec["models"][0]["results"]["onnxruntime"]["check"].get("accuracy") is None


def test_view_names_the_classes_input_and_policy(model):
    from digitkit.view import convention_note

    _, path, *_ = model
    note = convention_note(path)
    assert "5 classes (astronaut, brick, cat, coffee, coins)" in note
    assert "(N,24,24,3)" in note and "squash to 24x24" in note
