"""`digitkit export` of general image classifiers made elsewhere (issue 18): the convention
is resolved on the --calibration folder by the model layer (detection), every copy wraps the
source in the adapter, carries the contract, needs no flags afterwards, and matches the
source run under its own convention (atol + rtol). A Keras "tf"-mode model, a torch-style
NCHW model with ImageNet mean/std, and a foreign NCHW ONNX with logits (the `general_zoo`)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from _cli import run_cli
from _export_copies import COPY_FILES, copies, predict, read_back

pytest.importorskip("tensorflow")

CLASSES = ("astronaut", "brick", "cat", "coffee", "coins")


@pytest.fixture(scope="module", params=["tf", "torch-nchw", "nchw-onnx"])
def foreign_export(request, general_zoo, tmp_path_factory):
    name = request.param
    out = tmp_path_factory.mktemp(name) / "export"
    result = run_cli("export", general_zoo.path(name), "--calibration", general_zoo.image_set,
                     "--quantize", "int8", "--max-accuracy-drop", "5", "--out", out)
    return name, out, result


def test_the_convention_is_detected_on_the_calibration_folder(foreign_export, general_zoo):
    from digitkit.model.contract import contract_from_record
    from digitkit.model.conventions import InputConvention

    name, out, result = foreign_export
    assert result.exit_code == 0, result.output
    assert "detected: " in result.output
    assert "calibration images in" in result.output
    assert "MNIST" not in result.output
    manifest = json.loads((out / "export.json").read_text())
    assert manifest["status"] == "passed"
    contract = contract_from_record(manifest["model"])
    assert contract.class_names == CLASSES and contract.pixels_shape == (24, 24, 3)
    recorded = InputConvention.from_dict(manifest["source"]["convention"], contract)
    assert recorded.to_dict() == general_zoo.convention(name).to_dict()
    assert manifest["source"]["detection"]["how"] == "detected"
    assert manifest["calibration"]["images"] == 200
    expected = {"onnx", "onnx-int8"} if name.endswith("onnx") else set(COPY_FILES)
    assert {k for k in manifest["artifacts"] if k in COPY_FILES} == expected
    for k in expected:
        assert manifest["artifacts"][k]["status"] == "passed", manifest["artifacts"][k]
        cases = [c["case"] for c in manifest["artifacts"][k]["validation"]["cases"]]
        assert cases[:2] == ["calibration[:200]", "random_pixels[seed=0]"]


def test_every_copy_reads_back_and_matches_the_source_under_its_convention(
        foreign_export, general_zoo):
    from digitkit.model.detect import predict_under
    from digitkit.predictors.adapted import load_source

    name, out, result = foreign_export
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "export.json").read_text())
    source = load_source(general_zoo.path(name), calibration=general_zoo.image_set).source
    convention = general_zoo.convention(name)
    x = np.concatenate([general_zoo.pixels(name)[::7],
                        np.random.default_rng(3).uniform(0, 255, (5, 24, 24, 3))]
                       ).astype(np.float32)
    reference = predict_under(source, convention, x)
    for k, path in copies(out).items():
        if k not in manifest["artifacts"]:
            continue
        contract = read_back(path)
        assert contract.class_names == CLASSES and contract.pixels_shape == (24, 24, 3), k
        got = predict(path, x)
        if k == "onnx-int8":
            assert np.mean(got.argmax(1) == reference.argmax(1)) >= 0.8
        else:
            np.testing.assert_allclose(got, reference, atol=1e-5, rtol=1e-5, err_msg=k)


def test_validate_export_dir_rechecks_it_under_the_recorded_convention(foreign_export):
    """The copies re-checked against the source copy run under the convention export.json
    records (no detection), on the calibration folder it names."""
    from digitkit.export import validate_export_dir

    name, out, result = foreign_export
    assert result.exit_code == 0, result.output
    results = validate_export_dir(out, n_images=40)
    assert results and all(r.ok for r in results), [r.to_dict() for r in results if not r.ok]
    assert results[0].cases[0].case == "calibration[:40]"
